"""Fast approximate importance: a first-order estimate for every feature from one backward pass.

For image ``i`` let ``m_i = z_t - (k-th largest other valid logit)``: the image is top-k correct iff
``m_i >= 0`` (up to ties). The smooth proxy of correctness is ``S_i = sigmoid(m_i / T)``, and
ablating feature ``c`` changes it by about ``∇_a S_i · (target_c - a_c)``, so

    importance_est(c) = - Σ_i σ'(m_i/T)/T · ∇_a m_i · (target_c - a_{i,c}).

``T`` (logit units) defaults to the RMS of the first-order margin changes ``∇m · Δa`` over all
pairs: the typical size of a single-feature perturbation, so images within reach of the boundary get
weight and images far from it do not. The same pass gives the first-order change of the true-class
log-probability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import read_cache
from autointerp.importance.topk import competitors, true_logprob


@dataclass
class AttributionResult:
    """Per-feature first-order estimates (arrays aligned with ``features``)."""

    features: np.ndarray
    importance: np.ndarray  # estimated correct-count change (before - after), float
    mean_delta_logprob: np.ndarray
    temperature: float


def topk_margin(logits: torch.Tensor, labels: torch.Tensor, k: int, valid: torch.Tensor) -> torch.Tensor:
    """(N,) ``z_t`` minus the k-th largest valid logit among the other outputs (differentiable)."""
    others = competitors(labels, valid, logits.shape[1])
    masked = logits.masked_fill(~others, float("-inf"))
    kk = min(k, logits.shape[1] - 1)
    kth = torch.topk(masked, kk, dim=1).values[:, kk - 1]
    kth = torch.where(torch.isfinite(kth), kth, torch.full_like(kth, -1e30))
    return logits.gather(1, labels.long()[:, None])[:, 0] - kth


def attribution_importance(
    tail: Callable[[torch.Tensor], torch.Tensor],
    acts: np.ndarray,
    labels: np.ndarray,
    features: Sequence[int],
    ablation: Ablation,
    k: int,
    valid: torch.Tensor,
    batch_size: int = 128,
    temperature: float | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> AttributionResult:
    """First-order importance of ``features`` from cached activations ``acts`` (N, C, H, W)."""
    feats = torch.as_tensor(np.asarray(features, dtype=np.int64))
    lab_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    dm_rows, m_rows, dlp_rows = [], [], []
    for s in range(0, len(acts), batch_size):
        x = read_cache(acts, slice(s, s + batch_size)).requires_grad_(True)
        lab = lab_all[s : s + batch_size]
        with torch.enable_grad():
            z = tail(x).float()
            m = topk_margin(z, lab, k, valid)
            lp = true_logprob(z, lab, valid)
            (gm,) = torch.autograd.grad(m.sum(), x, retain_graph=True)
            (glp,) = torch.autograd.grad(lp.sum(), x)
        with torch.no_grad():
            delta = ablation.target(x.detach(), feats) - x.detach()[:, feats]
            dm_rows.append((gm[:, feats] * delta).sum((2, 3)).double())
            dlp_rows.append((glp[:, feats] * delta).sum((2, 3)).double())
            m_rows.append(m.detach().double())
        if on_batch is not None:
            on_batch(len(x))
    dm = torch.cat(dm_rows)  # (N, F) first-order margin change per pair
    margins = torch.cat(m_rows)
    if temperature is None:
        temperature = float(dm.pow(2).mean().sqrt()) if dm.numel() else 1.0
        temperature = max(temperature, 1e-12)
    s = torch.sigmoid(margins / temperature)
    weight = s * (1 - s) / temperature  # σ'(m/T)/T
    est = -(weight[:, None] * dm).sum(0)
    return AttributionResult(
        features=np.asarray(features, dtype=np.int64),
        importance=est.numpy(),
        mean_delta_logprob=torch.cat(dlp_rows).mean(0).numpy(),
        temperature=temperature,
    )


def agreement(estimate: np.ndarray, exact: np.ndarray, top: int = 40) -> dict[str, float]:
    """Spearman correlation and top-``top`` overlap (fraction) between an estimate and exact importance."""
    from scipy.stats import spearmanr

    est, ex = np.asarray(estimate, float), np.asarray(exact, float)
    rho = float(spearmanr(est, ex).statistic) if len(est) > 2 else float("nan")
    n = min(top, len(est))
    # stable, tie-aware: rank by value, ties broken by index
    top_est = set(np.lexsort((np.arange(len(est)), -est))[:n].tolist())
    top_ex = set(np.lexsort((np.arange(len(ex)), -ex))[:n].tolist())
    return {"spearman": rho, f"top{top}_overlap": len(top_est & top_ex) / max(n, 1), "n_features": len(est)}
