"""Top-k correctness and the distance of each image to its top-k boundary.

Definitions used everywhere in the importance stage (so the naive, batched, rank-1 and bounded
paths agree exactly):

* an image with true output ``t`` is *correct* when fewer than ``k`` **valid** outputs ``j != t``
  have a strictly larger logit: ``#{j valid, j != t : z_j > z_t} < k``; an invalid ``t`` (a dummy
  output) is never correct;
* with ``h`` the input of the final linear layer (``z = W h + b``), the ablation changes
  ``d_j = z_t - z_j`` by at most ``||W_t - W_j|| * ||Δh||``. :func:`boundary_radius` returns, per
  image, the largest ``||Δh||`` that provably cannot change the image's correctness (the distance to
  the top-k boundary in ``h`` space), already shrunk by a floating-point tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int, valid: torch.Tensor) -> torch.Tensor:
    """Bool (N,): true class among the top ``k`` valid outputs (strictly-larger rule, see module doc)."""
    labels = labels.long()
    zt = logits.gather(1, labels[:, None])
    above = (logits > zt) & valid[None, :]
    above.scatter_(1, labels[:, None], False)
    return (above.sum(1) < k) & valid[labels]


def true_logprob(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N,) log-probability of the true class under a softmax over the valid outputs."""
    masked = logits.masked_fill(~valid[None, :], float("-inf"))
    lp = torch.log_softmax(masked.double(), dim=1)
    return lp.gather(1, labels.long()[:, None])[:, 0]


def logits_and_logprob_grad(
    tail: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``tail(x)`` (float32, no grad) and the gradient of the true-class log-probability
    (:func:`true_logprob`) w.r.t. ``x``, from one forward pass."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = tail(x).float()
        (grad,) = torch.autograd.grad(true_logprob(z, labels, valid).sum(), x)
    return z.detach(), grad


def float_tolerance(z: torch.Tensor, zt: torch.Tensor, rel_tol: float = 1e-4, abs_tol: float = 1e-5) -> torch.Tensor:
    """(N, O) slack for rounding differences in ``z_t - z_j`` between two float32 computations of the logits."""
    scale = z.abs().amax(1, keepdim=True)
    return rel_tol * (zt.abs() + z.abs()) + abs_tol * (scale + 1.0)


def count_above(d: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(N,) number of competitors (``others`` mask) with ``d_j < 0``."""
    return ((d < 0) & others).sum(1)


def competitors(labels: torch.Tensor, valid: torch.Tensor, n_outputs: int) -> torch.Tensor:
    """(N, O) bool: valid outputs other than each image's true output (one broadcast comparison, which
    compiled callers fuse into their own loops)."""
    outputs = torch.arange(n_outputs, device=labels.device)
    return valid[None, :n_outputs] & (outputs[None, :] != labels.long()[:, None])


def decide_interval(
    lo: torch.Tensor, hi: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, k: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(decided, correct) (N,) bool when each margin ``d_j = z_t - z_j`` is known to lie in ``[lo_j, hi_j]``
    (N, O): surely correct while fewer than ``k`` valid competitors can be above the true output
    (``lo_j < 0``), surely wrong while at least ``k`` surely are (``hi_j < 0``) or ``t`` is invalid.
    ``correct`` is meaningful where ``decided``; ``lo = hi = d`` gives :func:`topk_correct`. ``k``: one
    for all, or one per pair (N,) (:class:`ClassSubset`)."""
    others = competitors(labels, valid, lo.shape[1])
    ok = valid[labels]
    correct = (count_above(lo, others) < k) & ok
    wrong = (count_above(hi, others) >= k) | ~ok
    return correct | wrong, correct


@dataclass
class ClassSubset:
    """The outputs a later, tighter computation still needs for a batch of pairs (:func:`class_subset`):
    decisions over ``columns`` with each pair's ``k`` equal the full decisions."""

    columns: torch.Tensor  # (J,) the outputs kept (every pair's true output among them)
    labels: torch.Tensor  # (N,) each pair's true output's position in ``columns``
    valid: torch.Tensor  # (J,) ``valid[columns]``
    k: torch.Tensor  # (N,) ``k`` less each pair's valid competitors outside ``columns`` surely above it


def class_subset(lo: torch.Tensor, hi: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, k: int) -> ClassSubset:
    """From sound intervals ``[lo_j, hi_j]`` (N, O) of every margin ``d_j = z_t - z_j``: the outputs whose
    interval still contains zero for some pair (or is not finite), and the pairs' true outputs. Any
    sound interval inside them, with ``decide_interval(..., subset.labels, subset.valid, subset.k)``
    over ``columns`` only, decides as over all outputs: every competitor left out is surely below
    (``lo_j >= 0``: never counted) or surely above (``hi_j < 0``: counted in ``k``) for every pair."""
    others = competitors(labels, valid, lo.shape[1])
    fixed = (lo >= 0) | (hi < 0)
    keep = (~fixed & others).any(0)
    keep[labels.long()] = True
    columns = torch.nonzero(keep)[:, 0]
    above = ((hi < 0) & others & ~keep[None, :]).sum(1)
    position = torch.full((lo.shape[1],), -1, dtype=torch.long)
    position[columns] = torch.arange(len(columns))
    return ClassSubset(columns, position[labels.long()], valid[columns], k - above)


def boundary_radius(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    valid: torch.Tensor,
    rel_tol: float = 1e-4,
    abs_tol: float = 1e-5,
) -> torch.Tensor:
    """(N,) radius ``τ`` in ``h`` space: if ``||Δh||_2 < τ`` the image's top-k correctness cannot change.

    ``τ`` is ``|r_(k)|``, the k-th smallest ``r_j = d_j / ||W_t - W_j||`` over valid ``j != t``,
    computed pessimistically: each margin ``d_j`` is moved towards zero by a floating-point tolerance
    ``rel_tol * (|z_t| + |z_j|) + abs_tol`` (the caller's logits may differ from the reference
    computation by rounding), and the pair norms are inflated by ``rel_tol``. A radius of ``0`` means
    "never skip"; ``inf`` means no ablation can change the image (e.g. a dummy true class).
    """
    z = logits.double()
    lab = labels.long()
    zt = z.gather(1, lab[:, None])
    d = zt - z
    tol = float_tolerance(z, zt, rel_tol, abs_tol)
    norms = pair_norms(weight, lab) * (1.0 + rel_tol)
    others = competitors(lab, valid, z.shape[1])
    correct = topk_correct(logits, labels, k, valid)
    inf = torch.tensor(float("inf"), dtype=z.dtype)
    # correct images stay correct while fewer than k competitors can get above: r_j = (d_j - tol)/n_j
    r_c = torch.where(norms > 0, (d - tol) / norms.clamp_min(1e-300), torch.where(d - tol >= 0, inf, -inf))
    # wrong images stay wrong while at least k competitors stay surely above: r_j = (d_j + tol)/n_j
    r_w = torch.where(norms > 0, (d + tol) / norms.clamp_min(1e-300), torch.where(d + tol >= 0, inf, -inf))
    r = torch.where(correct[:, None], r_c, r_w)
    r = r.masked_fill(~others, float("inf"))
    kk = min(k, r.shape[1])
    kth = torch.topk(r, kk, dim=1, largest=False).values[:, kk - 1]
    tau = torch.where(correct, kth, -kth).clamp_min(0.0)
    tau = torch.where(valid[lab], tau, inf)
    return tau


def pair_norms(weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, O) upper bounds on ``||W_t - W_j||_2`` for each image's true output ``t`` and every ``j`` (float64).

    Uses the Gram expansion in float64, inflated by ``1e-12 * (|W_t|^2 + |W_j|^2)`` under the square
    root so that cancellation can only make the value larger (the bounds stay sound).
    """
    w = weight.double()
    sq = (w * w).sum(1)
    lab = labels.long()
    wt = w[lab]
    d2 = sq[lab][:, None] + sq[None, :] - 2.0 * (wt @ w.T)
    return (d2.clamp_min(0) + 1e-12 * (sq[lab][:, None] + sq[None, :])).sqrt()
