"""The common scale: null percentiles (autointerp.calibration) and the rater contract's [0, 1] check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from autointerp.calibration import null_percentile
from autointerp.rating import Rater, ScoreTable, register_rater

RNG = np.random.default_rng(7)


def test_at_each_null_value_the_map_is_the_mean_percentile_of_scipy():
    null = RNG.normal(size=301)
    got = null_percentile(null, null)
    ref = np.array([stats.percentileofscore(null, v, kind="mean") / 100 for v in null])
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_ties_in_the_null_take_their_mid_percentile():
    null = np.array([0.0, 1.0, 1.0, 1.0, 2.0])
    assert null_percentile(1.0, null) == pytest.approx(stats.percentileofscore(null, 1.0, kind="mean") / 100)


def test_strictly_increasing_in_and_far_beyond_the_null():
    null = RNG.normal(0.4, 0.03, size=500)
    x = np.concatenate([np.linspace(-50, 50, 20001), [1e3, 1e5]])
    y = null_percentile(x, null)
    assert np.all(np.diff(y) > 0), "ranks of the raw statistic must survive the map"
    assert np.all((y > 0) & (y < 1))
    # beyond the null the map stays within its outermost half-step
    assert y[-1] > 1 - 0.5 / 500 and y[0] < 0.5 / 500


def test_lower_direction_is_the_mirror_and_nan_stays_nan():
    null = RNG.gamma(2.0, size=200)
    x = np.array([0.1, 1.0, 3.0, np.nan])
    lower = null_percentile(x, null, "lower")
    np.testing.assert_allclose(lower[:3], null_percentile(-x[:3], -null, "higher"))
    assert lower[0] > lower[1] > lower[2] and np.isnan(lower[3])


def test_a_planted_distance_is_scored_by_its_rank_among_random_sets():
    # a set closer than 90 % of random sets gets I ≈ 0.9 whatever the units of the distance
    null = RNG.uniform(10, 20, size=1000)
    assert null_percentile(11.0, null, "lower") == pytest.approx(0.9, abs=0.03)
    assert null_percentile(1100.0, null * 100, "lower") == pytest.approx(0.9, abs=0.03)


def test_unknown_direction_and_a_degenerate_null_are_refused():
    with pytest.raises(ValueError, match="direction 'up' is unknown"):
        null_percentile(1.0, [0.0, 1.0], "up")
    with pytest.raises(ValueError, match="at least 2 finite values"):
        null_percentile(1.0, [np.nan, 3.0])


def test_the_contract_refuses_scores_outside_the_unit_interval():
    class Distance(Rater):
        name = "planted_distance"
        components = ("q4",)

        def score(self, ctx, features):
            return self.table(features, I=[0.5, 3.0], components={"q4": [0.1, 0.2]})

    with pytest.raises(ValueError, match=r"planted_distance.*I of feature 8 is 3\.0, outside \[0, 1\]"):
        Distance().score(None, [7, 8])


def test_the_registry_refuses_a_lower_is_better_I_and_unknown_scales():
    with pytest.raises(TypeError, match="higher = more interpretable"):
        register_rater(type("LowerBetter", (Rater,), {"name": "planted_lower", "higher_is_better": False}))
    with pytest.raises(TypeError, match="scale = 'cosine'"):
        register_rater(type("OddScale", (Rater,), {"name": "planted_scale", "scale": "cosine"}))
    with pytest.raises(TypeError, match="raw_direction = 'up'"):
        register_rater(type("OddDir", (Rater,), {"name": "planted_dir", "raw_direction": "up"}))


def test_the_human_scale_may_leave_the_unit_interval():
    class Keep(Rater):
        name = "planted_keep"
        scale = "human"

        def score(self, ctx, features):
            return self.table(features, I=[-0.125])

    assert isinstance(Keep().score(None, [1]), ScoreTable)


def test_infinite_raw_values_lie_beyond_every_null_value():
    null = RNG.normal(size=100)
    np.testing.assert_array_equal(null_percentile(np.array([np.inf, -np.inf]), null), [1.0, 0.0])
    np.testing.assert_array_equal(null_percentile(np.array([np.inf, -np.inf]), null, "lower"), [0.0, 1.0])
