"""Candidate coherence statistics (raters/_coherence_stats.py): each equals an independent implementation written
here, ignores what every image shares when it should, and ranks a planted coherent set above random sets."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from raters import _coherence_stats as cs


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pair_mean(m: np.ndarray) -> float:
    k = len(m)
    return float(np.mean([m[i, j] for i, j in itertools.permutations(range(k), 2)]))


def _cone_world(seed: int = 0, d: int = 24, n_pool: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings in a narrow cone (a large shared component, as post-ReLU embedders give): a pool of random
    images, a planted set that shares a concept direction, and a random set from the same distribution."""
    rng = np.random.default_rng(seed)
    common = 6.0 * np.ones(d)
    pool = common + rng.normal(size=(n_pool, d))
    concept = 3.0 * _unit(rng.normal(size=d))
    planted = common + concept + rng.normal(size=(8, d))
    random_set = common + rng.normal(size=(8, d))
    return pool, planted, random_set


def test_raw_and_centred_equal_direct_formulas() -> None:
    pool, planted, _ = _cone_world()
    z = _unit(planted)
    assert cs.raw_cosine(planted, pool) == pytest.approx(_pair_mean(z @ z.T))
    c = _unit(planted - pool.mean(axis=0))
    assert cs.centred_cosine(planted, pool) == pytest.approx(_pair_mean(c @ c.T))
    s = _unit((planted - pool.mean(axis=0)) / pool.std(axis=0))
    assert cs.standardised_cosine(planted, pool) == pytest.approx(_pair_mean(s @ s.T), rel=1e-6)


def test_centring_removes_what_every_image_shares() -> None:
    pool, planted, random_set = _cone_world()
    shift = 50.0 * np.ones(pool.shape[1])
    for name in ("centred", "standardised", "rank", "z", "knn", "whitened"):
        f = cs.CANDIDATES[name]
        assert f(planted + shift, pool + shift) == pytest.approx(f(planted, pool), abs=1e-9), name
    # the raw cosine does not: the shared component pushes every set towards 1
    assert cs.raw_cosine(random_set + shift, pool) > 0.99 > cs.raw_cosine(random_set, pool)


def test_whitened_equals_full_covariance_whitening() -> None:
    rng = np.random.default_rng(1)
    pool = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    emb = rng.normal(size=(6, 5))
    lam = 0.2
    cov = np.cov(pool.T)
    floor = lam * np.trace(cov) / 5
    w, v = np.linalg.eigh(cov + floor * np.eye(5))
    x = (emb - pool.mean(axis=0)) @ v / np.sqrt(w)  # coordinates under (Σ + floor·I)^(-1/2), rotated
    x = _unit(x)
    assert cs.whitened_cosine(emb, pool, shrinkage=lam) == pytest.approx(_pair_mean(x @ x.T), abs=1e-10)
    # a wide pool (n < D): the same number with or without a precomputed transform
    wide_pool, wide = rng.normal(size=(10, 30)), rng.normal(size=(4, 30))
    tr = cs.whitening(wide_pool)
    assert cs.whitened_cosine(wide, wide_pool, transform=tr) == cs.whitened_cosine(wide, wide_pool)


def test_rank_z_and_knn_equal_brute_force() -> None:
    pool, planted, _ = _cone_world(seed=2, n_pool=40)
    mu = pool.mean(axis=0)
    z, zp = _unit(planted - mu), _unit(pool - mu)
    k = len(z)
    pairs = list(itertools.permutations(range(k), 2))
    rank = np.mean([np.mean([zp_j @ z[a] < z[a] @ z[b] for zp_j in zp]) for a, b in pairs])
    assert cs.rank_coherence(planted, pool) == pytest.approx(rank)
    zs = []
    for a, b in itertools.permutations(range(k), 2):
        sims = zp @ z[a]
        zs.append((z[a] @ z[b] - sims.mean()) / sims.std(ddof=1))
    assert cs.z_coherence(planted, pool) == pytest.approx(np.mean(zs))
    m = 5
    shares = []
    for a in range(k):
        cands = [(z[a] @ z[b], 1) for b in range(k) if b != a] + [(z[a] @ p, 0) for p in zp]
        cands.sort(key=lambda t: -t[0])
        shares.append(np.mean([is_member for _, is_member in cands[:m]]))
    chance = (k - 1) / (k - 1 + len(zp))
    assert cs.knn_coherence(planted, pool, n_neighbours=m) == pytest.approx((np.mean(shares) - chance) / (1 - chance))


def test_pool_copies_of_examples_are_ignored() -> None:
    pool, planted, _ = _cone_world(seed=3)
    with_copies = np.concatenate([pool, planted[:3]])  # the null pool may contain some of the examples
    assert cs.knn_coherence(planted, with_copies) == pytest.approx(cs.knn_coherence(planted, pool), abs=0.05)
    assert cs.contrast_cosine(planted, with_copies) == pytest.approx(cs.contrast_cosine(planted, pool), abs=0.02)


def test_planted_set_beats_random_sets_where_the_raw_cosine_cannot() -> None:
    pool, planted, _ = _cone_world(seed=4)
    rng = np.random.default_rng(9)
    randoms = [6.0 * np.ones(pool.shape[1]) + rng.normal(size=(8, pool.shape[1])) for _ in range(30)]
    scores = cs.candidate_scores([planted, *randoms], pool)
    assert list(scores) == list(cs.CANDIDATES)
    margins = {}
    for name, values in scores.items():
        margins[name] = (values[0] - values[1:].mean()) / values[1:].std()
        if name not in ("raw", "contrast"):  # the two built on uncentred cosines
            assert values[0] > values[1:].max(), name
    # in a narrow cone the shared component swamps uncentred cosines: the planted set stands out far less
    assert margins["centred"] > 2 * max(margins["raw"], margins["contrast"], 0.1)


def test_degenerate_inputs() -> None:
    pool = np.random.default_rng(0).normal(size=(10, 4))
    for f in cs.CANDIDATES.values():
        assert np.isnan(f(pool[:1], pool))
    with pytest.raises(ValueError, match="expected"):
        cs.centred_cosine(np.ones((3, 4)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="unknown coherence statistic"):
        cs.candidate_scores([pool[:3]], pool, ["nope"])
