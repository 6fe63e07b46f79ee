"""``fid``: how far a feature's visualisations are, as a distribution, from its dataset examples.

**Which statistic drives I: KID.** ``I`` is the null percentile (:mod:`autointerp.calibration`) of
the kernel inception distance — the unbiased MMD² with the polynomial kernel
k(a, b) = (γ·aᵀb + 1)³ — between the visualisation and example embeddings; lower is better.

Why not the Fréchet distance. With 4 visualisations and 8 examples the plug-in FD is badly biased:
its mean term ‖x̄ − ȳ‖² has expectation ‖μ₁ − μ₂‖² + tr Σ₁/n₁ + tr Σ₂/n₂, so two samples of *one*
distribution get an FD that grows with the distribution's spread — it partly measures how unalike
a feature's examples are, not whether the visualisations match them. Subtracting tr Σ̂₁/n₁ + tr Σ̂₂/n₂
(unbiased sample covariances; ``fd_corrected``) makes the mean term unbiased, but the covariance
term tr Σ̂₁ + tr Σ̂₂ − 2 tr √(Σ̂₁Σ̂₂) stays biased upwards for small n: two noisy estimates of one
covariance are never aligned, so tr √(Σ̂₁Σ̂₂) < (tr Σ̂₁ + tr Σ̂₂)/2. Measured (as in ``tests/test_fid.py``:
64-d isotropic Gaussians with tr Σ = σ², 4 vs 8 samples of one distribution, 400 repeats, Ledoit–Wolf
shrinkage): at spreads σ = 0.1, 0.5, 1.0 the plug-in FD
averages about 0.007, 0.18, 0.71 (∝ σ²), the corrected FD still about 0.003, 0.08, 0.34 (∝ σ²), while
KID averages 0 within its standard error at every spread. KID's three averages are unbiased U-statistics
(the diagonal k(x, x) is left out), so its expectation is the population MMD², exactly 0 when the two
sets come from one distribution, whatever that distribution's spread. It is also defined for any set
sizes ≥ 2 with no covariance estimate at all.

Kernel scale: KID's γ = 1/D was made for Inception features, whose aᵀb/D is of order 1. Embeddings
here are L2-normalised by default (``normalize``), so aᵀb is a cosine in [−1, 1] and aᵀb/D ≈ 1/D
would make the cubic kernel almost linear (KID would compare means only). ``kid_gamma = "auto"``
(default) uses γ = 1 for normalised embeddings (k = (cos + 1)³, the same O(1) scale) and KID's
γ = 1/D otherwise; a number sets γ.

**Null.** For each feature, the same KID between its visualisations and ``n_null`` random sets of
the examples' size drawn from the run's null pool (:meth:`RatingContext.null_embeddings`, ``null_pool``
images), the random sets seeded by (seed, set size), so a feature's row does not depend on which
other features are scored. I = ``null_percentile(kid, null, "lower")``: 0.5 when the visualisations
are as close to their examples as to random images, near 1 when closer than every random set.

**Extra columns.** ``kid`` (the raw statistic), ``fd`` (plug-in FD, shrunk covariances), ``fd_corrected``
(mean term bias-corrected; may be negative), ``null_mean``, ``null_std``, ``z`` (of ``kid`` against the
null; negative = closer than random) and ``p_value`` = (1 + #null ≤ kid)/(1 + n_null).

FD's covariances: with 4 and 8 samples in hundreds of dimensions the sample covariances have rank
≤ 3 and ≤ 7, so each is shrunk towards a scaled identity (Ledoit–Wolf by default:
Σ̂ = (1−λ)S + λ·tr(S)/D·I, the estimator of ``sklearn.covariance.LedoitWolf``) and the distance is
computed exactly in the span of the data (the rest of the space contributes a closed-form term).

Why not torchmetrics: ``FrechetInceptionDistance`` (which does accept a custom ``feature`` module)
uses unshrunk sample covariances, and ``KernelInceptionDistance`` averages over random subsets of
one fixed size drawn from both sets, which does not fit 4 vs 8 images and is not seed-controlled by
us. The tests check that these functions equal torchmetrics wherever their settings coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from autointerp.calibration import null_percentile
from autointerp.errors import ConfigError, DataError
from autointerp.progress import track
from autointerp.rating import Rater, RaterOptions, RatingContext, ScoreTable, option, register_rater
from raters._similarity import l2_normalize, random_subsets, subset_coherence

KID_DEGREE = 3
KID_COEF = 1.0


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
    if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)):
        raise ConfigError(f"rate.options.fid.shrinkage = {shrinkage!r}; expected 'ledoit_wolf' or a number in [0, 1]")
    lam = float(shrinkage)
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"rate.options.fid.shrinkage = {shrinkage!r}; expected a number in [0, 1]")
    return lam


def frechet_distance(
    x: np.ndarray, y: np.ndarray, shrinkage: str | float = "ledoit_wolf", ddof: int = 0, bias_corrected: bool = False
) -> float:
    """Fréchet distance between Gaussians fitted to samples ``x`` (n1, D) and ``y`` (n2, D).

    Covariances are ``(1−λ)·S + λ·tr(S)/D·I`` with S the sample covariance (divided by n − ddof).
    Exact: both covariances act as multiples of the identity outside the span of the centred
    samples, so tr √(Σ₁Σ₂) splits into an r×r part (r ≤ n1 + n2) and (D − r)·√(c₁c₂).

    ``bias_corrected``: the mean term is the unbiased estimate of ‖μ₁ − μ₂‖²,
    ‖x̄ − ȳ‖² − tr S₁/n1 − tr S₂/n2 with unbiased S (NaN for fewer than 2 samples), and the
    result is not clipped at 0. The covariance term stays biased upwards for small n (see the
    module docstring). Without it the plug-in distance is clipped at 0 (rounding).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected (n1, D) and (n2, D) samples, got {x.shape} and {y.shape}")
    if len(x) < 1 or len(y) < 1 or (bias_corrected and (len(x) < 2 or len(y) < 2)):
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
    # tr Σ̂ = tr S for any λ
    cov_term = tr1 + tr2 - 2.0 * tr_sqrt
    diff = x.mean(0) - y.mean(0)
    mean_term = float(diff @ diff)
    if bias_corrected:
        unbiased1 = float((xc * xc).sum()) / (len(x) - 1)
        unbiased2 = float((yc * yc).sum()) / (len(y) - 1)
        return mean_term - unbiased1 / len(x) - unbiased2 / len(y) + max(cov_term, 0.0)
    return float(max(mean_term + cov_term, 0.0))


def kid_gamma(gamma: float | None, dim: int) -> float:
    """The kernel scale γ: ``gamma`` when given, else KID's 1/D."""
    return 1.0 / dim if gamma is None else float(gamma)


def kid_kernel(
    a: np.ndarray, b: np.ndarray, gamma: float | None = None, degree: int = KID_DEGREE, coef: float = KID_COEF
) -> np.ndarray:
    """KID's polynomial kernel matrix (γ·aᵀb + coef)^degree (γ = 1/D when None)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a @ b.T * kid_gamma(gamma, a.shape[1]) + coef) ** degree


def _offdiag_mean(k: np.ndarray) -> float:
    n = len(k)
    return float((k.sum() - np.trace(k)) / (n * (n - 1)))


def kernel_inception_distance(
    x: np.ndarray, y: np.ndarray, degree: int = KID_DEGREE, coef: float = KID_COEF, gamma: float | None = None
) -> float:
    """Unbiased MMD² between ``x`` and ``y`` with k(a, b) = (γ·aᵀb + coef)^degree, γ = 1/D by default
    (NaN for fewer than 2 samples in either set)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    kxx = kid_kernel(x, x, gamma, degree, coef)
    kyy = kid_kernel(y, y, gamma, degree, coef)
    kxy = kid_kernel(x, y, gamma, degree, coef)
    return _offdiag_mean(kxx) + _offdiag_mean(kyy) - 2.0 * float(kxy.mean())


def kid_null(
    vis: np.ndarray,
    pool: np.ndarray,
    subsets: np.ndarray,
    gamma: float | None = None,
    pool_term: np.ndarray | None = None,
) -> np.ndarray:
    """KID between ``vis`` and each random set ``pool[subsets[j]]`` (one value per row of ``subsets``).

    ``pool_term`` (the within-set kernel mean of each subset, which does not depend on ``vis``) may
    be passed in when computed once for many features.
    """
    if pool_term is None:
        pool_term = subset_coherence(kid_kernel(pool, pool, gamma), subsets)
    vis_term = _offdiag_mean(kid_kernel(vis, vis, gamma))
    cross = kid_kernel(vis, pool, gamma)[:, subsets]  # (m, S, k)
    return vis_term + pool_term - 2.0 * cross.mean(axis=(0, 2))


def null_subsets(n_pool: int, k: int, n_null: int, seed: int) -> np.ndarray:
    """(n_null, k) random sets of the pool, seeded by (seed, k) only."""
    return random_subsets(n_pool, k, n_null, np.random.default_rng([seed, k, 0x666964]))


def fid_scores(
    vis_sets: Sequence[np.ndarray],
    example_sets: Sequence[np.ndarray],
    pool: np.ndarray,
    n_null: int = 200,
    seed: int = 0,
    shrinkage: str | float = "ledoit_wolf",
    gamma: float | None = None,
) -> dict[str, np.ndarray]:
    """Per feature: I (null percentile of KID, lower KID better), kid, fd, fd_corrected and null statistics.

    Embeddings are used as given (normalise them first if wanted). NaN where either set has
    fewer than 2 images.
    """
    names = ("I", "kid", "fd", "fd_corrected", "null_mean", "null_std", "z", "p_value")
    out = {name: np.full(len(vis_sets), np.nan) for name in names}
    pool = np.asarray(pool, np.float64)
    pool_kernel: np.ndarray | None = None
    per_size: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, (v, e) in enumerate(zip(vis_sets, example_sets, strict=True)):
        v, e = np.asarray(v, np.float64), np.asarray(e, np.float64)
        if len(v) < 2 or len(e) < 2:
            continue
        k = len(e)
        if k > len(pool):
            raise DataError(
                f"fid: the null pool has {len(pool)} images, fewer than the {k} examples of a feature; "
                "raise rate.options.fid.null_pool"
            )
        if k not in per_size:
            if pool_kernel is None:
                pool_kernel = kid_kernel(pool, pool, gamma)
            subsets = null_subsets(len(pool), k, n_null, seed)
            per_size[k] = (subsets, subset_coherence(pool_kernel, subsets))
        subsets, pool_term = per_size[k]
        null = kid_null(v, pool, subsets, gamma, pool_term)
        raw = kernel_inception_distance(v, e, gamma=gamma)
        out["kid"][i] = raw
        out["I"][i] = null_percentile(raw, null, "lower")
        out["fd"][i] = frechet_distance(v, e, shrinkage)
        out["fd_corrected"][i] = frechet_distance(v, e, shrinkage, bias_corrected=True)
        mean, sd = float(null.mean()), float(null.std(ddof=1))
        out["null_mean"][i], out["null_std"][i] = mean, sd
        out["z"][i] = (raw - mean) / sd if sd > 0 else float("nan")
        out["p_value"][i] = (1.0 + float((null <= raw).sum())) / (1.0 + len(null))
    return out


@register_rater
class FidRater(Rater):
    """Null percentile of KID between visualisations and examples (higher = closer than random image sets)."""

    name = "fid"
    description = "KID (unbiased MMD^2) of visualisations vs examples as a null percentile; FD and corrected FD extra"
    needs = frozenset({"visualizations", "examples", "embedder", "dataset"})
    components = ()
    raw_statistic = "kid"
    raw_direction = "lower"

    class Options(RaterOptions):
        """Options of ``fid`` (``rate.options.fid``)."""

        shrinkage: Literal["ledoit_wolf"] | Annotated[float, Field(ge=0, le=1)] = option(
            "ledoit_wolf",
            "FD covariance shrinkage: ledoit_wolf or a number in [0, 1] (extras only)",
            expected="'ledoit_wolf' or a number in [0, 1]",
        )
        normalize: bool = option(True, "L2-normalise embeddings first")
        n_null: int = option(200, "random sets in each feature's null", ge=2)
        null_pool: int = option(256, "dataset images the random sets are drawn from (≥ the examples per feature)", ge=2)
        kid_gamma: Literal["auto"] | Annotated[float, Field(gt=0, allow_inf_nan=False)] = option(
            "auto",
            "γ of KID's kernel: auto (1 for normalised embeddings, 1/D otherwise) or a positive number",
            expected="'auto' or a positive number",
        )

    @property
    def gamma(self) -> float | None:
        """γ of KID's kernel: 1 for normalised embeddings, KID's 1/D (None) otherwise, unless set."""
        g = self.options["kid_gamma"]
        if g == "auto":
            return 1.0 if self.options["normalize"] else None
        return float(g)

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        prep = l2_normalize if self.options["normalize"] else (lambda a: np.asarray(a, np.float64))
        vis_sets, ex_sets = [], []
        for f in track(features, "fid", len(features), "features"):
            vp, ep = ctx.vis_paths(f), ctx.example_paths(f)
            vis_sets.append(prep(ctx.embed_paths(vp)) if vp else np.zeros((0, 1)))
            ex_sets.append(prep(ctx.embed_paths(ep)) if ep else np.zeros((0, 1)))
        pool = prep(ctx.null_embeddings(int(self.options["null_pool"])))
        res = fid_scores(
            vis_sets, ex_sets, pool, int(self.options["n_null"]), self.seed, self.options["shrinkage"], self.gamma
        )
        extras = {k: v for k, v in res.items() if k != "I"}
        return self.table(
            features, I=res["I"], extras=extras, meta={"kid_gamma": self.gamma if self.gamma is not None else "1/D"}
        )
