"""``auto_I``: the study's I rebuilt from automatic components, fitted to human answers when there are some.

**Sources.** q̂13 from ``q13_source`` (default ``clip_vis_match.q1q3``) and q̂4 from ``q4_source``
(default ``clip_coherence.q4``); each must be ``rater.I`` or a declared component of a registered
rater — scores on the common scale, [0, 1], higher = more interpretable. A raw statistic or other
extra column (``fid.kid``, a distance) is refused, and so is a rater that reads human answers (its
scores would leak the answers auto_I is fitted to). The source raters run with their own options
from ``rate.options`` and this rater's seed (the embedding cache makes this cheap).

**Without human answers** (no ``rate.human``, or ``calibration: none``): Î = (q̂13 + q̂4)/2, the
mean of two null percentiles. Its meaning (written to ``<rater>.json`` as ``scale.kind =
"mean_of_null_percentiles"``, or ``"mean_of_sources"`` when a source is not a null percentile): in
[0, 1], higher = more interpretable, ≈ 0.5 on average when both components are at chance, 1 only
when both beat every random image set. It is *not* itself a null percentile (the mean of two chance
percentiles is not uniform) and not on the human scale.

**With human answers** (``rate.human``, read through :class:`raters.human.HumanRater`, its
``invalid`` policy included) the components and their weights are fitted to people:

1. per component, a monotone calibration to the matching human component — human q1·q3 ~ q̂13 and
   human q4 ~ q̂4 (``calibration``: ``isotonic`` or ``linear``), on the human scale (negative
   values, from q1 = 0 answers kept under ``rate.human_invalid: keep``, are fitted as they are);
2. a non-negative linear combination human I ~ b + w13·cal13 + w4·cal4 (``scipy.optimize.nnls`` on
   the centred columns, so the intercept b is free), fitted on *out-of-fold* calibrated components
   (inner K-fold) so an over-fitted calibration cannot buy itself weight. With well-calibrated,
   informative components w13 ≈ w4 ≈ 0.5 (human I = (q1·q3 + q4)/2); a component that does not
   predict its human counterpart gets a weight near 0.

Everything is fitted K-fold out of fold (``folds``, shuffled with the seed): the prediction for a
human-rated feature comes from a model (calibrations *and* weights) fitted without that feature's
answers; it is its ``I`` and its ``I_oof`` (``q1q3_oof``, ``q4_oof`` for the components; NaN for
features without answers). Features without answers get the model fitted on every rated feature.
Predictions are clipped to [0, 1] in the table; the fit itself is on the human scale. The JSON gets
``scale.kind = "fitted_to_human"``, the out-of-fold agreement (Spearman, Pearson, MAE, R²), the
final weights, and with ``linear`` calibration the weights on the sources themselves. Calibration
asked for with fewer than ``min_human`` (or ``folds``) usable rated features is an error.

Columns: ``I``; components ``q1q3``, ``q4`` (the sources, or their calibrated predictions when
fitted); extras ``I_raw`` = Î, ``q1q3_raw``, ``q4_raw`` (the sources), ``I_oof``, ``q1q3_oof``, ``q4_oof``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from autointerp.errors import ConfigError
from autointerp.rating import (
    RATERS,
    Rater,
    RaterOptions,
    RatingContext,
    ScoreTable,
    create_rater,
    option,
    rater_options,
    register_rater,
)

Calibrator = Literal["isotonic", "linear", "none"]
CALIBRATORS: tuple[str, ...] = get_args(Calibrator)
SOURCE_KEYS = {"q13_source": "q1q3", "q4_source": "q4"}
FULL_FIT = 1_000_000  # the inner-fold seed stream of the fit on every rated feature (outer folds use 0, 1, ...)


def combine(q13: np.ndarray, q4: np.ndarray) -> np.ndarray:
    """Î = (q̂1·q̂3 + q̂4) / 2."""
    return (np.asarray(q13, np.float64) + np.asarray(q4, np.float64)) / 2.0


# --------------------------------------------------------------------------------------------
# one calibration: source → human component (human scale, unclipped)
# --------------------------------------------------------------------------------------------
@dataclass
class Calibration:
    """A fitted monotone map from a source score to a human component (:meth:`predict`)."""

    method: str
    model: Any = None  # IsotonicRegression for 'isotonic'
    slope: float = 0.0
    intercept: float = 0.0

    @classmethod
    def fit(cls, method: str, x: np.ndarray, y: np.ndarray) -> Calibration:
        """Fit ``y ~ x`` non-decreasing: isotonic, or the least-squares line (its slope clipped at 0, i.e. the
        mean, when it falls); a constant when x does not vary."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if method not in ("isotonic", "linear"):
            raise ConfigError(f"rate.options.auto_I.calibration = {method!r}; expected one of {', '.join(CALIBRATORS)}")
        if len(x) < 2 or np.ptp(x) == 0:
            return cls("linear", None, 0.0, float(np.mean(y)))
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            return cls(method, IsotonicRegression(out_of_bounds="clip").fit(x, y))
        slope, intercept = np.polyfit(x, y, 1)
        if slope < 0:  # both scales are higher = more interpretable: a falling line is a constant at best
            return cls("linear", None, 0.0, float(np.mean(y)))
        return cls(method, None, float(slope), float(intercept))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions on the human scale (not clipped)."""
        x = np.asarray(x, np.float64)
        if self.model is not None and x.size:
            return np.asarray(self.model.predict(x), dtype=np.float64)
        return self.slope * x + self.intercept


def _fit_predict(method: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    return Calibration.fit(method, x_train, y_train).predict(x_test)


def _kfold(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=folds, shuffle=True, random_state=int(seed) % 2**32).split(np.zeros((n, 1))))


def cross_validated_calibration(x: np.ndarray, y: np.ndarray, method: str, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predictions of ``y`` from ``x`` (K-fold, shuffled with ``seed``; human scale, unclipped)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    oof = np.full(len(x), np.nan)
    for train, test in _kfold(len(x), folds, seed):
        oof[test] = _fit_predict(method, x[train], y[train], x[test])
    return oof


def nonnegative_combination(columns: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Least squares ``y ~ b + columns @ w`` with ``w ≥ 0`` and a free intercept ``b`` (NNLS on centred data)."""
    from scipy.optimize import nnls

    columns, y = np.asarray(columns, np.float64), np.asarray(y, np.float64)
    mean_c, mean_y = columns.mean(axis=0), float(y.mean())
    w, _ = nnls(columns - mean_c, y - mean_y)
    return mean_y - float(mean_c @ w), w


# --------------------------------------------------------------------------------------------
# the fitted model: two calibrations and their non-negative combination
# --------------------------------------------------------------------------------------------
@dataclass
class HumanFit:
    """Calibrations of q̂13 and q̂4 to the human components and the weights of their combination to human I."""

    cal13: Calibration
    cal4: Calibration
    intercept: float
    weights: np.ndarray  # (w13, w4), non-negative

    @classmethod
    def fit(
        cls,
        x13: np.ndarray,
        x4: np.ndarray,
        h13: np.ndarray,
        h4: np.ndarray,
        h_i: np.ndarray,
        method: str,
        folds: int,
        seed: int,
    ) -> HumanFit:
        """Fit on these rows only: the weights on inner out-of-fold calibrated components, the calibrations
        on all rows."""
        n = len(x13)
        inner = min(int(folds), n)
        if inner >= 2:
            c13 = cross_validated_calibration(x13, h13, method, inner, seed)
            c4 = cross_validated_calibration(x4, h4, method, inner, seed)
        else:  # a single row: nothing to cross-validate
            c13, c4 = np.asarray(h13, np.float64), np.asarray(h4, np.float64)
        intercept, weights = nonnegative_combination(np.column_stack([c13, c4]), h_i)
        return cls(Calibration.fit(method, x13, h13), Calibration.fit(method, x4, h4), intercept, weights)

    def predict(self, x13: np.ndarray, x4: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(calibrated q1q3, calibrated q4, I) on the human scale (not clipped)."""
        c13, c4 = self.cal13.predict(x13), self.cal4.predict(x4)
        return c13, c4, self.intercept + self.weights[0] * c13 + self.weights[1] * c4

    def describe(self) -> dict[str, Any]:
        """Weights (and, for linear calibrations, the implied weights on the sources) for the JSON."""
        out: dict[str, Any] = {
            "intercept": self.intercept,
            "q1q3": float(self.weights[0]),
            "q4": float(self.weights[1]),
        }
        if self.cal13.model is None and self.cal4.model is None:  # both linear: I is linear in the sources
            w13, w4 = float(self.weights[0]), float(self.weights[1])
            out["linear_in_sources"] = {
                "intercept": self.intercept + w13 * self.cal13.intercept + w4 * self.cal4.intercept,
                "q1q3": w13 * self.cal13.slope,
                "q4": w4 * self.cal4.slope,
            }
        return out


def _inner_seed(seed: int, fold: int) -> int:
    return int(np.random.default_rng([int(seed) % 2**32, fold, 0x617574]).integers(2**31))


def fit_out_of_fold(
    x13: np.ndarray,
    x4: np.ndarray,
    h13: np.ndarray,
    h4: np.ndarray,
    h_i: np.ndarray,
    method: str,
    folds: int,
    seed: int,
) -> dict[str, Any]:
    """Out-of-fold predictions (``q1q3``, ``q4``, ``I``; human scale) of a :class:`HumanFit` and the fit on all rows.

    Each fold's predictions come from a model fitted on the other folds only (calibrations and
    weights, the weights on inner out-of-fold calibrations), so no row's prediction uses its own
    human answers. Returns ``{"q1q3", "q4", "I": arrays, "fold_weights": [...], "model": HumanFit}``.
    """
    arrays = [np.asarray(a, np.float64) for a in (x13, x4, h13, h4, h_i)]
    x13, x4, h13, h4, h_i = arrays
    n = len(x13)
    if any(len(a) != n for a in arrays):
        raise ValueError("fit_out_of_fold: all inputs must have the same length")
    if not 2 <= folds <= n:
        raise ValueError(f"fit_out_of_fold: {folds} folds need between 2 and {n} rows")
    out = {name: np.full(n, np.nan) for name in ("q1q3", "q4", "I")}
    fold_weights = []
    for i, (train, test) in enumerate(_kfold(n, folds, seed)):
        model = HumanFit.fit(
            x13[train], x4[train], h13[train], h4[train], h_i[train], method, folds, _inner_seed(seed, i)
        )
        out["q1q3"][test], out["q4"][test], out["I"][test] = model.predict(x13[test], x4[test])
        fold_weights.append(model.describe())
    out["fold_weights"] = fold_weights
    out["model"] = HumanFit.fit(x13, x4, h13, h4, h_i, method, folds, _inner_seed(seed, FULL_FIT))
    return out


def agreement(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spearman, Pearson, MAE and R² of predictions against human scores."""
    from scipy import stats

    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    out = {"n": int(len(pred)), "mae": float(np.mean(np.abs(pred - truth)))}
    ss_res, ss_tot = float(np.sum((truth - pred) ** 2)), float(np.sum((truth - truth.mean()) ** 2))
    out["r2"] = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    constant = np.ptp(pred) == 0 or np.ptp(truth) == 0
    out["spearman"] = float("nan") if constant else float(stats.spearmanr(pred, truth).statistic)
    out["pearson"] = float("nan") if constant else float(stats.pearsonr(pred, truth).statistic)
    return out


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------
def check_source(spec: Any, key: str) -> tuple[str, str]:
    """``(rater, column)`` of a source option, refusing anything not on the common scale (one-line ConfigError)."""
    where = f"rate.options.auto_I.{key} = {spec!r}"
    rater, _, column = str(spec).partition(".")
    if not isinstance(spec, str) or not rater or not column:
        raise ConfigError(f"{where}: a source must look like rater.component, e.g. clip_coherence.q4")
    if rater == AutoI.name:
        raise ConfigError(f"{where}: auto_I cannot use itself")
    cls = RATERS.get(rater)  # unknown rater: one-line UserError listing the valid ones
    if cls.scale == "human" or "human" in cls.needs:
        raise ConfigError(
            f"{where}: {rater} scores are (fitted to) human answers, the very thing auto_I is compared "
            "with or fitted to; use an automatic rater"
        )
    if column == "I" or column in cls.components:
        return rater, column
    usable = ", ".join(f"{rater}.{c}" for c in ("I", *cls.components))
    if column == cls.raw_statistic:
        direction = f" ({cls.raw_direction} is better)" if cls.raw_direction else ""
        raise ConfigError(
            f"{where}: {spec} is {rater}'s raw statistic{direction}, not a component on the common scale; use {usable}"
        )
    raise ConfigError(
        f"{where}: {spec} is not {rater}.I or a declared component of {rater}, so its scale and "
        f"direction are unknown; use {usable}"
    )


@register_rater
class AutoI(Rater):
    """Î from component raters; with human answers, components and weights fitted out of fold."""

    name = "auto_I"
    description = "I from automatic q1q3 and q4; with human answers, calibrations and weights fitted out of fold"
    needs = frozenset({"visualizations", "examples", "embedder", "dataset"})
    components = ("q1q3", "q4")
    scale = "fitted_to_human"  # when there are no human answers the JSON says mean_of_null_percentiles
    raw_statistic = "I_raw"
    raw_direction = "higher"

    class Options(RaterOptions):
        """Options of ``auto_I`` (``rate.options.auto_I``)."""

        q13_source: str = option("clip_vis_match.q1q3", "rater.I or rater.component giving q̂13")
        q4_source: str = option("clip_coherence.q4", "rater.I or rater.component giving q̂4")
        calibration: Calibrator = option("isotonic", "isotonic, linear, or none (never fit to human answers)")
        folds: int = option(5, "outer (and inner) K-fold splits", ge=2)
        min_human: int = option(10, "fewest rated features a fit needs", ge=3)

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        self.folds = int(self.options["folds"])
        self.min_human = int(self.options["min_human"])
        for key in SOURCE_KEYS:
            check_source(self.options[key], key)  # the source raters' scales: not a plain type check

    def _sources(self, ctx: RatingContext, features: list[int]) -> dict[str, np.ndarray]:
        cols: dict[str, np.ndarray] = {}
        tables: dict[str, ScoreTable] = {}
        for key, comp in SOURCE_KEYS.items():
            rater, column = check_source(self.options[key], key)
            if rater not in tables:
                ctx.require(RATERS.get(rater))
                opts = rater_options(ctx, rater)  # the source's own options; its seed defaults to ours
                seed = opts.pop("seed", self.seed)
                tables[rater] = create_rater(rater, seed=seed, **opts).score(ctx, features)
            cols[comp] = tables[rater].column(column).astype(np.float64)
        return cols

    def _human(self, ctx: RatingContext) -> tuple[Any, list[int]] | None:
        if self.options["calibration"] == "none" or not ctx.available("human"):
            return None
        from raters.human import HumanRater

        scores = HumanRater(seed=self.seed).load(ctx)
        known = set(ctx.features)
        return scores, sorted(int(f) for f in scores.feature_ind if int(f) in known)

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        features = [int(f) for f in features]
        human = self._human(ctx)
        # every rated feature takes part in the fit, whichever features are asked for (batch invariance)
        all_feats = sorted(set(features) | set(human[1] if human else []))
        src = self._sources(ctx, all_feats)
        raw = combine(src["q1q3"], src["q4"])
        n_all = len(all_feats)
        cols = {"I": raw.copy(), "q1q3": src["q1q3"].copy(), "q4": src["q4"].copy()}
        oof = {name: np.full(n_all, np.nan) for name in cols}
        meta: dict[str, Any] = {
            "sources": {comp: self.options[key] for key, comp in SOURCE_KEYS.items()},
            "scale": self._scale_meta(fitted=False),
        }
        if human is not None:
            meta.update(self._fit(human, all_feats, src, raw, cols, oof))
        pos = {f: i for i, f in enumerate(all_feats)}
        idx = np.array([pos[f] for f in features], dtype=np.int64)
        extras = {
            "I_raw": raw,
            "q1q3_raw": src["q1q3"],
            "q4_raw": src["q4"],
            "I_oof": oof["I"],
            "q1q3_oof": oof["q1q3"],
            "q4_oof": oof["q4"],
        }
        return self.table(
            features,
            I=cols["I"][idx],
            components={"q1q3": cols["q1q3"][idx], "q4": cols["q4"][idx]},
            extras={k: v[idx] for k, v in extras.items()},
            meta=meta,
        )

    def _fit(
        self,
        human: tuple[Any, list[int]],
        all_feats: list[int],
        src: dict[str, np.ndarray],
        raw: np.ndarray,
        cols: dict[str, np.ndarray],
        oof: dict[str, np.ndarray],
    ) -> dict[str, Any]:
        """Fit to the human answers; fill ``cols`` (table values) and ``oof`` in place; return the JSON entries."""
        from raters.human import human_table

        scores, _ = human
        method = self.options["calibration"]
        h = human_table(scores, all_feats)
        targets = {"q1q3": h["q1q3"], "q4": h["q4"], "I": h["I"]}
        usable = np.isfinite(src["q1q3"]) & np.isfinite(src["q4"])
        for values in targets.values():
            usable &= np.isfinite(values)
        n = int(usable.sum())
        need = max(self.min_human, self.folds)
        if n < need:
            raise ConfigError(
                f"rate.options.auto_I: only {n} feature(s) have both automatic components and human answers; fitting "
                f"to humans needs at least {need} (min_human = {self.min_human}, folds = {self.folds}); rate more "
                "features, lower min_human, or set rate.options.auto_I.calibration: none"
            )
        fit = fit_out_of_fold(
            src["q1q3"][usable],
            src["q4"][usable],
            targets["q1q3"][usable],
            targets["q4"][usable],
            targets["I"][usable],
            method,
            self.folds,
            self.seed,
        )
        model: HumanFit = fit["model"]
        others = np.isfinite(src["q1q3"]) & np.isfinite(src["q4"]) & ~usable
        for name in cols:
            cols[name][:] = np.nan
        c13, c4, pred_i = model.predict(src["q1q3"][others], src["q4"][others])
        for name, values in (("q1q3", c13), ("q4", c4), ("I", pred_i)):
            cols[name][others] = np.clip(values, 0.0, 1.0)
        for name in cols:
            oof[name][usable] = np.clip(fit[name], 0.0, 1.0)
            cols[name][usable] = oof[name][usable]
        truth_i = targets["I"][usable]
        calibration = {
            "method": method,
            "folds": self.folds,
            "n": n,
            "n_negative_human_I": int((truth_i < 0).sum()),
            "weights": model.describe(),
            "fold_weights": fit["fold_weights"],
            "out_of_fold": agreement(oof["I"][usable], truth_i),
            "components_out_of_fold": {c: agreement(oof[c][usable], targets[c][usable]) for c in ("q1q3", "q4")},
            "uncalibrated": agreement(raw[usable], truth_i),  # no fitting involved: also out of sample
            "note": "I of human-rated features is the out-of-fold prediction (clipped to [0, 1]); fitted on the "
            "human scale; no in-sample agreement is reported",
        }
        return {"calibrated": True, "calibration": calibration, "scale": self._scale_meta(fitted=True)}

    def _scale_meta(self, fitted: bool) -> dict[str, Any]:
        """The JSON's ``scale`` entry for this run (overrides the class attribute's)."""
        if fitted:
            return {
                "kind": "fitted_to_human",
                "range": [0.0, 1.0],
                "calibrated_to_human": True,
                "raw_statistic": self.raw_statistic,
                "raw_direction": self.raw_direction,
                "meaning": "out-of-fold prediction of human I (clipped to [0, 1]) from the calibrated sources",
            }
        scales = {comp: RATERS.get(check_source(self.options[key], key)[0]).scale for key, comp in SOURCE_KEYS.items()}
        percentiles = all(s == "null_percentile" for s in scales.values())
        return {
            "kind": "mean_of_null_percentiles" if percentiles else "mean_of_sources",
            "range": [0.0, 1.0],
            "calibrated_to_human": False,
            "raw_statistic": self.raw_statistic,
            "raw_direction": self.raw_direction,
            "source_scales": scales,
            "meaning": "(q1q3 + q4)/2 of two scores on the common scale"
            + ("; about 0.5 when both are at chance" if percentiles else ""),
        }
