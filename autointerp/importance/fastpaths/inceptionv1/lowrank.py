"""Rank-one tier: a convolution branch's pooled change from a rank-one fit of its input change.

Used by the InceptionV1 ``mixed5a`` path (:mod:`.path`) for the pairs its
cheap bounds leave open, before the int8 (or sparse) tier. Notation as in :mod:`.quantized`: the
branch output is ``relu(r + Δr)`` pooled over the ``HW`` positions, ``r`` the image's baseline
pre-activation, ``Δr = K * Δq`` the convolution of the exactly known bottleneck change ``Δq``
(H, W, C). Ablating one ``mixed5a`` channel changes the bottleneck pre-activations by ``w ⊗ δ`` (the
channel's weights times its spatial change ``δ``), so ``Δq = relu(p + w ⊗ δ) - relu(p)`` is ``w ⊗ δ``
on the entries that stay active, zero on those that stay inactive: close to rank one in (channels,
positions).

**Fit.** ``α_c = <Δq_c, δ> / ||δ||²`` (least squares per channel) splits ``Δq = α ⊗ δ + S``. The
first part's convolution is cheap and exact: ``K * (α ⊗ δ) = (Σ_c α_c K_c) * δ``, one product
``α @ K`` ((C) by (C, k²·O)) and a single-channel k×k convolution per output. So
``h = mean_pos(relu(r + K * (α ⊗ δ)) - relu(r))`` is known, and the true pooled change differs from
it by at most ``mean_pos |K * S|`` per output (ReLU is 1-Lipschitz), whose norm is at most
``||K * S||_F / √HW <= L·||S|| / √HW`` (``L`` the convolution's operator norm on zero-padded maps).
On the benchmark's open pairs ``||S||`` is about a third of ``||Δq||``, three times tighter than
the tier-2 bound ``L·||Δq|| / √HW``, with ``h`` exact rather than zero.

**Rounding** (float32, ``u = 2⁻²⁴``). ``α @ K`` sums ``C`` terms: within ``γ_C·||α||·||K[o, :, t]||``
per tap (Cauchy–Schwarz); the k² taps times ``δ``, the ReLUs, the 49-term sums and the scaling add at
most ``(k² + HW + 6)·u·(max|δ|·Σ_t |(α @ K)[t, o]| + mean_pos |r_o|)``. :data:`rounding` uses
``(C + k² + HW + 8)·u·1.01`` for all three terms; ``||S||²`` (9,408 float32 squares) is scaled up by
``1 + 2e-3``, far more than its rounding, plus ``1e-6`` of ``||Δq|| + ||α||·||δ||`` for the rounding
of ``S`` itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autointerp.importance.fastpaths.inceptionv1 import native as _native
from autointerp.importance.fastpaths.inceptionv1.bottleneck import BottleneckChange
from autointerp.importance.fastpaths.inceptionv1.compiled import compiled_or_eager
from autointerp.importance.lipschitz import conv_operator_norm
from autointerp.importance.rounding import SAFETY as _SAFETY
from autointerp.importance.rounding import U as _U


def _fit(dq_all: torch.Tensor, rows: torch.Tensor, delta_all: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """For the pairs ``rows`` of ``dq_all`` (N, H, W, C) and ``delta_all`` (N, H, W): ``α`` (P, C),
    ``||S||²`` (P,) (float32 sum), ``||α||``, ``max|δ|`` and ``||δ||`` (P,)."""
    dq, delta = dq_all[rows], delta_all[rows]
    dd = delta.square().sum((1, 2))
    alpha = (delta[..., None] * dq).sum((1, 2)) / dd.clamp_min(1e-30)[:, None]  # δ = 0 only where Δq = 0
    s = dq - alpha[:, None, None, :] * delta[..., None]
    norms = alpha.square().sum(1).sqrt(), delta.abs().amax((1, 2)), dd.sqrt()
    return alpha, s.square().sum((1, 2, 3)), *norms


def _pooled(
    taps: torch.Tensor,
    delta_all: torch.Tensor,
    rows: torch.Tensor,
    r: torch.Tensor,
    r_mean_abs: torch.Tensor,
    b_idx: torch.Tensor,
    alpha_norm: torch.Tensor,
    delta_max: torch.Tensor,
    kappa: torch.Tensor,
    rel: float,
    k: int,
    pad: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = mean_pos(relu(r + (α @ K) * δ) - relu(r))`` (P, O) and the norm of its rounding bound (P,).

    ``taps`` (P, k², O): ``α @ K`` per tap; ``delta_all[rows]`` (P, H, W); ``r`` (B, HW, O) channels
    last and ``r_mean_abs`` (B, O) ``mean_pos |r|``, indexed by ``b_idx``; ``kappa`` (O,)
    ``Σ_t ||K[o, :, t]||``."""
    delta = delta_all[rows]
    p = taps.shape[0]
    h, w = delta.shape[1:]
    padded = F.pad(delta, (pad, pad, pad, pad))
    shifted = torch.stack([padded[:, y : y + h, x : x + w] for y in range(k) for x in range(k)], 1)
    shifted = shifted.reshape(p, k * k, h * w)
    dr = taps[:, 0, None, :] * shifted[:, 0, :, None]
    for t in range(1, k * k):
        dr = dr + taps[:, t, None, :] * shifted[:, t, :, None]
    base = r[b_idx]
    pooled = (torch.relu(base + dr) - torch.relu(base)).sum(1) * (1.0 / (h * w))
    return pooled, _rounding_norm(taps.abs().sum(1), r_mean_abs[b_idx], alpha_norm, delta_max, kappa, rel)


def _rounding_norm(
    tap_abs: torch.Tensor,
    r_mean_abs: torch.Tensor,
    alpha_norm: torch.Tensor,
    delta_max: torch.Tensor,
    kappa: torch.Tensor,
    rel: float,
) -> torch.Tensor:
    """The norm (P,) over outputs of ``h``'s rounding bound (module doc, **Rounding**), from
    ``Σ_t |(α @ K)[t, o]|`` (P, O) and each pair's image's ``mean_pos |r|`` (P, O)."""
    err = rel * (delta_max[:, None] * (alpha_norm[:, None] * kappa[None, :] + tap_abs) + r_mean_abs)
    return err.square().sum(1).sqrt()


@dataclass
class RankOneChange:
    """A branch's pooled change for a batch of pairs (see module doc)."""

    h: torch.Tensor  # (P, O) float32: pooled change of the rank-one part, as computed
    radius: torch.Tensor  # (P,) float64: ||true pooled change - h|| is at most this


class RankOneConv:
    """One convolution of the tier (``conv`` with stride 1 and "same" zero padding ``padding``)."""

    def __init__(
        self,
        conv: nn.Conv2d,
        padding: int,
        spatial: tuple[int, int],
        compile: bool = False,
        op: float | None = None,
        block: int = 128,
        native: bool = True,
    ) -> None:
        """``op``: the convolution's operator norm on zero-padded maps, already times 1 + 1e-3, when
        the caller has it. ``block``: pairs per compiled call (keeps the (pairs, HW, O) work in
        cache). ``native``: the fit and the pooled change from the C loops of :mod:`.native` where
        they build, else from :func:`_fit` and :func:`_pooled`."""
        w = conv.weight.detach().float()
        self.out_channels, self.in_channels, self.k = w.shape[0], w.shape[1], w.shape[2]
        self.pad = padding
        self.hw = spatial[0] * spatial[1]
        self.block = block
        #: (C, k²·O): row c holds K[:, c] with taps (dy, dx) major, outputs minor
        self.taps = w.permute(1, 2, 3, 0).reshape(self.in_channels, -1).contiguous()
        tap_norms = torch.linalg.vector_norm(w.double(), dim=1).flatten(1)  # (O, k²): ||K[o, :, t]||
        self.kappa = (tap_norms.sum(1) * _SAFETY).float()
        if op is None:
            op = conv_operator_norm(conv.weight.detach(), spatial, (padding, padding)) * _SAFETY
        self.op = op
        self.rounding = (self.in_channels + self.k * self.k + self.hw + 8) * _U * 1.01
        self._fit = compiled_or_eager(_fit, (1,)) if compile else _fit
        self._pooled = compiled_or_eager(_pooled, (0,)) if compile else _pooled
        self.native = native and self.k <= 7 and 2 * padding == self.k - 1  # what the C loop handles

    def baseline(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``r`` (B, O, H, W) as :meth:`change` reads it: (B, HW, O) channels last, and
        ``mean_pos |r|`` (B, O)."""
        return r.flatten(2).transpose(1, 2).contiguous(), r.abs().mean((2, 3))

    def change(
        self,
        dq: torch.Tensor | BottleneckChange,
        delta: torch.Tensor,
        rows: torch.Tensor,
        b_idx: torch.Tensor,
        order: torch.Tensor,
        r: torch.Tensor,
        r_mean_abs: torch.Tensor,
        dq_sq: torch.Tensor,
    ) -> RankOneChange:
        """The pooled change for the pairs ``rows`` of ``dq`` (N, H, W, C) (channels last, each image's
        channels in its own order ``order`` (B, C): ``dq[..., j]`` is input channel ``order[b, j]``; or
        a :class:`BottleneckChange` of N pairs, formed here one pair at a time by the C loop)
        with the ablated channel's change ``delta`` (N, H, W); ``b_idx`` (P,) their images, ``r`` /
        ``r_mean_abs`` from :meth:`baseline`, ``dq_sq`` (N,) the float32 ``||Δq||²``."""
        if isinstance(dq, BottleneckChange) and dq.delta is not delta and not torch.equal(dq.delta, delta):
            raise ValueError("RankOneConv.change: the BottleneckChange was formed with another δ than delta")
        hs, radii = [], []
        for s in range(0, len(rows), self.block):
            sl = slice(s, s + self.block)
            rw, b = rows[sl], b_idx[sl]
            fit = None
            if self.native and isinstance(dq, BottleneckChange):
                fit = _native.rank_one_fit_pre(dq.pre, dq.w, delta, rw, order, b)
            elif self.native:
                fit = _native.rank_one_fit(dq, rw, delta, order, b)
            if fit is None:
                if isinstance(dq, BottleneckChange):  # this block's change, its rows in order
                    alpha, s_sq, alpha_norm, delta_max, delta_norm = self._fit(
                        dq.rows(rw), torch.arange(len(rw)), delta[rw]
                    )
                else:
                    alpha, s_sq, alpha_norm, delta_max, delta_norm = self._fit(dq, rw, delta)
                alpha = torch.empty_like(alpha).scatter_(1, order[b], alpha)  # the network's channel order
            else:  # the same from the C loop, α already in the network's order
                alpha, s_sq, alpha_norm, delta_max, delta_norm = fit
            taps = (alpha @ self.taps).reshape(len(rw), self.k * self.k, self.out_channels)
            sums = _native.rank_one_pooled(taps, delta, rw, r, b, self.k, self.pad) if self.native else None
            if sums is not None:  # the same sums as _pooled, from the C loop
                h, tap_abs = sums
                err = _rounding_norm(tap_abs, r_mean_abs[b], alpha_norm, delta_max, self.kappa, self.rounding)
            else:
                h, err = self._pooled(
                    taps, delta, rw, r, r_mean_abs, b, alpha_norm, delta_max, self.kappa, self.rounding, self.k,
                    self.pad,
                )  # fmt: skip
            s_norm = (s_sq.double() * (1 + 2e-3)).sqrt() + 1e-6 * (
                (dq_sq[rw].double() * (1 + 2e-3)).sqrt() + alpha_norm.double() * delta_norm.double() * (1 + 2e-3)
            )
            hs.append(h)
            radii.append((self.op * s_norm / math.sqrt(self.hw) + err.double()) * _SAFETY)
        if not hs:
            return RankOneChange(torch.zeros(0, self.out_channels), torch.zeros(0, dtype=torch.float64))
        return RankOneChange(torch.cat(hs), torch.cat(radii))
