"""Validity on the demo's image world (autointerp.demo) with the weight-free embedder.

Features are planted on the demo images: feature f ≥ 1 prefers one colour with decreasing strength
(its top examples are a decreasing share of that colour), and feature 0 is the demo's planted
perfectly coherent set (:func:`autointerp.demo.planted_coherent_set`: images sharing as many
concepts as the dataset allows). Ground truth is the demo's chance-corrected concept purity
(:func:`autointerp.demo.purity`) of each feature's top examples. Every similarity rater must beat the
`random` baseline in Spearman correlation with purity, and rank the planted feature first.
"""

from __future__ import annotations

import numpy as np
import pytest
from rater_harness import make_world
from scipy import stats

from autointerp import demo
from autointerp.demo.purity import purity
from autointerp.rating import RATERS, create_rater

SIMILARITY = ["clip_coherence", "clip_vis_match", "clip_label", "fid", "mis", "auto_I"]


@pytest.fixture(scope="module")
def demo_world(tmp_path_factory):
    base = demo.SyntheticDataset(1000, seed=1)
    planted, shared = demo.planted_coherent_set(base.concepts, k=12, seed=0)
    assert len(shared) >= 3  # the planted images share at least three concepts
    colours = ["red", "green", "blue", "yellow"]
    n = 10
    match = np.zeros((len(base), n), dtype=bool)
    for f in range(1, n):
        match[:, f] = base.concepts["colour"] == colours[f % 4]
    match[planted, 0] = True
    world = make_world(tmp_path_factory.mktemp("demo_world"), n_features=n, dataset=base, match=match)
    ctx = world.context()
    world.purity = np.array([purity(base.concepts, ctx.example_dataset_indices(f)) for f in world.features])
    assert world.purity[0] == 1.0 and world.purity[1:].max() < 1.0
    return world


def spearman(table, world, higher_is_better: bool = True) -> float:
    values = table.I if higher_is_better else -table.I
    return float(stats.spearmanr(values, world.purity).statistic)


@pytest.fixture(scope="module")
def random_rho(demo_world):
    return spearman(create_rater("random").score(demo_world.context(), demo_world.features), demo_world)


@pytest.mark.parametrize("name", SIMILARITY)
def test_similarity_rater_beats_random_and_ranks_the_planted_feature_first(name, demo_world, random_rho):
    table = create_rater(name).score(demo_world.context(), demo_world.features)
    higher = RATERS.get(name).higher_is_better
    rho = spearman(table, demo_world, higher)
    print(f"{name}: Spearman with concept purity {rho:.3f} (random {random_rho:.3f})")
    assert rho > 0.4 and rho > random_rho + 0.3
    if name == "mis":
        # MIS measures whether top- and bottom-quantile queries can be told apart, not coherence:
        # colour features separate their quantiles as well as the planted set does (all near 1), so
        # only the correlation with purity is required of it here (the harness world checks its plant)
        return
    score = table.I if higher else -table.I
    assert table.feature_ind[0] == 0
    if name == "fid":
        # the planted set and the red feature are both beyond every random set (I ≈ 0.998 each, a tie on
        # the null-percentile scale, whose nulls differ per feature): the unbiased raw KID must rank the
        # planted feature first, and its I must be beyond (nearly) every random set
        kid = table.extras["kid"]
        assert kid[0] < np.min(kid[1:]) and table.I[0] > 0.99, f"{name}: {np.round(kid, 3)}"
        return
    assert score[0] > np.max(score[1:]), f"{name}: {np.round(table.I, 2)}"
