"""``random``: seeded uniform scores, the baseline every useful rater must beat."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autointerp.rating import Rater, RatingContext, ScoreTable, register_rater


def random_components(features: Sequence[int], seed: int) -> dict[str, np.ndarray]:
    """Uniform q1, q3, q4 per feature from a generator seeded by (seed, feature): the same
    feature always gets the same numbers, whatever else is scored with it."""
    rows = np.array([np.random.default_rng([seed, int(f), 0x72616E64]).random(3) for f in features]).reshape(-1, 3)
    return {"q1": rows[:, 0], "q3": rows[:, 1], "q4": rows[:, 2]}


@register_rater
class RandomRater(Rater):
    """Random baseline: q1, q3, q4 ~ U(0, 1), I = (q1·q3 + q4)/2."""

    name = "random"
    description = "seeded uniform q1, q3, q4 and I = (q1*q3 + q4)/2; the baseline every useful rater must beat"
    components = ("q1", "q3", "q4")
    scale = "uniform"

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        comp = random_components(features, self.seed)
        return self.table(features, I=(comp["q1"] * comp["q3"] + comp["q4"]) / 2, components=comp)
