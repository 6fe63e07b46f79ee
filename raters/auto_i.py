"""``auto_I``: the study's I rebuilt from automatic components, calibrated to humans when possible.

Î = (q̂1·q̂3 + q̂4)/2, with q̂1·q̂3 from ``q13_source`` (default ``clip_vis_match.q1q3``) and q̂4
from ``q4_source`` (default ``clip_coherence.q4``); the source raters run with their own options
from ``rate.options`` and this rater's seed (the embedding cache makes this cheap).

When human answers are configured (``rate.human``) and enough features have both, a monotone
calibration Î → human I (``isotonic`` or ``linear``) is fitted with K-fold cross-validation: the
``I`` of a human-rated feature is its *out-of-fold* prediction (also in the ``I_oof`` column, NaN
elsewhere, which the analysis uses for agreement) and the reported agreement (Spearman, Pearson,
MAE, R²) is out-of-fold only; features without answers get the prediction of the model fitted on
all rated features. Without answers, ``I`` = Î.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.errors import ConfigError
from autointerp.rating import Rater, RatingContext, ScoreTable, create_rater, rater_options, register_rater

CALIBRATORS = ("isotonic", "linear", "none")


def combine(q13: np.ndarray, q4: np.ndarray) -> np.ndarray:
    """Î = (q̂1·q̂3 + q̂4) / 2."""
    return (np.asarray(q13, np.float64) + np.asarray(q4, np.float64)) / 2.0


def _fit_predict(method: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        model = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        return model.fit(x_train, y_train).predict(x_test)
    if method == "linear":
        slope, intercept = np.polyfit(x_train, y_train, 1) if np.ptp(x_train) > 0 else (0.0, float(np.mean(y_train)))
        return np.clip(slope * x_test + intercept, 0.0, 1.0)
    raise ConfigError(f"rate.options.auto_I.calibration = {method!r}; expected one of {', '.join(CALIBRATORS)}")


def cross_validated_calibration(x: np.ndarray, y: np.ndarray, method: str, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions of ``y`` from ``x`` (K-fold, shuffled with ``seed``)."""
    from sklearn.model_selection import KFold

    oof = np.full(len(x), np.nan)
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(x):
        oof[test] = _fit_predict(method, x[train], y[train], x[test])
    return oof


def agreement(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spearman, Pearson, MAE and R² of predictions against human I."""
    from scipy import stats

    out = {"n": int(len(pred)), "mae": float(np.mean(np.abs(pred - truth)))}
    ss_res, ss_tot = float(np.sum((truth - pred) ** 2)), float(np.sum((truth - truth.mean()) ** 2))
    out["r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    constant = np.ptp(pred) == 0 or np.ptp(truth) == 0
    out["spearman"] = float("nan") if constant else float(stats.spearmanr(pred, truth).statistic)
    out["pearson"] = float("nan") if constant else float(stats.pearsonr(pred, truth).statistic)
    return out


def _source(spec: str) -> tuple[str, str]:
    rater, _, column = str(spec).partition(".")
    if not rater or not column:
        raise ConfigError(
            f"rate.options.auto_I: source {spec!r} must look like rater.component, e.g. clip_coherence.q4"
        )
    return rater, column


@register_rater
class AutoI(Rater):
    """Î = (q̂1·q̂3 + q̂4)/2 from component raters, with cross-validated calibration to human I."""

    name = "auto_I"
    description = "I-hat = (q1q3 + q4)/2 from component raters; calibrated to human answers with out-of-fold agreement"
    needs = frozenset({"visualizations", "examples", "embedder", "dataset"})
    components = ("q1q3", "q4")
    defaults = {
        "q13_source": "clip_vis_match.q1q3",
        "q4_source": "clip_coherence.q4",
        "calibration": "isotonic",
        "folds": 5,
        "min_human": 10,
    }

    def _components(self, ctx: RatingContext, features: list[int]) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        tables: dict[str, ScoreTable] = {}
        for key in ("q13_source", "q4_source"):
            rater, column = _source(self.options[key])
            if rater == self.name:
                raise ConfigError(f"rate.options.auto_I.{key}: auto_I cannot use itself")
            if rater not in tables:
                opts = rater_options(ctx, rater)  # the source's own options; its seed defaults to ours
                seed = opts.pop("seed", self.seed)
                tables[rater] = create_rater(rater, seed=seed, **opts).score(ctx, features)
            cols[key] = tables[rater].column(column).astype(np.float64)
        return cols

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        method = self.options["calibration"]
        if method not in CALIBRATORS:
            raise ConfigError(f"rate.options.auto_I.calibration = {method!r}; expected one of {', '.join(CALIBRATORS)}")
        features = [int(f) for f in features]
        human = None
        if method != "none" and ctx.available("human"):
            from raters.human import HumanRater, human_table

            scores = HumanRater(seed=self.seed).load(ctx)
            known = set(ctx.features)
            train_feats = sorted(int(f) for f in scores.feature_ind if int(f) in known)
            human = (scores, train_feats)
        all_feats = sorted(set(features) | set(human[1] if human else []))
        cols = self._components(ctx, all_feats)
        raw = combine(cols["q13_source"], cols["q4_source"])
        pos = {f: i for i, f in enumerate(all_feats)}
        idx = np.array([pos[f] for f in features], dtype=np.int64)
        meta: dict[str, Any] = {"sources": {"q1q3": self.options["q13_source"], "q4": self.options["q4_source"]}}
        final = raw.copy()
        oof_col = np.full(len(all_feats), np.nan)
        if human is not None:
            scores, train_feats = human
            h = human_table(scores, all_feats)["I"]
            usable = np.isfinite(raw) & np.isfinite(h)
            n = int(usable.sum())
            folds = int(self.options["folds"])
            if n < max(int(self.options["min_human"]), folds, 2):
                meta["calibration"] = {"method": method, "skipped": f"only {n} features have both Î and human I"}
            else:
                x, y = raw[usable], h[usable]
                oof = cross_validated_calibration(x, y, method, folds, self.seed)
                final = np.full(len(all_feats), np.nan)
                others = np.isfinite(raw) & ~usable
                if others.any():
                    final[others] = _fit_predict(method, x, y, raw[others])
                final[usable] = oof
                oof_col[usable] = oof
                meta["calibrated"] = True
                meta["calibration"] = {
                    "method": method,
                    "folds": folds,
                    "out_of_fold": agreement(oof, y),
                    "uncalibrated": agreement(x, y),  # no fitting involved: also out of sample
                    "note": "I of human-rated features is the out-of-fold prediction; no in-sample fit is reported",
                }
        return self.table(
            features,
            I=final[idx],
            components={"q1q3": cols["q13_source"][idx], "q4": cols["q4_source"][idx]},
            extras={"I_raw": raw[idx], "I_oof": oof_col[idx]},
            meta=meta,
        )
