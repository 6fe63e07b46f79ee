"""Folded-mask tier: a convolution branch's pooled change from one matrix-vector product per pair.

Used by the InceptionV1 ``mixed5a`` path (:mod:`autointerp.importance.inception`) where the int8
tier does not pay off (CPUs without int8 dot-product instructions), for pairs its cheap bounds
leave open, before the float32 convolutions. Notation as in :mod:`.quantized`: the branch output
is ``relu(r + Δr)`` pooled over the ``HW`` positions, ``r`` the image's baseline pre-activation
(O, H, W), ``Δr = K * Δq`` the convolution (weights ``K`` (O, C, k, k), "same" zero padding) of
the exactly known bottleneck change ``Δq`` (C, H, W).

**Linear part, exactly.** ``relu(r + Δr) - relu(r) = m·Δr + E`` with the image's mask
``m = [r > 0]`` and ``0 <= E <= max(0, |Δr| - |r|)``. Because ``m`` depends on the image only,

    Σ_pos m[o, pos]·Δr[o, pos] = Σ_{c, q} G[o, c, q]·Δq[c, q],
    G[o, c, q] = Σ_{dy, dx} K[o, c, dy, dx]·m[o, q_y - dy + pad, q_x - dx + pad]   (zero outside)

so one ``G`` per image (one convolution's worth of multiply-adds) turns every pair's linear part
into a product with the C·H·W entries of ``Δq``: 9× (3×3) and 25× (5×5) fewer multiply-adds than
the convolution, which reads every input k² times.

**Remainder, bounded.** For a direction ``v`` over outputs (``v_j = W_t - W_j``),
``-v⁻·Ē <= v·Ē <= v⁺·Ē`` (``Ē >= 0``; ``v⁺``, ``v⁻`` the positive and negative parts) and
``v⁺·Ē <= Σ_{o,pos} v⁺_o·E[o, pos] / HW`` (likewise ``v⁻``; ``v`` below stands for either).
Split the entries at a threshold ``τ`` of ``|r|``: on ``Z = {|r| < τ}``, ``E <= |Δr|`` and
Cauchy–Schwarz give ``sqrt(Σ_Z v_o²)·||Δr||``; elsewhere ``E <= max(0, |Δr| - |r|) <= Δr² / (4|r|)``
gives ``max_o (v_o / (4·min_{pos∉Z} |r[o, pos]|))·||Δr||²``. With ``||Δr|| <= L·||Δq||`` (the
convolution's operator norm on zero-padded maps) both are known per image and class before any
pair is seen; the smallest over a few thresholds (:data:`LEVELS`) is used. (Thresholds chosen per
class ``j`` decided ~8 % more pairs but cost more than they saved.)

**Rounding.** ``G`` sums k² products of float32 weights (``γ_{k²}`` relative to ``Σ|K|·m``) and the
product with ``Δq`` sums ``n = C·H·W`` terms (``γ_n``): the linear part's error is at most
``(γ_n + γ_{k²} + 2u)·||Ḡ_o||·||Δq||`` with ``||Ḡ_o||² = HW·Σ_c (Σ_t |K[o, c, t]|)²``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autointerp.importance.compiled import compiled_or_eager
from autointerp.importance.lipschitz import conv_operator_norm
from autointerp.importance.rounding import SAFETY as _SAFETY
from autointerp.importance.rounding import U as _U

#: shares of an image's entries |r| below each threshold τ tried for the remainder bound
LEVELS = (0.03, 0.1, 0.3)  # 0.01 never gave the smallest bound on the benchmark; 0.2 and 0.5 added 0.5 %


@dataclass
class FoldedImage:
    """One image's terms for :meth:`FoldedConv.bounds` (see module doc)."""

    g: torch.Tensor  # (O, H·W·C) float32: G with columns in the order of Δq (H, W, C) flattened
    # (2, levels, J) float32, rounded up, for v⁺ = max(v, 0) and v⁻ = max(-v, 0) (v·Ē is between
    # -v⁻·Ē and v⁺·Ē since Ē >= 0): sqrt(Σ_Z (v^±_o)²) and max_o v^±_o / (4·min_{pos∉Z} |r|) per threshold
    z_norm: torch.Tensor
    quad: torch.Tensor
    rounding: torch.Tensor  # (J,) float32, rounded up: Σ_o |v_o|·||Ḡ_o||


def remainder_bounds(
    z_norm: torch.Tensor,
    quad: torch.Tensor,
    rounding: torch.Tensor,
    dq_sq: torch.Tensor,
    op: float,
    rel: float,
    hw: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(below, above)`` (P, J) float64 for :meth:`FoldedConv.bounds` from an image's tables and the
    pairs' squared norms ``||Δq||²`` (P,) (float32 sums: relative rounding below 1e-3, covered)."""
    n = (dq_sq.double() * (1 + 2e-3)).sqrt()  # >= ||Δq||
    r = (n * op).float()[:, None, None, None]  # >= ||Δr|| (float32 rounding: far inside _SAFETY)
    remainder = (z_norm[None] * r + quad[None] * r.square()).amin(2).double()  # (P, 2, J)
    rounded = rounding.double()[None] * (n[:, None] * rel)
    scale = _SAFETY / hw
    return (remainder[:, 1] + rounded) * scale, (remainder[:, 0] + rounded) * scale


class FoldedConv:
    """One convolution of the tier (``conv`` with stride 1 and "same" zero padding ``padding``)."""

    def __init__(
        self, conv: nn.Conv2d, padding: int, spatial: tuple[int, int], compile: bool = False, op: float | None = None
    ) -> None:
        """``op``: the convolution's operator norm on zero-padded maps, already times 1 + 1e-3, when the
        caller has it (computed here otherwise)."""
        w = conv.weight.detach().float()
        self.out_channels, self.in_channels, self.k = w.shape[0], w.shape[1], w.shape[2]
        self.pad = padding
        self.spatial = spatial
        self.hw = spatial[0] * spatial[1]
        # flipped taps (O, k², C): per output channel, G = unfold(m)ᵀ @ these
        self.kflip_t = w.flip(2, 3).reshape(self.out_channels, self.in_channels, -1).transpose(1, 2).contiguous()
        if op is None:
            op = conv_operator_norm(conv.weight.detach(), spatial, (padding, padding)) * _SAFETY
        self.op = op
        abs_rows = w.double().abs().sum((2, 3))  # (O, C): Σ_t |K[o, c, t]| >= |G[o, c, q]|
        self.g_bound = (abs_rows.square().sum(1) * self.hw).sqrt()  # ||Ḡ_o||
        n = self.hw * self.in_channels
        self.rel = (n + self.k * self.k + 2) * _U * 1.01  # γ_n + γ_{k²} + 2u, rounded up
        self._bounds = compiled_or_eager(remainder_bounds, (3,)) if compile else remainder_bounds

    def image(self, r: torch.Tensor, order: torch.Tensor, v: torch.Tensor) -> FoldedImage:
        """Terms for one image: baseline pre-activations ``r`` (O, H, W), its ``Δq`` channel order
        ``order`` (C,) (``Δq[..., i]`` is input channel ``order[i]``) and the directions ``v`` (J, O)
        along which its pairs are decided (float32 sums here: relative rounding below 1e-4, covered)."""
        mask = (r > 0).float()
        unf = F.unfold(mask[:, None], self.k, padding=self.pad)  # (O, k², HW): m at q + offset
        # (O, HW, k²) @ (O, k², C) taps in Δq's channel order: G laid out as Δq (H, W, C) flattened
        g = torch.bmm(unf.transpose(1, 2), self.kflip_t.index_select(2, order)).reshape(self.out_channels, -1)
        absr = r.abs().reshape(self.out_channels, -1)  # (O, HW) float32
        flat = absr.flatten()
        v = v.float()
        sides = torch.stack((v.clamp_min(0), (-v).clamp_min(0)))  # (2, J, O): v⁺ and v⁻
        counts, quads = [], []
        for share in LEVELS:  # Z: the share of the image's entries with the smallest |r|
            tau = flat.kthvalue(min(int(share * len(flat)), len(flat) - 1) + 1).values.clamp_min(1e-30)
            in_z = absr < tau
            counts.append(in_z.sum(1).float())
            rmin = torch.where(in_z, torch.inf, absr).amin(1)  # >= tau > 0; inf: all positions in Z
            quads.append((sides * (0.25 / rmin)).amax(2))  # (2, J)
        z_norms = (sides.square() @ torch.stack(counts, 1)).sqrt().transpose(1, 2)  # (2, levels, J)
        up = 1 + 1e-4  # float32 sums of <= 384 non-negative terms: relative rounding below 384·2⁻²⁴
        return FoldedImage(g, z_norms * up, torch.stack(quads, 1) * up, (v.abs() @ self.g_bound.float()) * up)

    def linear(self, img: FoldedImage, dq: torch.Tensor) -> torch.Tensor:
        """``mean_pos(m·Δr)`` (P, O) float32 for pairs of one image, ``dq`` (P, H, W, C) in its order."""
        return (dq.reshape(len(dq), -1) @ img.g.T) / self.hw

    def bounds(self, img: FoldedImage, dq_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(below, above)`` (P, J) float64: ``v_j·(pooled change - linear)`` lies in
        ``[-below, above]`` (remainder plus the linear part's rounding) for pairs of the image whose
        ``Δq`` has the (float32-summed) squared norms ``dq_sq`` (P,)."""
        return self._bounds(img.z_norm, img.quad, img.rounding, dq_sq, self.op, self.rel, self.hw)
