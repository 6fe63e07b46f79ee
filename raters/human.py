"""``human``: survey answers as a rater (wraps :func:`autointerp.human_answers.load_human_scores`).

Reads the study's CSV format (``model,layer,neuron,question1,text_question,question3,question4,
question5,question6``, optional ``participant``) and what the survey app exports; several files
and participants are averaged per feature, with the spread of I (``I_std``) and ``n_raters``.
Files come from ``rate.human``; the ``invalid`` policy (error | drop | clip | keep) from
``rate.human_invalid`` unless the rater option ``invalid`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

from autointerp.errors import ConfigError, UserError
from autointerp.rating import Rater, RaterOptions, RatingContext, ScoreTable, option, register_rater

InvalidPolicy = Literal["error", "drop", "clip", "keep"]
INVALID_POLICIES: tuple[str, ...] = get_args(InvalidPolicy)


def human_table(scores, features: Sequence[int]) -> dict[str, np.ndarray]:
    """Columns of ``scores`` (a HumanScores) aligned to ``features`` (NaN where not rated)."""
    pos = {int(f): i for i, f in enumerate(scores.feature_ind)}
    idx = np.array([pos.get(int(f), -1) for f in features], dtype=np.int64)
    hit = idx >= 0

    def take(values: np.ndarray) -> np.ndarray:
        out = np.full(len(features), np.nan)
        out[hit] = np.asarray(values, dtype=np.float64)[idx[hit]]
        return out

    cols = {name: take(getattr(scores, name)) for name in ("I", "q1", "q3", "q4", "q5", "q6", "I_std")}
    cols["n_raters"] = take(scores.n_raters)
    cols["n_raters"][~hit] = 0
    # the q1*q3 term, averaged over participants, follows from I = mean((q1 q3 + q4) / 2)
    cols["q1q3"] = 2.0 * cols["I"] - cols["q4"]
    return cols


@register_rater
class HumanRater(Rater):
    """Mean survey answers per feature (q = (Q-1)/4, I = mean over participants of (q1·q3 + q4)/2)."""

    name = "human"
    description = "survey answers (study CSV or survey-app export), averaged over participants with spread"
    needs = frozenset({"human"})
    components = ("q1", "q3", "q4", "q5", "q6", "q1q3")
    scale = "human"

    class Options(RaterOptions):
        """Options of ``human`` (``rate.options.human``)."""

        invalid: InvalidPolicy | None = option(
            None, "invalid answers: error, drop, clip or keep (null: rate.human_invalid)"
        )
        layer: str | None = option(None, "the layer column every answer must have (null: any one layer)")
        model: str | None = option(None, "the model column every answer must have (null: any one model)")

    def load(self, ctx: RatingContext):
        """The aggregated human scores of the run's answer files."""
        from autointerp.human_answers import load_human_scores

        paths = ctx.human_paths
        if not paths:
            raise UserError("rater 'human' needs survey answers: set rate.human: [answers.csv, ...] in the config")
        invalid = self.options["invalid"] or ctx.config.rate.human_invalid
        if invalid not in INVALID_POLICIES:
            raise ConfigError(
                f"rate.options.human.invalid = {invalid!r}; expected one of {', '.join(INVALID_POLICIES)}"
            )
        return load_human_scores(paths, invalid=invalid, layer=self.options["layer"], model=self.options["model"])

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        scores = self.load(ctx)
        cols = human_table(scores, features)
        rated = set(int(f) for f in scores.feature_ind)
        outside = sorted(rated - set(int(f) for f in ctx.features)) if ctx.features else []
        meta = {
            "files": [str(p) for p in ctx.human_paths],
            "n_participants": int(scores.n_participants),
            "n_features_rated": len(rated),
            "notes": list(scores.notes),
        }
        if outside:
            meta["rated_features_not_in_run"] = outside
        return self.table(
            features,
            I=cols["I"],
            components={c: cols[c] for c in self.components},
            extras={"I_std": cols["I_std"], "n_raters": cols["n_raters"]},
            meta=meta,
        )
