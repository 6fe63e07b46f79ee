"""`fid`: an unbiased raw statistic (KID) mapped to the common scale against a null of random image sets.

Planted cases with known answers: two sets drawn from one distribution have a population MMD² of 0
whatever the distribution's spread, so the statistic that drives I must average 0 at every spread,
while the plug-in Fréchet distance (what I was before) grows with the spread; a shifted distribution
must score worse. References are written out here (loops over kernel_inception_distance, numpy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autointerp.calibration import null_percentile
from autointerp.errors import ConfigError
from autointerp.rating import RATERS, create_rater
from raters.fid import (
    FidRater,
    fid_scores,
    frechet_distance,
    kernel_inception_distance,
    kid_null,
    null_subsets,
)

SPREADS = (0.1, 0.5, 1.0)


class StubContext:
    """The few RatingContext methods `fid` uses, over planted embeddings (a path is a key)."""

    def __init__(self, vis: dict[int, np.ndarray], examples: dict[int, np.ndarray], pool: np.ndarray) -> None:
        self.rows: dict[Path, np.ndarray] = {}
        self.vis: dict[int, list[Path]] = {}
        self.examples: dict[int, list[Path]] = {}
        for kind, sets, out in (("vis", vis, self.vis), ("ex", examples, self.examples)):
            for f, emb in sets.items():
                out[f] = [Path(f"{kind}/{f}/{j}") for j in range(len(emb))]
                self.rows.update(zip(out[f], emb, strict=True))
        self.pool = pool
        self.null_sizes: list[int] = []

    def vis_paths(self, feature: int) -> list[Path]:
        return list(self.vis.get(feature, []))

    def example_paths(self, feature: int, which: str = "top") -> list[Path]:
        assert which == "top"
        return list(self.examples.get(feature, []))

    def embed_paths(self, paths: list[Path]) -> np.ndarray:
        return np.stack([self.rows[p] for p in paths])

    def null_embeddings(self, size: int = 256) -> np.ndarray:
        self.null_sizes.append(size)
        return self.pool[:size]


def gaussian_sets(
    rng: np.random.Generator, dim: int, spread: float, shift: float = 0.0, n_vis: int = 4, n_ex: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """4 'visualisations' and 8 'examples' of one isotropic Gaussian (tr Σ = spread²) around a random centre;
    the visualisations' centre moved by ``shift`` along a random direction."""
    centre = rng.normal(size=dim) / np.sqrt(dim)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    vis = centre + shift * direction + spread * rng.normal(size=(n_vis, dim)) / np.sqrt(dim)
    ex = centre + spread * rng.normal(size=(n_ex, dim)) / np.sqrt(dim)
    return vis, ex


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def test_same_distribution_statistic_is_unbiased_at_every_spread_while_fd_grows():
    """The issue's planted case: 4 vs 8 samples of one distribution, 400 repeats per spread (64-d)."""
    rng = np.random.default_rng(0)
    stats: dict[str, list[tuple[float, float]]] = {"kid": [], "kid_unit": [], "fd": [], "fd_corrected": []}
    for spread in SPREADS:
        pairs = [gaussian_sets(rng, 64, spread) for _ in range(400)]
        stats["kid"].append(mean_and_se([kernel_inception_distance(v, e) for v, e in pairs]))
        stats["kid_unit"].append(mean_and_se([kernel_inception_distance(v, e, gamma=1.0) for v, e in pairs]))
        stats["fd"].append(mean_and_se([frechet_distance(v, e) for v, e in pairs]))
        stats["fd_corrected"].append(mean_and_se([frechet_distance(v, e, bias_corrected=True) for v, e in pairs]))
    for name in ("kid", "kid_unit"):  # 0 in expectation at every spread, and so the same at every spread
        for mean, se in stats[name]:
            assert abs(mean) < 4 * se, (name, stats[name])
        for (m1, s1), (m2, s2) in zip(stats[name], stats[name][1:], strict=False):
            assert abs(m1 - m2) < 4 * np.hypot(s1, s2), (name, stats[name])
    # the plug-in FD (I before this change) grows like spread² on identical distributions
    fd = [m for m, _ in stats["fd"]]
    assert fd[0] < fd[1] < fd[2] and fd[2] > 50 * fd[0]
    for mean, se in stats["fd"]:
        assert mean > 20 * se
    # correcting the mean term alone leaves a covariance-term bias that still grows with the spread
    fdc = [m for m, _ in stats["fd_corrected"]]
    assert fdc[0] < fdc[1] < fdc[2] and all(m > 20 * se for m, se in stats["fd_corrected"])
    assert fdc[2] < fd[2]  # ... but smaller than the plug-in bias


def test_the_rater_column_behind_I_is_unbiased_and_a_shift_scores_worse():
    """Through the rater (default options: normalised embeddings, γ = 1) on a world of 30 concept clusters
    (the null pool: random images of random concepts): per spread, 100 features whose 4 visualisations come
    from their 8 examples' distribution and 100 whose visualisations are shifted away from it."""
    rng = np.random.default_rng(1)
    dim, n = 16, 100
    centres = rng.normal(size=(30, dim)) / np.sqrt(dim) + 1.5 / np.sqrt(dim)  # away from the origin

    def draw(centre: np.ndarray, spread: float, m: int) -> np.ndarray:
        return centre + spread * rng.normal(size=(m, dim)) / np.sqrt(dim)

    pool = np.concatenate([draw(centres[rng.integers(30)], 0.5, 1) for _ in range(300)])
    vis, ex, groups = {}, {}, {}
    f = 0
    for spread in SPREADS:
        for shift in (0.0, 1.2):
            groups[(spread, shift)] = np.arange(f, f + n)
            for _ in range(n):
                centre, direction = centres[rng.integers(30)], rng.normal(size=dim)
                vis[f] = draw(centre + shift * direction / np.linalg.norm(direction), spread, 4)
                ex[f] = draw(centre, spread, 8)
                f += 1
    ctx = StubContext(vis, ex, pool)
    table = create_rater("fid", seed=4, n_null=100).score(ctx, list(range(f)))
    assert FidRater.raw_statistic == "kid" and FidRater.raw_direction == "lower"
    raw = table.column(FidRater.raw_statistic)
    same = [mean_and_se(raw[groups[(s, 0.0)]]) for s in SPREADS]
    for mean, se in same:
        assert abs(mean) < 4 * se, same
    for (m1, s1), (m2, s2) in zip(same, same[1:], strict=False):
        assert abs(m1 - m2) < 4 * np.hypot(s1, s2), same
    fd_same = [mean_and_se(table.extras["fd"][groups[(s, 0.0)]]) for s in SPREADS]
    assert fd_same[0][0] < fd_same[1][0] < fd_same[2][0]  # the old I (the plug-in FD) ranked these by spread
    assert all(m > 20 * se for m, se in fd_same)
    for s in SPREADS:
        (m_shift, se_shift), (m_ok, se_ok) = mean_and_se(raw[groups[(s, 1.2)]]), mean_and_se(raw[groups[(s, 0.0)]])
        assert m_shift > m_ok + 4 * np.hypot(se_shift, se_ok), s
        (i_shift, sei_shift), (i_ok, sei_ok) = (
            mean_and_se(table.I[groups[(s, 1.2)]]),
            mean_and_se(table.I[groups[(s, 0.0)]]),
        )
        assert i_shift < i_ok - 4 * np.hypot(sei_shift, sei_ok), s
    assert np.all((table.I >= 0) & (table.I <= 1)) and np.isfinite(table.I).all()
    assert ctx.null_sizes == [256]


def test_I_is_the_null_percentile_of_kid_against_random_sets_of_the_examples_size():
    rng = np.random.default_rng(2)
    pool = rng.normal(size=(40, 12))
    vis = [rng.normal(size=(4, 12)) + 1.0, rng.normal(size=(4, 12)), rng.normal(size=(3, 12))]
    ex = [rng.normal(size=(8, 12)) + 1.0, rng.normal(size=(8, 12)) + 2.0, rng.normal(size=(6, 12))]
    res = fid_scores(vis, ex, pool, n_null=60, seed=9, gamma=0.5)
    for i, (v, e) in enumerate(zip(vis, ex, strict=True)):
        subsets = null_subsets(len(pool), len(e), 60, 9)
        assert subsets.shape == (60, len(e)) and all(len(set(row)) == len(e) for row in subsets)
        null = np.array([kernel_inception_distance(v, pool[s], gamma=0.5) for s in subsets])  # a plain loop
        np.testing.assert_allclose(kid_null(v, pool, subsets, 0.5), null, rtol=1e-10, atol=1e-12)
        raw = kernel_inception_distance(v, e, gamma=0.5)
        assert res["kid"][i] == pytest.approx(raw)
        assert res["I"][i] == pytest.approx(float(null_percentile(raw, null, "lower")))
        assert res["null_mean"][i] == pytest.approx(null.mean())
        assert res["null_std"][i] == pytest.approx(null.std(ddof=1))
        assert res["p_value"][i] == pytest.approx((1 + (null <= raw).sum()) / 61)
        assert res["fd"][i] == pytest.approx(frechet_distance(v, e))
    # direction: the visualisations that sit on their examples beat random sets; the far ones do not
    assert res["I"][0] > 0.9 and res["I"][1] < 0.1
    # the null depends only on (seed, set size): a feature's row does not depend on the other features
    alone = fid_scores(vis[1:2], ex[1:2], pool, n_null=60, seed=9, gamma=0.5)
    assert alone["I"][0] == res["I"][1] and alone["null_mean"][0] == res["null_mean"][1]
    other_seed = fid_scores(vis[1:2], ex[1:2], pool, n_null=60, seed=10, gamma=0.5)
    assert other_seed["null_mean"][0] != res["null_mean"][1]
    # fewer than two images on either side: NaN, not a crash
    short = fid_scores([vis[0][:1], vis[0]], [ex[0], ex[0][:1]], pool, n_null=10)
    assert np.isnan(short["I"]).all() and np.isnan(short["kid"]).all()


def test_bias_corrected_fd_subtracts_the_expected_mean_term_bias():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(4, 30)), rng.normal(size=(8, 30)) + 0.3
    plugin = frechet_distance(x, y, 0.2)
    d = x.mean(0) - y.mean(0)
    bias = np.trace(np.cov(x, rowvar=False)) / 4 + np.trace(np.cov(y, rowvar=False)) / 8
    assert frechet_distance(x, y, 0.2, bias_corrected=True) == pytest.approx(plugin - bias, rel=1e-9)
    assert d @ d - bias < d @ d  # the correction can make it negative: not clipped
    same = rng.normal(size=(4, 30)), rng.normal(size=(8, 30))
    assert np.isnan(frechet_distance(x[:1], y, bias_corrected=True))
    assert np.isfinite(frechet_distance(*same, bias_corrected=True))


def test_fid_is_higher_is_better_on_the_null_percentile_scale():
    cls = RATERS.get("fid")
    assert cls.higher_is_better and cls.scale == "null_percentile"
    assert cls.raw_statistic == "kid" and cls.raw_direction == "lower" and cls.components == ()
    meta = create_rater("fid").metadata()["scale"]
    assert meta["kind"] == "null_percentile" and meta["raw_direction"] == "lower" and meta["range"] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_null": 1}, r"rate.options.fid.n_null = 1; expected an integer ≥ 2"),
        ({"n_null": "many"}, r"rate.options.fid.n_null = 'many'"),
        ({"null_pool": 0}, r"rate.options.fid.null_pool = 0"),
        ({"null_pool": 2.5}, r"rate.options.fid.null_pool = 2.5"),
        ({"kid_gamma": -1}, r"rate.options.fid.kid_gamma = -1; expected 'auto' or a positive number"),
        ({"kid_gamma": "big"}, r"rate.options.fid.kid_gamma = 'big'"),
        ({"normalize": "yes"}, r"rate.options.fid.normalize = 'yes'"),
        ({"shrinkage": 2}, r"rate.options.fid.shrinkage = 2"),
        ({"shrinkage": "oas"}, r"rate.options.fid.shrinkage = 'oas'"),
    ],
)
def test_bad_options_are_one_line_config_errors(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        create_rater("fid", **options)
    assert "\n" not in str(info.value)


def test_kernel_scale_follows_normalisation():
    assert create_rater("fid").gamma == 1.0
    assert create_rater("fid", normalize=False).gamma is None  # KID's 1/D
    assert create_rater("fid", kid_gamma=0.25).gamma == 0.25
    x, y = np.ones((3, 8)), np.zeros((3, 8))
    assert kernel_inception_distance(x, y) == pytest.approx(kernel_inception_distance(x, y, gamma=1 / 8))
