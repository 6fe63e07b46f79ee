"""Vectorised statistics: correlations with bootstrap CIs and permutation p-values, group tests,
Krippendorff's alpha (interval).

Every function returns plain Python floats (``None`` where a value is undefined) so results go
straight into ``summary.json``. Undefined results carry a ``reason``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("spearman", "kendall", "pearson")
MIN_FEATURES = 3  # a correlation over fewer points is meaningless


def _float(value: Any) -> float | None:
    """A finite float, else None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``x`` with the same row of ``y`` (NaN for constant rows)."""
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    num = (x * y).sum(axis=-1)
    den = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    return np.where(den > 1e-12 * np.maximum(np.abs(num), 1.0), r, np.nan)


def rank_rows(values: np.ndarray) -> np.ndarray:
    """Average-tie ranks along the last axis."""
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def correlation(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """One correlation coefficient (NaN when undefined)."""
    from scipy import stats

    if method == "pearson":
        return float(rowwise_pearson(x[None], y[None])[0])
    if method == "spearman":
        return float(rowwise_pearson(rank_rows(x)[None], rank_rows(y)[None])[0])
    if method == "kendall":
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            return float("nan")
        return float(stats.kendalltau(x, y).statistic)
    raise ValueError(f"unknown correlation method {method!r}; expected one of {', '.join(METHODS)}")


def _resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` points is drawn in each bootstrap resample (B × n)."""
    b = len(idx)
    flat = (np.arange(b)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def _group_counts(values: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw counts summed over points of equal value (B × distinct values), and each point's group."""
    uniq, group = np.unique(values, return_inverse=True)
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(len(uniq)))
    return np.add.reduceat(counts[:, order], starts, axis=1), group


def _weighted_ranks(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average-tie rank of each point inside each resample, given the draw counts (B × n).

    Equivalent to ranking the resampled values, without sorting every resample.
    """
    per_group, group = _group_counts(values, counts)
    below = np.cumsum(per_group, axis=1) - per_group
    group_rank = below + (per_group + 1.0) / 2.0
    return group_rank[:, group]


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation with integer weights (draw counts)."""
    total = w.sum(axis=1, keepdims=True)
    mx = (w * x).sum(axis=1, keepdims=True) / total
    my = (w * y).sum(axis=1, keepdims=True) / total
    dx, dy = x - mx, y - my
    num = (w * dx * dy).sum(axis=1)
    den = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    return np.where(den > 1e-12 * np.maximum(np.abs(num), 1.0), r, np.nan)


def _tie_pairs(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Number of tied pairs within each resample (pairs with equal value, duplicates included)."""
    per_group, _ = _group_counts(values, counts)
    return (per_group * (per_group - 1.0) / 2.0).sum(axis=1)


_KENDALL_MATRIX_MAX_N = 2000  # above this the n × n sign matrix gets too big; loop over resamples


def _bootstrap_correlations(x: np.ndarray, y: np.ndarray, method: str, idx: np.ndarray) -> np.ndarray:
    """Correlation on each bootstrap resample (rows of ``idx``), vectorised via draw counts."""
    from scipy import stats

    n = len(x)
    if method == "kendall" and n > _KENDALL_MATRIX_MAX_N:
        out = np.full(len(idx), np.nan)
        for b, rows in enumerate(idx):
            xs, ys = x[rows], y[rows]
            if np.ptp(xs) > 0 and np.ptp(ys) > 0:
                out[b] = stats.kendalltau(xs, ys).statistic
        return out
    counts = _resample_counts(idx, n)
    if method == "pearson":
        return _weighted_pearson(np.broadcast_to(x, counts.shape), np.broadcast_to(y, counts.shape), counts)
    if method == "spearman":
        return _weighted_pearson(_weighted_ranks(x, counts), _weighted_ranks(y, counts), counts)
    # Kendall tau-b: (P - Q) = 1/2 sum_ij c_i c_j sign(x_i - x_j) sign(y_i - y_j).
    signs = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    p_minus_q = 0.5 * np.einsum("bi,bi->b", counts @ signs, counts)
    total = n * (n - 1) / 2.0
    n0 = np.full(len(idx), total)
    denom = np.sqrt((n0 - _tie_pairs(x, counts)) * (n0 - _tie_pairs(y, counts)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, p_minus_q / denom, np.nan)


def _permutation_correlations(x: np.ndarray, y: np.ndarray, method: str, perms: np.ndarray) -> np.ndarray:
    """Correlation of ``x`` with each permutation of ``y`` (rows of ``perms``)."""
    from scipy import stats

    if method == "pearson":
        return rowwise_pearson(np.broadcast_to(x, perms.shape), y[perms])
    if method == "spearman":
        rx, ry = rank_rows(x), rank_rows(y)
        return rowwise_pearson(np.broadcast_to(rx, perms.shape), ry[perms])
    return np.array([stats.kendalltau(x, y[p]).statistic for p in perms])


def correlation_test(
    x: np.ndarray,
    y: np.ndarray,
    method: str = "spearman",
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Correlation with a percentile bootstrap CI (resampling pairs) and a two-sided permutation p-value.

    Returns ``{"value", "ci95", "p", "n"}`` (``ci95``/``p`` are None when ``n_boot``/``n_perm`` is 0),
    or ``{"value": None, ..., "reason"}`` when the correlation is undefined (fewer than 3 pairs, or a
    constant input). The p-value is ``(1 + #{|r_perm| >= |r|}) / (1 + n_perm)``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    out: dict[str, Any] = {"value": None, "ci95": None, "p": None, "n": n}
    if n < MIN_FEATURES:
        out["reason"] = f"only {n} feature(s) with both values; need at least {MIN_FEATURES}"
        return out
    for name, values in (("x", x), ("y", y)):
        if np.ptp(values) == 0:
            which = "first" if name == "x" else "second"
            out["reason"] = f"the {which} variable is constant ({values[0]:g}) over all {n} features"
            return out
    r = correlation(x, y, method)
    out["value"] = _float(r)
    rng = np.random.default_rng(seed)
    if n_boot > 0:
        idx = rng.integers(0, n, size=(n_boot, n))
        boot = _bootstrap_correlations(x, y, method, idx)
        boot = boot[np.isfinite(boot)]
        if len(boot) >= max(10, n_boot // 2):
            alpha = (1.0 - ci) / 2.0
            lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
            out["ci95"] = [_float(lo), _float(hi)]
    if n_perm > 0:
        perms = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)
        null = _permutation_correlations(x, y, method, perms)
        exceed = np.count_nonzero(np.abs(null) >= abs(r) - 1e-12)
        out["p"] = float((1 + exceed) / (1 + n_perm))
    return out


def bootstrap_mean_difference(
    a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> list[float | None] | None:
    """Percentile bootstrap CI of ``mean(a) - mean(b)``, resampling each group independently."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if n_boot <= 0 or len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    diff = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(diff, [alpha, 1.0 - alpha])
    return [_float(lo), _float(hi)]


def compare_two_groups(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Compare values of group ``a`` with group ``b``: means, difference with bootstrap CI,
    two-sided Mann–Whitney U, rank-biserial correlation and Cohen's d (pooled SD)."""
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out: dict[str, Any] = {
        "n_a": len(a),
        "n_b": len(b),
        "mean_a": _float(a.mean()) if len(a) else None,
        "mean_b": _float(b.mean()) if len(b) else None,
        "difference": None,
        "ci95": None,
        "mann_whitney_u": None,
        "p": None,
        "rank_biserial": None,
        "cohens_d": None,
    }
    if len(a) == 0 or len(b) == 0:
        out["reason"] = "a group has no rated features"
        return out
    out["difference"] = _float(a.mean() - b.mean())
    out["ci95"] = bootstrap_mean_difference(a, b, n_boot=n_boot, seed=seed)
    if np.ptp(np.concatenate([a, b])) == 0:
        out["reason"] = "all values are equal; the test is undefined"
        return out
    test = stats.mannwhitneyu(a, b, alternative="two-sided")
    out["mann_whitney_u"] = _float(test.statistic)
    out["p"] = _float(test.pvalue)
    out["rank_biserial"] = _float(2.0 * test.statistic / (len(a) * len(b)) - 1.0)
    if len(a) >= 2 and len(b) >= 2:
        pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        out["cohens_d"] = _float((a.mean() - b.mean()) / pooled) if pooled > 0 else None
    return out


def krippendorff_alpha_interval(data: np.ndarray) -> float:
    """Krippendorff's alpha with the interval metric ``(a - b)^2``.

    ``data`` is coders × units with NaN for missing values. Units with fewer than two values are
    not pairable and are ignored. Returns NaN when there is no expected disagreement (all values
    equal) or fewer than two pairable values.

    ``alpha = 1 - D_o / D_e`` with ``D_o = 1/n * sum_u 1/(m_u - 1) * sum_{i != j in u} (v_i - v_j)^2``
    and ``D_e = 1/(n (n - 1)) * sum_{i != j over all pairable values} (v_i - v_j)^2``
    (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError("reliability data must be a 2-D array (coders × units)")
    present = np.isfinite(data)
    m = present.sum(axis=0)
    pairable = m >= 2
    values = np.where(present, data, 0.0)[:, pairable]
    mask = present[:, pairable]
    m = m[pairable]
    n = int(m.sum())
    if n < 2:
        return float("nan")
    # sum_{i != j} (v_i - v_j)^2 = 2 * (m * sum v^2 - (sum v)^2) within each unit.
    s1 = (values * mask).sum(axis=0)
    s2 = (values**2 * mask).sum(axis=0)
    within = 2.0 * (m * s2 - s1**2)
    d_o = float((within / (m - 1)).sum()) / n
    all_values = values[mask]
    total = 2.0 * (n * float((all_values**2).sum()) - float(all_values.sum()) ** 2)
    d_e = total / (n * (n - 1))
    if d_e <= 1e-15:
        return float("nan")
    return 1.0 - d_o / d_e


def describe(values: np.ndarray) -> dict[str, float | None]:
    """Mean, median, SD, min and max of the finite values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "min": None, "max": None}
    return {
        "n": len(values),
        "mean": _float(values.mean()),
        "median": _float(np.median(values)),
        "std": _float(values.std(ddof=1)) if len(values) > 1 else None,
        "min": _float(values.min()),
        "max": _float(values.max()),
    }
