"""Agreement between raters (human vs automatic) and the human noise ceiling."""

from __future__ import annotations

from typing import Any

import numpy as np

from autointerp.analysis.inputs import AGREEMENT_COMPONENTS, RaterScores, align
from autointerp.analysis.stats import MIN_FEATURES, _float, correlation, krippendorff_alpha_interval
from autointerp.human_answers import AnswerTable


def _undefined_reason(x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> str | None:
    if len(x) < MIN_FEATURES:
        return f"only {len(x)} feature(s) scored by both; need at least {MIN_FEATURES}"
    for name, v in zip(names, (x, y), strict=True):
        if np.ptp(v) == 0:
            return f"{name} is constant ({v[0]:g}) over the {len(v)} shared features"
    return None


def pair_agreement(x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("x", "y")) -> dict[str, Any]:
    """Spearman, Kendall, Krippendorff's alpha (interval) and mean absolute error of paired scores.

    NaN pairs are left out; ``n`` says how many pairs were used. Undefined values are None with a reason.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    out: dict[str, Any] = {"n": int(len(x)), "spearman": None, "kendall": None, "krippendorff_alpha": None,
                           "mae": _float(np.abs(x - y).mean()) if len(x) else None}
    if len(x) >= 2:
        out["krippendorff_alpha"] = _float(krippendorff_alpha_interval(np.vstack([x, y])))
    reason = _undefined_reason(x, y, names)
    if reason:
        out["reason"] = reason
        return out
    out["spearman"] = _float(correlation(x, y, "spearman"))
    out["kendall"] = _float(correlation(x, y, "kendall"))
    return out


def rater_agreement(auto: RaterScores, human: RaterScores, features: np.ndarray) -> dict[str, Any]:
    """Agreement of an automatic rater with a human rater for each of q1, q3, q4 and I.

    Calibrated raters (fitted to human answers) are compared through their out-of-fold predictions
    when the ratings file has them (``<component>_oof`` columns); otherwise the result is flagged as
    in-sample (optimistic).
    """
    out: dict[str, Any] = {}
    for component in AGREEMENT_COMPONENTS:
        a = auto.values(component, out_of_fold=True)
        h = human.values(component)
        if a is None or h is None:
            continue
        res = pair_agreement(
            align(features, auto.feature_ind, a), align(features, human.feature_ind, h),
            (f"{auto.name} {component}", f"{human.name} {component}"),
        )
        if auto.calibrated:
            res["out_of_fold"] = component in auto.oof
            if component not in auto.oof:
                res["note"] = "in-sample: the rater was fitted to human answers and has no out-of-fold predictions"
        out[component] = res
    # The summary's flat keys refer to I.
    if "I" in out:
        out["spearman"] = out["I"]["spearman"]
        out["krippendorff_alpha"] = out["I"]["krippendorff_alpha"]
    else:
        out["spearman"] = out["krippendorff_alpha"] = None
        out["reason"] = "no shared component"
    return out


def noise_ceiling(answers: AnswerTable, component: str = "I", n_splits: int = 200, seed: int = 0) -> dict[str, Any]:
    """How well humans agree with each other on ``component`` — the best an automatic rater can hope for.

    Needs at least two participants who rated the same features. Returns:

    * ``krippendorff_alpha`` among participants (units = features; missing answers allowed);
    * ``lower``/``upper``: mean over participants of the Spearman correlation between the
      participant's answers and the mean of the *other* participants (lower bound) or of *all*
      participants (upper bound), on the features both cover (Nili et al. 2014);
    * ``split_half``: Spearman between the means of two random halves of each feature's raters,
      Spearman–Brown corrected, averaged over ``n_splits`` random splits.
    """
    matrix, features, people = answers.matrix(component)
    counts = np.isfinite(matrix).sum(axis=0)
    shared = counts >= 2
    out: dict[str, Any] = {"n_participants": len(people), "n_features_shared": int(shared.sum()),
                           "krippendorff_alpha": None, "lower": None, "upper": None, "split_half": None}
    if len(people) < 2 or shared.sum() < MIN_FEATURES:
        out["reason"] = (f"needs two or more participants rating the same features (at least {MIN_FEATURES}); "
                         f"have {len(people)} participant(s), {int(shared.sum())} shared feature(s)")
        return out
    out["krippendorff_alpha"] = _float(krippendorff_alpha_interval(matrix[:, shared]))
    total = np.nansum(matrix, axis=0)
    lower, upper, weights = [], [], []
    for p in range(len(people)):
        own = matrix[p]
        mask = np.isfinite(own) & (counts >= 2)
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
        out["lower"] = _float(np.average(lower, weights=weights))
        out["upper"] = _float(np.average(upper, weights=weights))
    rng = np.random.default_rng(seed)
    sub = matrix[:, shared]
    filled = np.isfinite(sub)
    values = np.where(filled, sub, 0.0)
    halves = []
    for _ in range(n_splits):
        # Random split of each feature's raters: shuffle keys, the first half of present ones go to A.
        keys = np.where(filled, rng.random(sub.shape), np.inf)
        rank = keys.argsort(axis=0).argsort(axis=0)
        in_a = filled & (rank < (filled.sum(axis=0) // 2))
        in_b = filled & ~in_a
        mean_a = (values * in_a).sum(0) / in_a.sum(0)
        mean_b = (values * in_b).sum(0) / in_b.sum(0)
        r = correlation(mean_a, mean_b, "spearman")
        if np.isfinite(r):
            halves.append(2 * r / (1 + r) if r > -1 else np.nan)
    if halves:
        out["split_half"] = _float(np.nanmean(halves))
    return out
