"""Statistics: Krippendorff's alpha, vectorised bootstrap/permutation correlations, group tests, groups."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from autointerp.analysis.groups import select_groups
from autointerp.analysis.stats import (
    _bootstrap_correlations,
    compare_two_groups,
    correlation,
    correlation_test,
    krippendorff_alpha_interval,
)

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units; interval alpha = 0.849.
KRIPPENDORFF_EXAMPLE = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)


def alpha_by_pairs(data: np.ndarray) -> float:
    """Reference: alpha from explicit ordered pairs of values (coincidence form), interval metric."""
    within, pooled = [], []
    for u in range(data.shape[1]):
        vals = data[:, u][np.isfinite(data[:, u])]
        if len(vals) < 2:
            continue
        pooled.extend(vals)
        pairs = [(a - b) ** 2 for a, b in itertools.permutations(vals, 2)]
        within.append(sum(pairs) / (len(vals) - 1))
    n = len(pooled)
    d_o = sum(within) / n
    d_e = sum((a - b) ** 2 for a, b in itertools.permutations(pooled, 2)) / (n * (n - 1))
    return 1 - d_o / d_e


def test_krippendorff_published_example() -> None:
    assert krippendorff_alpha_interval(KRIPPENDORFF_EXAMPLE) == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 5, size=(3, 15)).astype(float)
    data[rng.random(data.shape) < 0.25] = np.nan
    assert krippendorff_alpha_interval(data) == pytest.approx(alpha_by_pairs(data), rel=1e-12)


def test_krippendorff_hand_computed_two_coders() -> None:
    # coder A: 1, 2, 3 ; coder B: 1, 2, 4. n = 6 values, only unit 3 disagrees: D_o = (2 * 1 / 1) / 6 = 1/3.
    # pooled values 1,1,2,2,3,4: unordered pairs' squared differences 4*1 (1-2) + 2*4 (1-3) + 2*9 (1-4)
    # + 2*1 (2-3) + 2*4 (2-4) + 1 (3-4) = 41, ordered pairs 82 -> D_e = 82 / (6 * 5); alpha = 1 - 10/82.
    data = np.array([[1, 2, 3], [1, 2, 4]], dtype=float)
    assert krippendorff_alpha_interval(data) == pytest.approx(1 - 10 / 82)
    assert krippendorff_alpha_interval(np.array([[1, 2, 3], [1, 2, 3]], dtype=float)) == 1.0
    assert np.isnan(krippendorff_alpha_interval(np.ones((2, 4))))  # no variation: undefined


@pytest.mark.parametrize(
    "method,reference",
    [
        ("spearman", lambda x, y: stats.spearmanr(x, y).statistic),
        ("kendall", lambda x, y: stats.kendalltau(x, y).statistic),
        ("pearson", lambda x, y: stats.pearsonr(x, y).statistic),
    ],
)
def test_vectorised_bootstrap_equals_per_resample_scipy(method, reference) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 8, 40).astype(float)  # many ties
    y = np.round(0.3 * x + rng.normal(size=40), 1)
    idx = rng.integers(0, 40, size=(25, 40))
    ours = _bootstrap_correlations(x, y, method, idx)
    ref = np.array([reference(x[i], y[i]) for i in idx])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert correlation(x, y, method) == pytest.approx(reference(x, y))


def test_correlation_test_ci_and_permutation_p() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    res = correlation_test(x, y, "spearman", n_boot=500, n_perm=500, seed=0)
    assert res["value"] == pytest.approx(stats.spearmanr(x, y).statistic)
    lo, hi = res["ci95"]
    assert lo < res["value"] < hi and hi - lo < 0.25
    assert res["p"] == pytest.approx(1 / 501)  # no permutation reaches a strong correlation
    null = correlation_test(x, rng.normal(size=200), "kendall", n_boot=200, n_perm=500, seed=0)
    assert null["p"] > 0.01 and null["ci95"][0] < 0 < null["ci95"][1]
    again = correlation_test(x, y, "spearman", n_boot=500, n_perm=500, seed=0)
    assert again == res  # deterministic given the seed


def test_correlation_undefined_cases_have_reasons() -> None:
    res = correlation_test(np.arange(5.0), np.full(5, 0.5), "spearman", 100, 100)
    assert res["value"] is None and res["ci95"] is None and "constant" in res["reason"]
    res = correlation_test(np.array([1.0, 2.0]), np.array([2.0, 1.0]), "pearson", 100, 100)
    assert res["value"] is None and "only 2 feature" in res["reason"]


def test_compare_two_groups_against_scipy() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(1, 1, 30), rng.normal(0, 1, 25)
    res = compare_two_groups(a, b, n_boot=1000, seed=0)
    mw = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert res["mann_whitney_u"] == mw.statistic and res["p"] == pytest.approx(mw.pvalue)
    assert res["rank_biserial"] == pytest.approx(2 * mw.statistic / (30 * 25) - 1)
    assert res["difference"] == pytest.approx(a.mean() - b.mean())
    pooled = np.sqrt((29 * a.var(ddof=1) + 24 * b.var(ddof=1)) / 53)
    assert res["cohens_d"] == pytest.approx((a.mean() - b.mean()) / pooled)
    assert res["ci95"][0] < res["difference"] < res["ci95"][1]
    empty = compare_two_groups(a, np.array([]))
    assert empty["difference"] is None and "no rated" in empty["reason"]


def test_group_selection_positions_and_ties() -> None:
    # 20 features, importance = feature index except a tie block; median positions 8..11 for middle_n=4.
    features = np.arange(20)
    importance = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 9, 9, 9, 9, 9, 14, 15, 16, 17, 18, 19], dtype=float)
    groups = select_groups(features, importance, top_n=3, middle_n=4)
    assert groups.top.tolist() == [17, 18, 19]
    assert groups.middle.tolist() == [8, 9, 10, 11]  # 6 features tie at 9: lowest ids without priority
    priority = np.zeros(20)
    priority[[10, 12, 13, 9]] = 1  # rated features win the tie
    groups = select_groups(features, importance, top_n=3, middle_n=4, priority=priority)
    assert groups.middle.tolist() == [9, 10, 12, 13]
    assert any("6 features share importance 9" in n for n in groups.notes)


def test_group_selection_shrinks_when_too_few_features() -> None:
    groups = select_groups(np.arange(10), np.arange(10.0), top_n=40, middle_n=40)
    assert len(groups.top) == len(groups.middle) == 3 and not set(groups.top) & set(groups.middle)
    assert "shrunk" in groups.notes[0]
    tiny = select_groups(np.arange(2), np.arange(2.0), 40, 40)
    assert len(tiny.top) == 0 and "too few" in tiny.notes[-1]
    nan = select_groups(np.arange(12), np.r_[np.arange(11.0), np.nan], 2, 2)
    assert 11 not in nan.top  # NaN importance never enters a group
