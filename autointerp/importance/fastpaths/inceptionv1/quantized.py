"""Int8 tier: a convolution's output change in exact integer arithmetic, with sound error bounds.

Used by the InceptionV1 ``mixed5a`` path (:mod:`.path`) for the pairs its
cheap bounds leave undecided, before the float32 convolutions. For a pair, the ``mixed5b`` 3×3 (or
5×5) branch output is ``relu(r + Δr)`` pooled over positions, where ``r`` is the image's baseline
pre-activation and ``Δr = K * Δq`` the convolution of the (exactly known) bottleneck change ``Δq``.

**Quantisation.** ``Δq = s_p·Q + lo`` with one scale ``s_p = max|Δq|/127`` per pair and integers
``|Q| <= 127``; ``K = s_o·Kq + Kl`` with one scale per output channel. ``Q * Kq`` is an int8 matrix
product with int32 accumulation (:func:`torch._int_mm`): exact, and faster than float32 on CPUs
with VNNI. ``Δr̂ = s_p·s_o·(Q * Kq)`` then differs from ``Δr`` by ``Kl * Δq + (s_o·Kq) * lo``, so

* per element: ``|Δr - Δr̂| <= ε = ||Kl_o||·||Δq patch|| + ||s_o·Kq_o||·||lo patch||`` (Cauchy–Schwarz
  over the k×k×C input patch);
* for any direction ``v`` over output channels, the linear part ``lin = mean_pos([r > 0]·Δr)`` obeys
  ``|v·(lin - lin̂)| <= ||v ⊙ [r > 0]||·(||Kl||·||Δq|| + ||s_o·Kq||·||lo||) / HW`` (operator norms of the
  zero-padded convolutions, :func:`~autointerp.importance.lipschitz.conv_operator_norm`).

**Decomposition.** ``relu(r + Δr) - relu(r) = [r > 0]·Δr + E`` with ``0 <= E <= max(0, |Δr| - |r|)``
(ReLU is convex; ``E`` is nonzero only where the sign flips). So the pooled change is ``lin + Ē`` with
``0 <= Ē <= rem = mean_pos max(0, |Δr̂| + ε - |r|)``. A logit difference ``d_j = z_t - z_j`` then moves
by ``v_j·lin̂ ± (linear error + |v_j|·rem)`` with ``v_j = W_t - W_j``, which decides nearly every pair
(the rest go to the float32 convolutions). Float32 rounding in the scaling and sums is covered by a
``1e-5`` relative term.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autointerp.importance.fastpaths.inceptionv1.compiled import compiled_or_eager
from autointerp.importance.fastpaths.inceptionv1.speed import speedup
from autointerp.importance.lipschitz import conv_operator_norm
from autointerp.importance.rounding import SAFETY as _SAFETY

_REL = 1e-5  # float32 rounding of scaling, conversions and 49-term sums (relative)


@functools.lru_cache(maxsize=1)
def int8_matmul_is_exact() -> bool:
    """True when :func:`torch._int_mm` exists here and accumulates exactly in int32 (checked once on
    extreme and random operands, including the 1,728-term sums of the 3×3 branch)."""
    if not hasattr(torch, "_int_mm"):
        return False
    gen = torch.Generator().manual_seed(0)
    try:
        for a, b in (
            (torch.full((49, 1728), 127, dtype=torch.int8), torch.full((1728, 16), -127, dtype=torch.int8)),
            (
                torch.randint(-127, 128, (98, 1200), generator=gen, dtype=torch.int8),
                torch.randint(-127, 128, (1200, 32), generator=gen, dtype=torch.int8),
            ),
        ):
            got = torch._int_mm(a, b)
            if got.dtype != torch.int32 or not torch.equal(got.long(), a.long() @ b.long()):
                return False
    except (RuntimeError, NotImplementedError):
        return False
    return True


#: the int8 tier replaces float32 convolutions at about half their cost when int8 products run about
#: 4x the float32 rate (AVX-512 VNNI); below this ratio it is not worth it
INT8_MIN_SPEEDUP = 2.0


@functools.lru_cache(maxsize=1)
def int8_matmul_is_fast() -> bool:
    """True when :func:`int8_matmul_is_exact` and an int8 product of the 3×3 branch's shape (patches of
    1,728 taps, 384 outputs) runs at least :data:`INT8_MIN_SPEEDUP` times the float32 rate here (timed
    once; :mod:`.speed`). CPUs without int8 dot-product instructions (e.g. AVX2
    only) run ``torch._int_mm`` as a slow reference loop."""
    if not int8_matmul_is_exact():
        return False
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (256, 1728), generator=gen, dtype=torch.int8)
    b = torch.randint(-127, 128, (1728, 384), generator=gen, dtype=torch.int8)
    af, bf = a.float(), b.float()
    return speedup(lambda: torch._int_mm(a, b), lambda: af @ bf) >= INT8_MIN_SPEEDUP


@dataclass
class BranchChange:
    """A branch's pooled change for a batch of pairs (see module doc), all per output channel."""

    lin: torch.Tensor  # (P, O) float32: pooled linear part mean_pos([r>0]·Δr̂)
    rem: torch.Tensor  # (P, O) float32: bound on the pooled ReLU-crossing remainder (+ rounding)
    lin_err: torch.Tensor  # (P,) float64: × ||v ⊙ [r>0]|| bounds the linear part's error along v


def window_sums(padded: torch.Tensor, k: int, h: int, w: int) -> torch.Tensor:
    """Sums of ``padded`` (P, h + k - 1, w + k - 1) over every k×k window: (P, h, w). With squared
    entries summed over channels, their square roots are the norms of a "same" convolution's patches."""
    return sum(padded[:, y : y + h, x : x + w] for y in range(k) for x in range(k))


def _quantize(
    dq_all: torch.Tensor,
    rows: torch.Tensor,
    sp: torch.Tensor,
    n_live: torch.Tensor,
    k: int,
    pad: int,
    positions: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Per-pair int8 quantisation of ``dq = dq_all[rows]`` (P, H, W, C), channels last, with scales
    ``s_p`` (P,): ``Q`` (P, H, W, C), zero in channels ``>= n_live`` (a 0-d tensor); the per-position
    k×k patch norms of ``dq`` and of the residual ``lo = dq - s_p·Q`` (P, H·W) in the order
    ``positions`` (flat indices), and their totals. Any ``s_p > 0`` keeps the bounds sound (``lo`` is
    exact, all of ``dq`` in the channels left out); ``max|dq| / 127`` uses the int8 range."""
    dq = dq_all[rows]
    p, h, w, c = dq.shape
    kept = torch.arange(c, device=dq.device) < n_live
    q = torch.where(kept, torch.round(dq / sp[:, None, None, None]).clamp(-127.0, 127.0), 0.0)
    lo = dq - q * sp[:, None, None, None]
    s_dq = F.pad(dq.square().sum(3), (pad, pad, pad, pad))
    s_lo = F.pad(lo.square().sum(3), (pad, pad, pad, pad))
    box_dq, box_lo = window_sums(s_dq, k, h, w), window_sums(s_lo, k, h, w)
    patch_dq, patch_lo = box_dq.sqrt().reshape(p, h * w)[:, positions], box_lo.sqrt().reshape(p, h * w)[:, positions]
    n_dq, n_lo = dq.square().sum((1, 2, 3)).sqrt(), lo.square().sum((1, 2, 3)).sqrt()
    return q.to(torch.int8), patch_dq, patch_lo, n_dq, n_lo


def image_blocks(b_idx: torch.Tensor, block: int) -> list[tuple[int, int]]:
    """``(start, end)`` ranges covering ``b_idx`` in order, each within one run of equal values (one
    image's pairs) and at most ``block`` long: a run of n splits into ``ceil(n / block)`` near-equal
    blocks."""
    if len(b_idx) == 0:
        return []
    cuts = (torch.nonzero(b_idx[1:] != b_idx[:-1])[:, 0] + 1).tolist()
    ranges: list[tuple[int, int]] = []
    for s, e in zip([0, *cuts], [*cuts, len(b_idx)], strict=True):
        n = -(-(e - s) // block)
        bounds = [s + (e - s) * i // n for i in range(n + 1)]
        ranges.extend(zip(bounds[:-1], bounds[1:], strict=True))
    return ranges


@dataclass(frozen=True)
class _PatchGroup:
    """Output positions ``y0 <= y < y1``, ``x0 <= x < x1`` whose k×k windows all lie inside the padded
    map's nonzero taps ``taps`` (a range of rows ``dy`` when ``major == "dy"``, of columns ``dx`` when
    ``"dx"``; the other offset runs over all k): their patch rows need only those taps' weights."""

    y0: int
    y1: int
    x0: int
    x1: int
    taps: tuple[int, int]
    major: str


def _patch_groups(k: int, pad: int, h: int, w: int) -> list[_PatchGroup]:
    """Interior positions with every tap, then each border row (its valid ``dy`` only) and each
    border column between them (its valid ``dx`` only): about 16 % (3×3) and 25 % (5×5) fewer
    multiply-adds on 7×7 maps than patches padded with zeros. "Same" convolutions, stride 1."""
    valid = lambda i, n: (max(0, pad - i), min(k, n + pad - i))  # noqa: E731 - offsets landing inside
    groups = [_PatchGroup(pad, h - pad, pad, w - pad, (0, k), "dy")] if h > 2 * pad and w > 2 * pad else []
    for y in [*range(min(pad, h)), *range(max(pad, h - pad), h)]:
        groups.append(_PatchGroup(y, y + 1, 0, w, valid(y, h), "dy"))
    for x in [*range(min(pad, w)), *range(max(pad, w - pad), w)]:
        if h > 2 * pad:
            groups.append(_PatchGroup(pad, h - pad, x, x + 1, valid(x, w), "dx"))
    return groups


def _group_patches(padded: torch.Tensor, g: _PatchGroup, k: int) -> torch.Tensor:
    """Rows (position, pair) of group ``g``'s patches of ``padded`` (P, H+2·pad, W+2·pad, C) int8, with the
    taps ordered as in :attr:`Int8Conv.weight_dy` / ``weight_dx`` (one strided copy)."""
    p, hp, wp, c = padded.shape
    n_taps = g.taps[1] - g.taps[0]
    sy, sx, sp = wp * c, c, hp * wp * c
    major, minor = (sy, sx) if g.major == "dy" else (sx, sy)  # strides of the restricted offset and the other
    offset = g.y0 * sy + g.x0 * sx + g.taps[0] * major
    view = padded.as_strided((g.y1 - g.y0, g.x1 - g.x0, p, n_taps, k, c), (sy, sx, sp, major, minor, 1), offset)
    return view.reshape(-1, n_taps * k * c)


def _pooled_change(
    acc: torch.Tensor,
    sp: torch.Tensor,
    s_out: torch.Tensor,
    b_idx: torch.Tensor,
    mask: torch.Tensor,
    r_abs: torch.Tensor,
    patch_dq: torch.Tensor,
    patch_lo: torch.Tensor,
    row_l: torch.Tensor,
    row_q: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lin`` and ``rem`` (P, O) from the int32 products ``acc`` (HW·P, O), rows (position, pair);
    ``mask`` / ``r_abs`` (B, HW, O) and ``patch_*`` (P, HW) in the same position order (any dtypes:
    e.g. uint8 and a bfloat16 lower bound of ``|r|``, which keeps ``rem`` an upper bound)."""
    p, hw = patch_dq.shape
    dr = acc.float().reshape(hw, p, -1) * (sp[None, :, None] * s_out[None, None, :])
    a = dr.abs()
    # patch norms of dq and lo; lo's float rounding is covered by a 1e-6 share of dq's
    eps = row_l * patch_dq.T[:, :, None] + row_q * (patch_lo + 1e-6 * patch_dq).T[:, :, None] + _REL * a
    lin = (mask[b_idx].transpose(0, 1).to(dr.dtype) * dr).sum(0) / hw
    rem = (a + eps - r_abs[b_idx].transpose(0, 1).to(dr.dtype)).clamp_min(0.0).sum(0) / hw + _REL * a.sum(0) / hw
    return lin, rem


class Int8Conv:
    """One convolution of the tier (``conv`` with stride 1 and "same" zero padding ``padding``)."""

    def __init__(self, conv: nn.Conv2d, padding: int, spatial: tuple[int, int], compile: bool = False) -> None:
        w = conv.weight.detach().double()
        self.out_channels, self.k = w.shape[0], w.shape[2]
        self.pad = padding
        s = w.abs().amax((1, 2, 3)).clamp_min(1e-30) / 127.0
        s32 = s.float()
        wq = torch.round(w / s32.double()[:, None, None, None]).clamp(-127, 127)
        w_q = wq * s32.double()[:, None, None, None]  # exactly s_o·Kq (float32 scale × small integers)
        w_l = w - w_q
        self.scale = s32
        # Kq as (taps, output) matrices, taps ordered (dy, dx, c) and (dx, dy, c): each patch group's
        # taps are a contiguous block of rows of one of them
        kq = wq.to(torch.int8)
        self.weight_dy = kq.permute(2, 3, 1, 0).reshape(-1, self.out_channels).contiguous()
        self.weight_dx = kq.permute(3, 2, 1, 0).reshape(-1, self.out_channels).contiguous()
        h, w_ = spatial
        self.groups = _patch_groups(self.k, padding, h, w_)
        self._group_weights = self._weights_of_channels(torch.arange(w.shape[1]))
        #: flat output positions (y·W + x) in the order the tier works in (group by group)
        self.positions = torch.as_tensor(
            [y * w_ + x for g in self.groups for y in range(g.y0, g.y1) for x in range(g.x0, g.x1)], dtype=torch.long
        )
        assert sorted(self.positions.tolist()) == list(range(h * w_)), "patch groups must cover every position once"
        self.op_l = conv_operator_norm(w_l, spatial, (padding, padding)) * _SAFETY
        self.op_q = conv_operator_norm(w_q, spatial, (padding, padding)) * _SAFETY
        self.row_l = (torch.linalg.vector_norm(w_l.flatten(1), dim=1) * _SAFETY).float()
        self.row_q = (torch.linalg.vector_norm(w_q.flatten(1), dim=1) * _SAFETY).float()
        self._quantize = compiled_or_eager(_quantize, (0, 1, 2)) if compile else _quantize
        self._pooled = compiled_or_eager(_pooled_change, (0, 3, 4)) if compile else _pooled_change

    def baseline(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mask`` and ``r_abs`` for :meth:`change` from the baseline pre-activations ``r`` (B, O, H, W):
        ``[r > 0]`` as uint8 (compiled kernels read it about 2× faster than bool) and ``|r|`` as
        bfloat16 rounded down (``|r|·(1 - 2⁻⁷)``, then to nearest: below ``|r|``; a smaller ``|r|`` only
        enlarges the remainder bound), both (B, H·W, O) with positions in :attr:`positions` order."""
        r = r.flatten(2)[:, :, self.positions].transpose(1, 2)
        mask = (r > 0).to(torch.uint8).contiguous()
        return mask, (r.abs() * (1 - 2.0**-7)).to(torch.bfloat16).contiguous()

    def change(
        self,
        dq: torch.Tensor,
        b_idx: torch.Tensor,
        mask: torch.Tensor,
        r_abs: torch.Tensor,
        rows: torch.Tensor | None = None,
        amax: torch.Tensor | None = None,
        channels: tuple[torch.Tensor, torch.Tensor] | None = None,
        block: int = 128,
    ) -> BranchChange:
        """The branch's pooled change for pairs of images ``b_idx`` whose input (the bottleneck's ReLU
        output) changes by ``dq[rows]`` (``dq`` (N, H, W, C), channels last; ``rows`` defaults to all
        of ``dq``, in order; ``amax`` (N,) its largest magnitudes per row, computed when not given).

        ``mask`` / ``r_abs``: (B, H·W, O) ``[r > 0]`` and ``|r|`` (or a lower bound of it) of the
        batch's baseline pre-activations ``r``, positions in :attr:`positions` order (:meth:`baseline`).

        ``channels``: ``(order, n_live)``, (B, C) and (B,), when each image's ``dq`` channels are in
        its own order ``order`` (``dq[..., j]`` is the convolution's input channel ``order[b, j]``) with
        the channels that can change first: the products then use only the first ``n_live``, whose
        ``dq`` the quantisation keeps; the rest (nonzero where an ablation lifts a channel that is
        negative everywhere above zero: rare and small) joins the residual ``lo`` the bounds cover.
        About a fifth of the 3x3 branch's multiply-adds. Blocks then hold pairs of one image each.

        Works in blocks of at most ``block`` pairs, which keeps the patch matrix cache-resident (the
        default 128 was the fastest block size measured: docs/performance.md).
        """
        if rows is None:
            rows = torch.arange(len(b_idx))
        if amax is None:
            amax = dq.abs().amax((1, 2, 3))
        scale = amax[rows].clamp_min(1e-30) / 127.0
        if channels is None:
            ranges = [(s, min(s + block, len(b_idx))) for s in range(0, len(b_idx), block)]
        else:
            ranges = image_blocks(b_idx, block)
        every_channel = (torch.tensor(dq.shape[-1]), self._group_weights)
        weights: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}  # per image: n_live, group weights
        parts = []
        for s, e in ranges:
            n_live, group_weights = every_channel
            if channels is not None:
                image = int(b_idx[s])
                if image not in weights:
                    n = channels[1][image]
                    weights[image] = (n, self._weights_of_channels(channels[0][image, : int(n)]))
                n_live, group_weights = weights[image]
            parts.append(self._change_block(dq, rows[s:e], scale[s:e], b_idx[s:e], mask, r_abs, n_live, group_weights))
        if not parts:
            empty = torch.zeros(0, self.out_channels)
            return BranchChange(empty, empty.clone(), torch.zeros(0, dtype=torch.float64))
        return BranchChange(*(torch.cat(t) for t in zip(*((c.lin, c.rem, c.lin_err) for c in parts), strict=True)))

    def _change_block(
        self,
        dq: torch.Tensor,
        rows: torch.Tensor,
        sp: torch.Tensor,
        b_idx: torch.Tensor,
        mask: torch.Tensor,
        r_abs: torch.Tensor,
        n_live: torch.Tensor,
        group_weights: list[torch.Tensor],
    ) -> BranchChange:
        q, patch_dq, patch_lo, n_dq, n_lo = self._quantize(dq, rows, sp, n_live, self.k, self.pad, self.positions)
        acc = self._products(q[..., : int(n_live)], group_weights)
        lin, rem = self._pooled(acc, sp, self.scale, b_idx, mask, r_abs, patch_dq, patch_lo, self.row_l, self.row_q)
        n_dq = n_dq.double() * (1 + _REL)
        n_lo = n_lo.double() * (1 + _REL) + 1e-6 * n_dq
        lin_err = (self.op_l * n_dq + self.op_q * n_lo) / patch_dq.shape[1]
        return BranchChange(lin, rem, lin_err)

    def _weights_of_channels(self, channels: torch.Tensor) -> list[torch.Tensor]:
        """Each patch group's rows of ``Kq`` (taps of the group × ``channels``, O), contiguous: a block
        of rows of :attr:`weight_dy` / :attr:`weight_dx` restricted to ``channels`` (in that order)."""
        k, o = self.k, self.out_channels
        by_tap = {"dy": self.weight_dy.view(k * k, -1, o), "dx": self.weight_dx.view(k * k, -1, o)}
        by_tap = {major: m.index_select(1, channels) for major, m in by_tap.items()}
        return [by_tap[g.major][g.taps[0] * k : g.taps[1] * k].reshape(-1, o) for g in self.groups]

    def _products(self, q: torch.Tensor, group_weights: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``Q * Kq`` (H·W·P, O) int32, rows (position, pair) in :attr:`positions` order, from ``Q``
        (P, H, W, C) int8: one exact int8 product per patch group, each with only its nonzero taps.
        ``group_weights``: the groups' weights for ``Q``'s channels (:meth:`_weights_of_channels`;
        default all input channels in order)."""
        p, h, w, c = q.shape
        if c == 0:  # no channel kept (every bottleneck unit of the image negative everywhere)
            return torch.zeros(h * w * p, self.out_channels, dtype=torch.int32)
        pad = self.pad
        padded = q.new_zeros(p, h + 2 * pad, w + 2 * pad, c)
        padded[:, pad : pad + h, pad : pad + w] = q
        acc = torch.empty(h * w * p, self.out_channels, dtype=torch.int32)
        start = 0
        for g, weight in zip(self.groups, group_weights or self._group_weights, strict=True):
            end = start + (g.y1 - g.y0) * (g.x1 - g.x0) * p
            torch._int_mm(_group_patches(padded, g, self.k), weight, out=acc[start:end])
            start = end
        return acc
