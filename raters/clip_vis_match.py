"""``clip_vis_match`` (→ the q1·q3 term): are the visualisations closer to the feature's examples
than to random images?

Raw statistic: mean cosine similarity between every visualisation and every example. Null: the
same statistic between the visualisations and ``n_null`` random sets (same size as the examples)
from a fixed pool of dataset images. q1q3 = calibrate(raw, null) in [0, 1]. Unclear visualisations
(Q1 low) and visualisations that promise something the examples do not show (Q3 low) both keep the
raw value near the null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autointerp.progress import track
from autointerp.rating import Rater, RatingContext, ScoreTable, register_rater
from raters._similarity import (
    NullSetOptions,
    calibrate,
    l2_normalize,
    null_summary,
    random_subsets,
)


def vis_match(
    vis_emb: np.ndarray, ex_emb: np.ndarray, pool_emb: np.ndarray, subsets: np.ndarray, calibration: str = "percentile"
) -> dict[str, float]:
    """Raw match, calibrated q1q3 and null statistics for one feature.

    ``subsets`` (n_null, k) indexes random sets of the pool with k = len(ex_emb).
    """
    if len(vis_emb) == 0 or len(ex_emb) == 0:
        return dict.fromkeys(("q1q3", "match", "null_mean", "null_std", "z", "p_value"), float("nan"))
    v, e, p = l2_normalize(vis_emb), l2_normalize(ex_emb), l2_normalize(pool_emb)
    raw = float((v @ e.T).mean())
    per_pool = (v @ p.T).mean(axis=0)  # mean similarity of the visualisations to each pool image
    null = per_pool[subsets].mean(axis=1)
    mean, sd, z, pval = null_summary(raw, null)
    return {
        "q1q3": calibrate(raw, null, calibration),
        "match": raw,
        "null_mean": mean,
        "null_std": sd,
        "z": z,
        "p_value": pval,
    }


@register_rater
class ClipVisMatch(Rater):
    """q1·q3 from how much closer the visualisations are to the examples than to random images."""

    name = "clip_vis_match"
    description = "q1*q3: similarity of the visualisations to the examples vs to random images, calibrated"
    needs = frozenset({"visualizations", "examples", "embedder", "dataset"})
    components = ("q1q3",)
    raw_statistic = "match"
    raw_direction = "higher"

    class Options(NullSetOptions):
        """Options of ``clip_vis_match`` (``rate.options.clip_vis_match``): the null's only."""

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        calibration = self.options["calibration"]  # checked by the Options model
        pool = ctx.null_embeddings(int(self.options["null_pool"]))
        rows = []
        subsets: dict[int, np.ndarray] = {}
        for f in track(features, "clip_vis_match", len(features), "features"):
            vis = ctx.embed_paths(ctx.vis_paths(f)) if ctx.vis_paths(f) else np.zeros((0, 1))
            ex = ctx.embed_paths(ctx.example_paths(f)) if ctx.example_paths(f) else np.zeros((0, 1))
            k = len(ex)
            if k and k not in subsets:
                rng = np.random.default_rng([self.seed, k, 0x766D])
                subsets[k] = random_subsets(len(pool), k, int(self.options["n_null"]), rng)
            rows.append(vis_match(vis, ex, pool, subsets.get(k, np.zeros((0, 0), np.int64)), calibration))
        cols = {key: np.array([r[key] for r in rows], dtype=np.float64) for key in rows[0]} if rows else {}
        q = cols.pop("q1q3", np.zeros(0))
        return self.table(features, I=q, components={"q1q3": q}, extras=cols)
