"""Exact importance from cached activations: a bound pass over all pairs, then exact work per chunk.

1. **Bound pass** (all images, all requested features at once): the path's baseline logits, each
   image's top-k correctness and boundary radius ``τ`` (:func:`~autointerp.importance.topk.boundary_radius`),
   the path's cheap per-pair bound ``ρ`` on ``||Δh||``, and a first-order estimate of each pair's change in
   true-class log-probability. Pairs with ``ρ < τ`` provably keep their correctness and are skipped.
2. **Chunks of features**: the remaining pairs are evaluated by the path (which may decide some by a
   finer bound and evaluates the rest exactly).

The stage runs both steps for each chunk of features segment by segment over the images
(:func:`evaluate_segment`), and saves each segment's tallies so an interrupted run resumes.

The delta-log-probability column is exact for exactly evaluated pairs and first-order for pairs whose
correctness was decided by a bound (their change is provably small).

With ``per_image=True`` both steps also return each (image, feature) pair's outcome
(:class:`ImageOutcomes`), which the stage saves for the importance reliability estimates
(:mod:`autointerp.importance.reliability`); the tallies are the same either way.

Model-specific paths (:mod:`autointerp.importance.fastpaths`) implement the same :class:`AblationPath`
protocol; this module knows none of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from autointerp.importance.ablation import Ablation, FeatureTally
from autointerp.importance.topk import boundary_radius, topk_correct, true_logprob


@dataclass
class PairResult:
    """What a path says about a batch of (image, feature) pairs."""

    after_correct: torch.Tensor  # (P,) bool
    logprob_after: torch.Tensor  # (P,) float64, NaN where the pair was decided by a bound
    bounded: torch.Tensor  # (P,) bool: decided by the path's finer bound, not evaluated
    fallback: int = 0  # pairs re-evaluated by the reference tail because they sat on the boundary


class AblationPath(Protocol):
    """A way to evaluate ablations from cached activations (see :mod:`autointerp.importance.paths`)."""

    name: str
    #: pairs decided so far per tier of the path, and wall seconds per part (empty where it has no tiers)
    pairs: dict[str, int]
    seconds: dict[str, float]

    def describe(self) -> dict[str, str]:
        """What the stage's summary records about the path (at least ``{"path": name}``)."""

    def logits_and_grad(
        self, x: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference logits (B, O) of activations ``x`` (B, C, H, W) and the gradient (B, C, H, W) of the
        true-class log-probability w.r.t. ``x``, from one forward pass."""

    def final_weight(self) -> torch.Tensor | None:
        """Weight (O, D) of the final linear layer whose input the bounds refer to, or None (no skipping)."""

    def tier1(self, x: torch.Tensor, ablation: Ablation, features: torch.Tensor) -> torch.Tensor | None:
        """(B, F) upper bound on ``||Δh||_2`` for ablating each feature, or None."""

    def prepare(self, x: torch.Tensor) -> object:
        """Per-image-batch state reused by :meth:`evaluate` (e.g. pre-activations)."""

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
        """Evaluate pairs (``x[b_idx]`` with channel ``channels`` ablated); ``z`` baseline logits of ``x``."""


@dataclass
class ImageOutcomes:
    """Each (image, feature) pair's outcome: rows are the images of a segment, columns the features of a chunk.

    ``flip``: +1 where ablating the feature turned the image's top-k correctness from correct to wrong, -1 from
    wrong to correct, 0 unchanged (so ``flip.sum(0)`` is the importance count); ``delta_logprob``: the change
    in the true class's log-probability (exact where the pair was evaluated exactly, else the first-order
    estimate: the same terms, in float32, that the tally's ``sum_delta_logprob`` adds up in float64)."""

    flip: np.ndarray  # (N, F) int8
    delta_logprob: np.ndarray  # (N, F) float32


@dataclass
class BoundPass:
    """Results of the bound pass over all images for the requested features."""

    features: np.ndarray  # (F,)
    base_correct: torch.Tensor  # (N,) bool
    base_logprob: torch.Tensor  # (N,) float64
    logits: torch.Tensor  # (N, O) float32 baseline logits
    candidate: torch.Tensor  # (N, F) bool: pairs the cheap bound could not rule out
    first_order: torch.Tensor  # (N, F) float32 first-order Δ log-prob of the true class

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - float(self.candidate.float().mean()) if self.candidate.numel() else 0.0


def read_cache(acts: np.ndarray, index: slice | np.ndarray) -> torch.Tensor:
    """Rows ``index`` of an activation cache (e.g. a float16 memmap) as a float32 tensor in memory."""
    return torch.from_numpy(np.array(acts[index], dtype=np.float32))


def bound_pass(
    path: AblationPath,
    acts: np.ndarray,
    labels: np.ndarray,
    features: Sequence[int],
    ablation: Ablation,
    k: int,
    valid: torch.Tensor,
    batch_size: int = 256,
    use_bound: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> BoundPass:
    """Step 1 (see module doc) over ``acts`` (N, C, H, W), e.g. a read-only memmap."""
    n = len(acts)
    feats = torch.as_tensor(np.asarray(features, dtype=np.int64))
    lab_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    weight = path.final_weight() if use_bound else None
    out_correct, out_lp, out_z, out_cand, out_fo = [], [], [], [], []
    for s in range(0, n, batch_size):
        x = read_cache(acts, slice(s, s + batch_size))
        lab = lab_all[s : s + batch_size]
        z, grad = path.logits_and_grad(x, lab, valid)
        correct = topk_correct(z, lab, k, valid)
        delta = ablation.target(x, feats) - x[:, feats]
        out_fo.append((grad[:, feats] * delta).sum((2, 3)))
        cand = torch.ones(len(x), len(feats), dtype=torch.bool)
        if weight is not None:
            with torch.no_grad():
                rho = path.tier1(x, ablation, feats)
            if rho is not None:
                tau = boundary_radius(z, lab, weight, k, valid)
                cand = ~(rho.double() < tau[:, None])
        out_correct.append(correct)
        out_lp.append(true_logprob(z, lab, valid))
        out_z.append(z)
        out_cand.append(cand)
        if on_batch is not None:
            on_batch(len(x))
    return BoundPass(
        features=np.asarray(features, dtype=np.int64),
        base_correct=torch.cat(out_correct),
        base_logprob=torch.cat(out_lp),
        logits=torch.cat(out_z),
        candidate=torch.cat(out_cand),
        first_order=torch.cat(out_fo).float(),
    )


def evaluate_chunk(
    path: AblationPath,
    acts: np.ndarray,
    labels: np.ndarray,
    bp: BoundPass,
    chunk: Sequence[int],
    ablation: Ablation,
    k: int,
    valid: torch.Tensor,
    batch_size: int = 256,
    pair_batch: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    per_image: bool = False,
) -> tuple[FeatureTally, dict[str, Any]]:
    """Step 2 for the features ``chunk`` (a subset of ``bp.features``): exact tallies for these features.

    ``pair_batch``: pairs per :meth:`AblationPath.evaluate` call; default the path's ``pair_batch``
    attribute when it has one (larger batches amortise per-call overhead), else 256. ``on_batch``
    is called with the number of images done after each batch (images with no pair left count at the end).
    ``stats``: boundary fallbacks (``"fallback"``) and, with ``per_image``, every pair's outcome
    (``"outcomes"``, an :class:`ImageOutcomes`).
    """
    if pair_batch is None:
        pair_batch = int(getattr(path, "pair_batch", 256))
    n = len(acts)
    pos = {int(f): i for i, f in enumerate(bp.features.tolist())}
    cols = torch.as_tensor([pos[int(f)] for f in chunk], dtype=torch.long)
    chunk_t = torch.as_tensor(np.asarray(chunk, dtype=np.int64))
    tally = FeatureTally(np.asarray(chunk, dtype=np.int64))
    tally.n_images = n
    cand = bp.candidate[:, cols]
    fo = bp.first_order[:, cols].double()
    # pairs never looked at again: first-order log-prob change, correctness unchanged
    tally.sum_delta_logprob += (fo * (~cand)).sum(0).numpy()
    tally.n_skipped += (~cand).sum(0).numpy()
    stats: dict[str, Any] = {"fallback": 0}
    if per_image:  # skipped pairs: first-order change, no flip; the others are filled in below
        flip = torch.zeros(n, len(chunk), dtype=torch.int8)
        dlp_image = (fo * (~cand)).float()
    lab_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    rows_with_work = torch.nonzero(cand.any(1))[:, 0]
    for s in range(0, len(rows_with_work), batch_size):
        rows = rows_with_work[s : s + batch_size]
        x = read_cache(acts, rows.numpy())
        z = bp.logits[rows]
        lab = lab_all[rows]
        b_idx, f_idx = torch.nonzero(cand[rows], as_tuple=True)
        state = path.prepare(x)
        for p in range(0, len(b_idx), pair_batch):
            bi, fi = b_idx[p : p + pair_batch], f_idx[p : p + pair_batch]
            res = path.evaluate(state, x, z, lab, bi, chunk_t[fi], ablation, k, valid)
            stats["fallback"] += res.fallback
            base = bp.base_correct[rows[bi]]
            tally.add_flips(base, res.after_correct, fi)
            exact = ~res.bounded
            dlp = torch.where(exact, res.logprob_after - bp.base_logprob[rows[bi]], fo[rows[bi], fi])
            tally.sum_delta_logprob += torch.bincount(fi, weights=dlp, minlength=len(chunk)).numpy()
            tally.n_exact += torch.bincount(fi, weights=exact.double(), minlength=len(chunk)).long().numpy()
            tally.n_bounded += torch.bincount(fi, weights=res.bounded.double(), minlength=len(chunk)).long().numpy()
            if per_image:
                after = res.after_correct
                flip[rows[bi], fi] = (base & ~after).to(torch.int8) - (~base & after).to(torch.int8)
                dlp_image[rows[bi], fi] = dlp.float()
        if on_batch is not None:
            on_batch(len(rows))
    if on_batch is not None and n > len(rows_with_work):
        on_batch(n - len(rows_with_work))
    if per_image:
        stats["outcomes"] = ImageOutcomes(flip.numpy(), dlp_image.numpy())
    return tally, stats


def evaluate_segment(
    path: AblationPath,
    acts: np.ndarray,
    labels: np.ndarray,
    features: Sequence[int],
    ablation: Ablation,
    k: int,
    valid: torch.Tensor,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
    per_image: bool = False,
) -> tuple[FeatureTally, dict[str, Any]]:
    """Both steps for the images ``acts`` (e.g. a slice of the cache) and ``features`` together.

    Every feature of an image batch is evaluated before the next batch, so the path's per-image
    state (:meth:`AblationPath.prepare`) is computed once per image for all of ``features``. Tallies add up
    over segments of images, so a run resumes segment by segment. ``stats``: boundary fallbacks,
    bound-pass seconds and, with ``per_image``, every pair's outcome (``"outcomes"``, :class:`ImageOutcomes`).
    """
    t0 = time.perf_counter()
    bp = bound_pass(path, acts, labels, features, ablation, k, valid, batch_size)
    seconds = time.perf_counter() - t0
    tally, stats = evaluate_chunk(
        path, acts, labels, bp, features, ablation, k, valid, batch_size, on_batch=on_batch, per_image=per_image
    )
    return tally, {**stats, "bound_pass_seconds": seconds}
