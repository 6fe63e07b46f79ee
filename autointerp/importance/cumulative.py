"""Accuracy when the n most important features are mean-ablated together (n = 0, 1, 2, 4, 8, ...)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import read_cache
from autointerp.importance.topk import topk_correct


def ablation_sizes(n_features: int) -> list[int]:
    """0, 1, 2, 4, ... below ``n_features``, then ``n_features``."""
    sizes, n = [0], 1
    while n < n_features:
        sizes.append(n)
        n *= 2
    if n_features > 0:
        sizes.append(n_features)
    return sizes


@torch.no_grad()
def cumulative_ablation(
    tail: Callable[[torch.Tensor], torch.Tensor],
    acts: np.ndarray,
    labels: np.ndarray,
    ranked_features: Sequence[int],
    ablation: Ablation,
    k: int,
    valid: torch.Tensor,
    batch_size: int = 256,
) -> list[dict[str, float]]:
    """Rows ``{n_ablated, top1, top5, topk}`` (accuracies) for ablating the first n of ``ranked_features``."""
    lab_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    sizes = ablation_sizes(len(ranked_features))
    hits = np.zeros((len(sizes), 3), dtype=np.int64)
    for s in range(0, len(acts), batch_size):
        x = read_cache(acts, slice(s, s + batch_size))
        lab = lab_all[s : s + batch_size]
        for row, n in enumerate(sizes):
            z = tail(ablation.apply_many(x, list(ranked_features[:n]))).float()
            for col, kk in enumerate((1, 5, k)):
                hits[row, col] += int(topk_correct(z, lab, kk, valid).sum())
    total = max(len(acts), 1)
    return [
        {"n_ablated": n, "top1": hits[r, 0] / total, "top5": hits[r, 1] / total, f"top{k}": hits[r, 2] / total}
        for r, n in enumerate(sizes)
    ]
