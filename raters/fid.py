"""``fid``: Fréchet distance and KID between a feature's visualisation and example embeddings.

With 4 visualisations and 8 examples in hundreds of dimensions the sample covariances have rank
≤ 3 and ≤ 7, so the raw Fréchet distance is degenerate (dominated by which directions happen to
be sampled). We shrink each covariance towards a scaled identity (Ledoit–Wolf by default:
Σ̂ = (1−λ)S + λ·tr(S)/D·I, the estimator of ``sklearn.covariance.LedoitWolf``) and compute the
distance exactly in the span of the data (the rest of the space contributes a closed-form term),
so a feature costs a few small eigen-decompositions instead of a D×D matrix square root.

KID is the unbiased MMD² with the polynomial kernel k(x, y) = (xᵀy/D + 1)³, over all images.

Why not torchmetrics: ``FrechetInceptionDistance`` (which does accept a custom ``feature``
module) uses unshrunk sample covariances — the degenerate estimate above — and
``KernelInceptionDistance`` averages over random subsets of one fixed size drawn from both sets,
which does not fit 4 vs 8 images and is not seed-controlled by us. The tests check that these
functions equal torchmetrics wherever their settings coincide (no shrinkage; equal set sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autointerp.errors import ConfigError
from autointerp.progress import track
from autointerp.rating import Rater, RatingContext, ScoreTable, register_rater
from raters._similarity import l2_normalize


def shrinkage_of(x: np.ndarray, shrinkage: str | float) -> float:
    """The shrinkage λ for samples ``x`` (n, D): Ledoit–Wolf's estimate or a fixed number."""
    if isinstance(shrinkage, str):
        if shrinkage != "ledoit_wolf":
            raise ConfigError(
                f"rate.options.fid.shrinkage = {shrinkage!r}; expected 'ledoit_wolf' or a number in [0, 1]"
            )
        if len(x) < 2:
            return 1.0
        from sklearn.covariance import ledoit_wolf_shrinkage

        return float(ledoit_wolf_shrinkage(x))
    lam = float(shrinkage)
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"rate.options.fid.shrinkage = {shrinkage!r}; expected a number in [0, 1]")
    return lam


def frechet_distance(x: np.ndarray, y: np.ndarray, shrinkage: str | float = "ledoit_wolf",
                     ddof: int = 0) -> float:
    """Fréchet distance between Gaussians fitted to samples ``x`` (n1, D) and ``y`` (n2, D).

    Covariances are ``(1−λ)·S + λ·tr(S)/D·I`` with S the sample covariance (divided by n − ddof).
    Exact: both covariances act as multiples of the identity outside the span of the centred
    samples, so tr √(Σ₁Σ₂) splits into an r×r part (r ≤ n1 + n2) and (D − r)·√(c₁c₂).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (n1, D) and (n2, D) samples, got {x.shape} and {y.shape}")
    if len(x) < 1 or len(y) < 1:
        return float("nan")
    d = x.shape[1]
    lam1, lam2 = shrinkage_of(x, shrinkage), shrinkage_of(y, shrinkage)
    xc, yc = x - x.mean(0), y - y.mean(0)
    n1, n2 = max(len(x) - ddof, 1), max(len(y) - ddof, 1)
    # orthonormal basis of the span of the centred samples
    u, s, _ = np.linalg.svd(np.concatenate([xc, yc]).T, full_matrices=False)
    q = u[:, s > s.max(initial=0.0) * 1e-10] if s.size else np.zeros((d, 0))
    r = q.shape[1]
    a, b = xc @ q, yc @ q  # coordinates in the span
    s1, s2 = a.T @ a / n1, b.T @ b / n2  # sample covariances restricted to the span (r×r)
    tr1, tr2 = np.trace(s1), np.trace(s2)  # = traces of the full sample covariances
    c1, c2 = lam1 * tr1 / d, lam2 * tr2 / d  # identity parts
    m1 = (1 - lam1) * s1 + c1 * np.eye(r)
    m2 = (1 - lam2) * s2 + c2 * np.eye(r)
    w, v = np.linalg.eigh(m1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root1 @ m2 @ root1)
    tr_sqrt = float(np.sqrt(np.clip(eig, 0, None)).sum()) + (d - r) * float(np.sqrt(max(c1 * c2, 0.0)))
    trace1 = (1 - lam1) * tr1 + lam1 * tr1  # tr Σ̂ = tr S for any λ
    trace2 = (1 - lam2) * tr2 + lam2 * tr2
    diff = x.mean(0) - y.mean(0)
    return float(max(diff @ diff + trace1 + trace2 - 2.0 * tr_sqrt, 0.0))


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD² between ``x`` and ``y`` with k(a, b) = (aᵀb/D + coef)^degree (NaN for < 2 samples)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return float("nan")
    gamma = 1.0 / x.shape[1]
    kxx = (x @ x.T * gamma + coef) ** degree
    kyy = (y @ y.T * gamma + coef) ** degree
    kxy = (x @ y.T * gamma + coef) ** degree
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


@register_rater
class FidRater(Rater):
    """Distribution distance between visualisations and examples (lower = visualisations look like examples)."""

    name = "fid"
    description = "Frechet distance (shrunk covariances, works for 4 vs 8 images) and KID: visualisations vs examples"
    needs = frozenset({"visualizations", "examples", "embedder"})
    components = ("fd", "kid")
    defaults = {"shrinkage": "ledoit_wolf", "normalize": True}

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        shrink = self.options["shrinkage"]
        shrinkage_of(np.zeros((3, 2)), shrink)  # validate the option before any work
        fd, kid = np.full(len(features), np.nan), np.full(len(features), np.nan)
        for i, f in enumerate(track(features, "fid", len(features), "features")):
            vp, ep = ctx.vis_paths(f), ctx.example_paths(f)
            if not vp or not ep:
                continue
            v, e = ctx.embed_paths(vp), ctx.embed_paths(ep)
            if self.options["normalize"]:
                v, e = l2_normalize(v), l2_normalize(e)
            fd[i] = frechet_distance(v, e, shrink)
            kid[i] = kernel_inception_distance(v, e)
        return self.table(features, I=fd, components={"fd": fd, "kid": kid})
