"""Agreement between raters (automatic vs human or reference) and the human noise ceiling.

Rank agreement (Spearman, Kendall) is reported for every pair. Krippendorff's alpha and the mean
absolute error compare *values*, so they only mean something when both scores are on the same
scale: an automatic rater calibrated to the human scale *out of fold* (a ``<component>_oof``
column, e.g. ``I_oof`` written by ``auto_I``) against human answers, or two human raters. For every
other pair they are ``None`` with ``alpha_reason`` :data:`ALPHA_UNCALIBRATED`.

The noise ceiling answers "how well could an automatic rater agree with the *mean* human rater?":
it is the reliability of that mean (split-half, Spearman–Brown corrected to the full number of
raters); a rater that knew each feature's true score exactly would reach a correlation of about
the square root of that reliability with the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autointerp.analysis.inputs import AGREEMENT_COMPONENTS, RaterScores, align
from autointerp.analysis.stats import MIN_FEATURES, _float, correlation, krippendorff_alpha_interval
from autointerp.human_answers import AnswerTable

#: why alpha and MAE are not computed for a pair whose scales were not made comparable
ALPHA_UNCALIBRATED = "n/a (uncalibrated scale)"
#: why alpha and MAE are not computed for a rater fitted to human answers without out-of-fold predictions
ALPHA_IN_SAMPLE = "n/a (calibrated in sample; no out-of-fold predictions)"
#: the noise ceiling's reason with a single human rater
ONE_RATER = "no noise ceiling: only one rater"


def _undefined_reason(x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> str | None:
    if len(x) < MIN_FEATURES:
        return f"only {len(x)} feature(s) scored by both; need at least {MIN_FEATURES}"
    for name, v in zip(names, (x, y), strict=True):
        if np.ptp(v) == 0:
            return f"{name} is constant ({v[0]:g}) over the {len(v)} shared features"
    return None


def pair_agreement(
    x: np.ndarray,
    y: np.ndarray,
    names: tuple[str, str] = ("x", "y"),
    same_scale: bool = True,
    alpha_reason: str = ALPHA_UNCALIBRATED,
) -> dict[str, Any]:
    """Spearman, Kendall and, when ``same_scale``, Krippendorff's alpha (interval) and mean absolute error.

    NaN pairs are left out; ``n`` says how many pairs were used. Undefined values are None with a
    ``reason``; alpha and MAE of scales that are not comparable are None with ``alpha_reason``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out: dict[str, Any] = {"n": int(len(x)), "spearman": None, "kendall": None, "krippendorff_alpha": None, "mae": None}
    if same_scale:
        out["mae"] = _float(np.abs(x - y).mean()) if len(x) else None
        if len(x) >= 2:
            out["krippendorff_alpha"] = _float(krippendorff_alpha_interval(np.vstack([x, y])))
    else:
        out["alpha_reason"] = alpha_reason
    reason = _undefined_reason(x, y, names)
    if reason:
        out["reason"] = reason
        return out
    out["spearman"] = _float(correlation(x, y, "spearman"))
    out["kendall"] = _float(correlation(x, y, "kendall"))
    return out


def _same_scale(auto: RaterScores, target: RaterScores, component: str) -> tuple[bool, str]:
    """Whether alpha/MAE are meaningful for ``auto`` vs ``target`` on ``component``, and why not."""
    if auto.is_human and target.is_human:
        return True, ""
    if target.is_human and auto.on_human_scale_out_of_fold(component):
        return True, ""
    if target.is_human and auto.calibrated and component not in auto.oof:
        return False, ALPHA_IN_SAMPLE
    return False, ALPHA_UNCALIBRATED


def rater_agreement(auto: RaterScores, human: RaterScores, features: np.ndarray) -> dict[str, Any]:
    """Agreement of an automatic rater with a human rater (or reference answer key) for q1, q3, q4 and I.

    Raters calibrated to human answers are compared through their out-of-fold predictions
    (``<component>_oof`` columns), and only those get Krippendorff's alpha and the MAE against a
    human rater; other pairs get rank agreement only (``alpha_reason`` says why).
    """
    out: dict[str, Any] = {}
    for component in AGREEMENT_COMPONENTS:
        a = auto.values(component, out_of_fold=True)
        h = human.values(component)
        if a is None or h is None:
            continue
        same, why = _same_scale(auto, human, component)
        res = pair_agreement(
            align(features, auto.feature_ind, a),
            align(features, human.feature_ind, h),
            (f"{auto.name} {component}", f"{human.name} {component}"),
            same_scale=same,
            alpha_reason=why,
        )
        if auto.calibrated:
            res["out_of_fold"] = component in auto.oof
            if component not in auto.oof:
                res["note"] = "in-sample: the rater was fitted to human answers and has no out-of-fold predictions"
        out[component] = res
    # The summary's flat keys refer to I.
    if "I" in out:
        for key in ("spearman", "kendall", "krippendorff_alpha", "mae"):
            out[key] = out["I"][key]
        if "alpha_reason" in out["I"]:
            out["alpha_reason"] = out["I"]["alpha_reason"]
    else:
        out["spearman"] = out["kendall"] = out["krippendorff_alpha"] = out["mae"] = None
        out["reason"] = "no shared component"
    return out


def spearman_brown(r: float, factor: float) -> float:
    """Reliability of a measure ``factor`` times as long, from reliability ``r`` (NaN when undefined)."""
    den = 1.0 + (factor - 1.0) * r
    return factor * r / den if den > 0 else float("nan")


def split_half_reliability(matrix: np.ndarray, n_splits: int = 200, seed: int = 0) -> dict[str, Any]:
    """Reliability of the per-feature *mean* over raters, by random split halves.

    ``matrix`` is raters × features (NaN = not rated); features with fewer than two ratings are left
    out. Each split sends a random half of each feature's raters to A (``floor(k/2)``) and the rest
    to B; the Spearman correlation of the A and B means, averaged over splits, is stepped up with
    Spearman–Brown to the full number of raters, ``factor = k / sqrt(a·b)`` (``k``, ``a``, ``b``:
    harmonic means over features of the number of raters and of the half sizes; exactly 2 when every
    feature has an even number of raters). Returns ``reliability`` (the stepped-up mean half
    correlation), ``raw`` (mean half correlation), ``factor``, ``k`` and ``n_features``; reliability
    is None (with ``reason``) when undefined.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    counts = np.isfinite(matrix).sum(axis=0)
    sub = matrix[:, counts >= 2]
    filled = np.isfinite(sub)
    k = filled.sum(axis=0).astype(np.float64)
    out: dict[str, Any] = {
        "reliability": None,
        "raw": None,
        "factor": None,
        "k": None,
        "n_features": int(sub.shape[1]),
        "n_splits": int(n_splits),
    }
    if sub.shape[1] < MIN_FEATURES:
        out["reason"] = f"only {sub.shape[1]} feature(s) rated by two or more raters; need at least {MIN_FEATURES}"
        return out
    a_size, b_size = np.floor(k / 2), np.ceil(k / 2)
    k_eff = len(k) / np.sum(1.0 / k)
    a_eff, b_eff = len(k) / np.sum(1.0 / a_size), len(k) / np.sum(1.0 / b_size)
    factor = float(k_eff / np.sqrt(a_eff * b_eff))
    out["factor"], out["k"] = factor, float(k_eff)
    rng = np.random.default_rng(seed)
    values = np.where(filled, sub, 0.0)
    raw = []
    for _ in range(n_splits):
        keys = np.where(filled, rng.random(sub.shape), np.inf)
        rank = keys.argsort(axis=0).argsort(axis=0)
        in_a = filled & (rank < a_size)
        in_b = filled & ~in_a
        mean_a = (values * in_a).sum(0) / in_a.sum(0)
        mean_b = (values * in_b).sum(0) / in_b.sum(0)
        r = correlation(mean_a, mean_b, "spearman")
        if np.isfinite(r):
            raw.append(r)
    if not raw:
        out["reason"] = "the half means are constant in every split"
        return out
    out["raw"] = _float(np.mean(raw))
    # step up the mean split-half correlation (stepping up each split first blows up near r = -1 and drops NaNs)
    out["reliability"] = _float(spearman_brown(float(np.mean(raw)), factor))
    return out


def noise_ceiling(answers: AnswerTable, component: str = "I", n_splits: int = 200, seed: int = 0) -> dict[str, Any]:
    """How well humans agree with each other on ``component`` — the best an automatic rater can hope for.

    Automatic raters are compared with the *mean* human answer per feature, so the ceiling is the
    reliability of that mean. Needs at least two participants who rated the same features. Returns:

    * ``split_half``: reliability of the mean over participants (:func:`split_half_reliability`:
      random halves of each feature's raters, Spearman between the half means averaged over ``n_splits``
      splits, Spearman–Brown corrected to the full number of raters);
    * ``ceiling``: ``sqrt(split_half)``, about the highest Spearman correlation with the mean human
      rater that a rater who knew each feature's true score could reach (None when reliability ≤ 0);
    * ``krippendorff_alpha`` among participants (units = features; missing answers allowed);
    * ``individual_lower``/``individual_upper``: Nili et al. (2014) bounds on the *average
      correlation with individual participants* (each participant vs the mean of the others /
      of all) — a ceiling for agreement with single raters, not with their mean.
    """
    matrix, _features, people = answers.matrix(component)
    counts = np.isfinite(matrix).sum(axis=0)
    shared = counts >= 2
    out: dict[str, Any] = {
        "n_participants": len(people),
        "n_features_shared": int(shared.sum()),
        "split_half": None,
        "split_half_raw": None,
        "ceiling": None,
        "krippendorff_alpha": None,
        "individual_lower": None,
        "individual_upper": None,
        "individual_note": "Nili et al. bounds on the mean correlation with individual raters",
    }
    if len(people) < 2:
        out["reason"] = ONE_RATER
        return out
    if shared.sum() < MIN_FEATURES:
        out["reason"] = (
            f"no noise ceiling: the {len(people)} raters share only {int(shared.sum())} feature(s); "
            f"need at least {MIN_FEATURES} rated by two or more"
        )
        return out
    out["krippendorff_alpha"] = _float(krippendorff_alpha_interval(matrix[:, shared]))
    total = np.nansum(matrix, axis=0)
    lower, upper, weights = [], [], []
    for p in range(len(people)):
        own = matrix[p]
        mask = np.isfinite(own) & shared
        if mask.sum() < MIN_FEATURES:
            continue
        others = (total[mask] - own[mask]) / (counts[mask] - 1)
        everyone = total[mask] / counts[mask]
        lo = correlation(own[mask], others, "spearman")
        hi = correlation(own[mask], everyone, "spearman")
        if np.isfinite(lo) and np.isfinite(hi):
            lower.append(lo)
            upper.append(hi)
            weights.append(mask.sum())
    if lower:
        out["individual_lower"] = _float(np.average(lower, weights=weights))
        out["individual_upper"] = _float(np.average(upper, weights=weights))
    half = split_half_reliability(matrix, n_splits=n_splits, seed=seed)
    out["split_half"], out["split_half_raw"] = half["reliability"], half["raw"]
    out["raters_per_feature"] = half["k"]
    if half.get("reason"):
        out["split_half_reason"] = half["reason"]
    if out["split_half"] is not None and out["split_half"] > 0:
        out["ceiling"] = _float(np.sqrt(min(out["split_half"], 1.0)))
    return out
