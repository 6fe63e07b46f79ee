"""``clip_coherence`` (→ q4): how alike a feature's dataset examples are, relative to random images.

Raw statistic: the mean pairwise cosine similarity of the examples' embeddings, after centring every
embedding on the mean embedding of the null pool (option ``center: pool``, the default; ``none`` gives
the plain cosine). Image embedders put every image in one narrow cone, so the plain cosine mostly measures
what all images share; centred, it measures what the examples share beyond a typical image, which separates
meaningful from random directions better on the validity benchmark (``benchmarks/rater_validity.py``; figures
in docs/validity.md). Null: the same statistic for ``n_null`` random sets of
the same size from the (centred) pool. q4 = calibrate(raw, null) in [0, 1] (see
:func:`raters._similarity.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from autointerp.progress import track
from autointerp.rating import Rater, RatingContext, ScoreTable, option, register_rater
from raters._similarity import (
    NullSetOptions,
    calibrate,
    l2_normalize,
    mean_pairwise_cosine,
    null_summary,
    random_subsets,
    subset_coherence,
)


def coherence_null(pool_emb: np.ndarray, k: int, n_null: int, seed: int) -> np.ndarray:
    """Mean pairwise cosine of ``n_null`` random ``k``-subsets of the pool (seeded by seed and k)."""
    z = l2_normalize(pool_emb)
    subsets = random_subsets(len(z), k, n_null, np.random.default_rng([seed, k, 0x636F68]))
    return subset_coherence(z @ z.T, subsets)


Center = Literal["pool", "none"]
CENTERS: tuple[str, ...] = get_args(Center)


def coherence_scores(
    example_sets: Sequence[np.ndarray],
    pool_emb: np.ndarray,
    n_null: int = 500,
    seed: int = 0,
    calibration: str = "percentile",
    center: str = "pool",
) -> dict[str, np.ndarray]:
    """Per set: raw coherence, calibrated q4, null mean/std, z and p-value (NaN for sets of < 2).

    ``center="pool"`` subtracts the pool's mean embedding from the examples and the pool first.
    """
    if center not in CENTERS:
        raise ValueError(f"center must be one of {', '.join(CENTERS)}, got {center!r}")
    pool_emb = np.asarray(pool_emb, dtype=np.float64)
    if center == "pool":
        mean = pool_emb.mean(axis=0)
        pool_emb = pool_emb - mean
        example_sets = [np.asarray(e, dtype=np.float64) - mean for e in example_sets]
    out = {k: np.full(len(example_sets), np.nan) for k in ("q4", "coherence", "null_mean", "null_std", "z", "p_value")}
    nulls: dict[int, np.ndarray] = {}
    for i, emb in enumerate(example_sets):
        k = len(emb)
        if k < 2:
            continue
        if k not in nulls:
            nulls[k] = coherence_null(pool_emb, k, n_null, seed)
        raw = mean_pairwise_cosine(emb)
        out["coherence"][i] = raw
        out["q4"][i] = calibrate(raw, nulls[k], calibration)
        out["null_mean"][i], out["null_std"][i], out["z"][i], out["p_value"][i] = null_summary(raw, nulls[k])
    return out


@register_rater
class ClipCoherence(Rater):
    """q4 from the coherence of the top dataset examples in embedding space."""

    name = "clip_coherence"
    description = "q4: mean pairwise cosine of the examples' embeddings, calibrated against random image sets"
    needs = frozenset({"examples", "embedder", "dataset"})
    components = ("q4",)
    raw_statistic = "coherence"
    raw_direction = "higher"

    class Options(NullSetOptions):
        """Options of ``clip_coherence`` (``rate.options.clip_coherence``): the null's, plus its own."""

        which: Literal["top", "bottom"] = option("top", "which dataset examples: top or bottom")
        center: Center = option("pool", "centre embeddings on the null pool's mean (pool) or not (none)")

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        calibration = self.options["calibration"]  # checked by the Options model
        center = self.options["center"]
        pool = ctx.null_embeddings(int(self.options["null_pool"]))
        sets = [
            ctx.embed_paths(ctx.example_paths(f, self.options["which"]))
            for f in track(features, "clip_coherence", len(features), "features")
        ]
        res = coherence_scores(sets, pool, int(self.options["n_null"]), self.seed, calibration, center)
        extras = {k: v for k, v in res.items() if k != "q4"}
        return self.table(features, I=res["q4"], components={"q4": res["q4"]}, extras=extras)
