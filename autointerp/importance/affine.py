"""Exact ablation for tails that are affine in the layer's activation (e.g. global average pool
followed by a linear classifier: ResNet ``layer4``, MobileNet ``Conv_1``).

For an affine tail ``z(a) = z(0) + J a``, ablating channel ``c`` changes the logits by
``J_c (m_c − a_c)``: a (H·W)-vector times a fixed (H·W, O) block of the Jacobian — no pass through
the tail at all. Affinity is *checked* on the run's own activations before this path is used, and
pairs whose true class lands within float rounding of the top-k boundary are re-evaluated by the
real tail, so counts stay exactly those of running the tail.
"""

from __future__ import annotations

import torch
from torch import nn

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import PairResult
from autointerp.importance.paths import TailPath
from autointerp.importance.topk import float_tolerance, topk_correct, true_logprob


def affine_jacobian(tail: nn.Module, example: torch.Tensor, rel_tol: float = 1e-4) -> torch.Tensor | None:
    """The tail's Jacobian as (C, H·W, O) when the tail is affine on ``example``'s scale, else None.

    The check compares ``tail(x + δ)`` with ``tail(x) + J δ`` for several images and random
    perturbations as large as the activations themselves.
    """
    x = example.float()
    if x.ndim != 4 or len(x) == 0:
        return None
    n, c, h, w = x.shape
    with torch.no_grad():
        base = tail(x[:1]).float()
    if base.ndim != 2 or not _second_difference_vanishes(tail, x[:1], rel_tol):
        return None  # not affine: the Jacobian (outputs x C*H*W numbers) is never built
    try:
        jac = torch.autograd.functional.jacobian(lambda a: tail(a).float()[0], x[:1], vectorize=True)
    except RuntimeError:
        return None
    jac = jac.reshape(base.shape[1], c * h * w)  # (O, C*H*W)
    gen = torch.Generator().manual_seed(0)
    scale = float(x.abs().max()) or 1.0
    with torch.no_grad():
        for i in range(min(n, 3)):
            delta = (torch.rand(x[i : i + 1].shape, generator=gen) - 0.5) * 2 * scale
            lhs = tail(x[i : i + 1] + delta).float()
            rhs = tail(x[i : i + 1]).float() + (jac @ delta.reshape(-1)).reshape(1, -1)
            err = float((lhs - rhs).abs().max())
            if err > rel_tol * (float(lhs.abs().max()) + 1.0):
                return None
    return jac.T.reshape(c, h * w, -1).contiguous()  # (C, H*W, O)


def _second_difference_vanishes(tail: nn.Module, x: torch.Tensor, rel_tol: float) -> bool:
    """A cheap necessary test of affinity: ``tail(x + δ) + tail(x − δ) = 2·tail(x)`` for a random ``δ`` as large as
    the activations (three passes, against one Jacobian column per input for the full check)."""
    gen = torch.Generator().manual_seed(1)
    scale = float(x.abs().max()) or 1.0
    delta = (torch.rand(x.shape, generator=gen) - 0.5) * 2 * scale
    with torch.no_grad():
        plus, minus, mid = (tail(v).float() for v in (x + delta, x - delta, x))
    err = float((plus + minus - 2 * mid).abs().max())
    return err <= rel_tol * (float(plus.abs().max()) + float(minus.abs().max()) + 1.0)


class AffineTailPath(TailPath):
    """Evaluate ablations as ``z + J_c (m_c − a_c)``; boundary cases fall back to the real tail."""

    name = "affine"

    def __init__(self, tail: nn.Module, jacobian: torch.Tensor, example: torch.Tensor | None = None) -> None:
        super().__init__(tail, example=example)
        self.jacobian = jacobian  # (C, H*W, O)

    def evaluate(
        self,
        state: object,
        x: torch.Tensor,
        z: torch.Tensor,
        labels: torch.Tensor,
        b_idx: torch.Tensor,
        channels: torch.Tensor,
        ablation: Ablation,
        k: int,
        valid: torch.Tensor,
    ) -> PairResult:
        p = len(b_idx)
        za = z[b_idx].float().clone()
        if ablation.values is not None:
            own = x[b_idx, channels].reshape(p, -1).float()
            delta = ablation.values[channels].reshape(p, -1).to(own) - own  # (P, H*W)
            for ch in torch.unique(channels):
                sel = channels == ch
                za[sel] += delta[sel] @ self.jacobian[int(ch)]
        lab = labels[b_idx].long()
        zt = za.gather(1, lab[:, None])
        tol = 2.0 * float_tolerance(za, zt)  # the same slack the other exact paths use, doubled
        near = ((za - zt).abs() <= tol) & valid[None, :]
        near.scatter_(1, lab[:, None], False)
        ambiguous = near.any(1)
        after = topk_correct(za, lab, k, valid)
        logprob = true_logprob(za, lab, valid)
        n_fallback = int(ambiguous.sum())
        if n_fallback:
            exact = super().evaluate(state, x, z, labels, b_idx[ambiguous], channels[ambiguous], ablation, k, valid)
            after[ambiguous] = exact.after_correct
            logprob[ambiguous] = exact.logprob_after
        return PairResult(
            after_correct=after, logprob_after=logprob, bounded=torch.zeros(p, dtype=torch.bool), fallback=n_fallback
        )
