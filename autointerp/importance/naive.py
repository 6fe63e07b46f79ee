"""Reference implementation: one full forward pass of the whole model per ablated feature.

A forward hook on the studied layer imputes the ablation values into one channel. It is slow (the
head is recomputed for every feature) and exists to check the fast paths and to be benchmarked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from autointerp.importance.ablation import Ablation, FeatureTally
from autointerp.importance.topk import topk_correct, true_logprob


@torch.no_grad()
def naive_importance(
    forward: Callable[[torch.Tensor], torch.Tensor],
    layer_module: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    features: Sequence[int],
    ablation: Ablation,
    k: int,
    valid: torch.Tensor,
    batch_size: int = 32,
    cached: torch.Tensor | None = None,
    seconds: dict[str, float] | None = None,
    layout: tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> FeatureTally:
    """Importance of ``features`` by full forward passes of ``forward`` with a hook on ``layer_module``.

    ``images`` (N, 3, S, S) in [0, 1]; ``labels`` (N,) model output indices. With ``cached``
    (N, C, H, W) the hook also substitutes the cached activation for the live one, so the result is
    relative to the same cache as the fast paths (needed when the cache is float16). ``seconds``, when
    given, receives the wall time of the baseline (unablated) passes and of the ablated ones
    (``"baseline"``, ``"ablated"``): a per-ablation rate must not count the one-off baseline.
    ``layout`` = (module output → (N, C, H, W), and back) where the layer's own output has another layout (a
    ViT's (N, T, D) tokens: :meth:`~autointerp.models.base.ModelAdapter.layer_layout`).
    """
    to_grid, from_grid = layout or (lambda t: t, lambda t: t)
    tally = FeatureTally(np.asarray(list(features), dtype=np.int64))
    tally.n_images = len(images)
    state: dict[str, object] = {"feature": None, "rows": None}

    def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        grid = to_grid(out)
        if cached is not None:
            rows = state["rows"]
            grid = cached[rows].to(grid)  # type: ignore[index]
        feature = state["feature"]
        if feature is not None:
            grid = ablation.apply(grid, int(feature))  # type: ignore[arg-type]
        return from_grid(grid)

    handle = layer_module.register_forward_hook(hook)
    t0 = time.perf_counter()
    try:
        base_correct, base_lp = [], []
        for s in range(0, len(images), batch_size):
            state.update(feature=None, rows=slice(s, s + batch_size))
            z = forward(images[s : s + batch_size]).float()
            base_correct.append(topk_correct(z, labels[s : s + batch_size], k, valid))
            base_lp.append(true_logprob(z, labels[s : s + batch_size], valid))
        bc, blp = torch.cat(base_correct), torch.cat(base_lp)
        t1 = time.perf_counter()
        for fi, feature in enumerate(tally.features.tolist()):
            for s in range(0, len(images), batch_size):
                state.update(feature=feature, rows=slice(s, s + batch_size))
                lab = labels[s : s + batch_size]
                z = forward(images[s : s + batch_size]).float()
                after = topk_correct(z, lab, k, valid)
                f_idx = torch.full((len(lab),), fi, dtype=torch.long)
                tally.add_flips(bc[s : s + batch_size], after, f_idx)
                tally.sum_delta_logprob[fi] += float((true_logprob(z, lab, valid) - blp[s : s + batch_size]).sum())
                tally.n_exact[fi] += len(lab)
    finally:
        handle.remove()
    if seconds is not None:
        seconds.update(baseline=t1 - t0, ablated=time.perf_counter() - t1)
    return tally
