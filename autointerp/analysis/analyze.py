"""The whole analysis of a run: importance vs every rater, group comparison, agreement, noise ceiling.

:func:`analyze` returns an :class:`Analysis` whose ``summary`` is JSON-ready (``None`` for undefined
values, with a reason) and whose per-feature table feeds the plots and the feature gallery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.analysis.agreement import noise_ceiling, rater_agreement
from autointerp.analysis.groups import select_groups
from autointerp.analysis.inputs import AGREEMENT_COMPONENTS, Importance, Issue, RaterScores, align
from autointerp.analysis.stats import METHODS, _float, compare_two_groups, correlation, correlation_test, describe


@dataclass
class AnalysisSettings:
    """Knobs of the analysis (defaults follow the study)."""

    top_n: int = 40
    middle_n: int = 40
    n_boot: int = 2000
    n_perm: int = 2000
    seed: int = 0


@dataclass
class Analysis:
    """Result of :func:`analyze`: the JSON summary plus aligned per-feature arrays."""

    summary: dict[str, Any]
    features: np.ndarray  # every feature seen in any input, sorted
    importance: np.ndarray  # aligned on features (NaN = unknown)
    scores: dict[str, np.ndarray]  # rater -> I aligned on features
    group: np.ndarray  # "top" | "middle" | "" per feature
    raters: list[RaterScores]
    issues: list[Issue] = field(default_factory=list)

    @property
    def human_raters(self) -> list[str]:
        return [r.name for r in self.raters if r.is_human]

    @property
    def reference_raters(self) -> list[str]:
        """What automatic raters are compared with: human raters and reference answer keys."""
        return [r.name for r in self.raters if r.is_target]

    @property
    def auto_raters(self) -> list[str]:
        return [r.name for r in self.raters if not r.is_target]


def _id_list(ids: list[int] | np.ndarray, limit: int = 20) -> str:
    ids = [int(i) for i in ids]
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def _coverage_issues(features: np.ndarray, importance: Importance, raters: list[RaterScores]) -> list[Issue]:
    issues: list[Issue] = []
    missing = np.setdiff1d(features, importance.feature_ind)
    if len(missing):
        issues.append(Issue("missing_feature", f"{len(missing)} feature(s) have ratings but no importance "
                                               f"({_id_list(missing)}); they are left out of importance statistics",
                            missing.tolist()))
    nan_imp = importance.feature_ind[~np.isfinite(importance.importance)]
    if len(nan_imp) and not any(i.kind in ("not_numeric", "duplicate_conflict") for i in importance.issues):
        issues.append(Issue("not_numeric", f"{len(nan_imp)} feature(s) have a NaN importance ({_id_list(nan_imp)})",
                            nan_imp.tolist()))
    for rater in raters:
        absent = np.setdiff1d(importance.feature_ind, rater.feature_ind)
        nan_score = rater.feature_ind[~np.isfinite(rater.I)]
        if rater.is_human:  # unrated rows of a survey are coverage, not bad values
            absent = np.setdiff1d(importance.feature_ind, rater.feature_ind[np.isfinite(rater.I)])
            nan_score = nan_score[:0]
        if len(absent):
            kind = "coverage" if rater.is_human else "missing_feature"
            what = "rated" if rater.is_human else "scored"
            n_rated = int(np.isfinite(rater.I).sum())
            issues.append(Issue(kind, f"rater {rater.name!r} {what} {n_rated} feature(s); "
                                      f"{len(absent)} with an importance have no score ({_id_list(absent)})",
                                absent.tolist()))
        if len(nan_score):
            issues.append(Issue("not_numeric", f"rater {rater.name!r} has a NaN or missing I for {len(nan_score)} "
                                               f"feature(s) ({_id_list(nan_score)})", nan_score.tolist()))
    return issues


def _group_summary(ids: np.ndarray, features: np.ndarray, importance: np.ndarray,
                   scores: dict[str, np.ndarray]) -> dict[str, Any]:
    member = np.isin(features, ids)
    out: dict[str, Any] = {
        "n": int(member.sum()),
        "importance_mean": _float(importance[member].mean()) if member.any() else None,
        "I_mean": {},
        "n_rated": {},
        "features": [int(f) for f in features[member]],
    }
    for name, values in scores.items():
        rated = values[member][np.isfinite(values[member])]
        out["I_mean"][name] = _float(rated.mean()) if len(rated) else None
        out["n_rated"][name] = int(len(rated))
    return out


def _rater_matrix(names: list[str], columns: list[np.ndarray]) -> list[list[float | None]]:
    k = len(columns)
    out: list[list[float | None]] = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(i, k):
            ok = np.isfinite(columns[i]) & np.isfinite(columns[j])
            if ok.sum() >= 3 and np.ptp(columns[i][ok]) > 0 and np.ptp(columns[j][ok]) > 0:
                r = _float(correlation(columns[i][ok], columns[j][ok], "spearman"))
            else:
                r = None
            out[i][j] = out[j][i] = r
    return out


def analyze(importance: Importance, raters: list[RaterScores], settings: AnalysisSettings | None = None) -> Analysis:
    """Run every statistic of the report. Never raises on imperfect data; problems become issues."""
    settings = settings or AnalysisSettings()
    names = [r.name for r in raters]
    if len(set(names)) != len(names):
        raise ValueError(f"rater names must be unique, got {names}")
    features = np.unique(np.concatenate([importance.feature_ind, *[r.feature_ind for r in raters]])).astype(np.int64)
    imp = align(features, importance.feature_ind, importance.importance)
    scores = {r.name: align(features, r.feature_ind, r.I) for r in raters}
    issues = list(importance.issues)
    for r in raters:
        issues.extend(r.issues)
    issues.extend(_coverage_issues(features, importance, raters))

    finite_imp = np.isfinite(imp)
    summary: dict[str, Any] = {
        "model": importance.model,
        "layer": importance.layer,
        "n_features": int(finite_imp.sum()),
        "n_features_total": int(len(features)),
        "importance": describe(imp),
        "raters": {},
        "settings": {"top_n": settings.top_n, "middle_n": settings.middle_n, "bootstrap": settings.n_boot,
                     "permutations": settings.n_perm, "seed": settings.seed},
    }
    if finite_imp.sum() < 2:
        issues.append(Issue("too_few_features", f"only {int(finite_imp.sum())} feature(s) with an importance; "
                                                "statistics need at least two (three for correlations)"))
    for r in raters:
        summary["raters"][r.name] = {
            "human": r.is_human,
            "reference": r.is_reference,
            "n_scored": int(np.isfinite(scores[r.name]).sum()),
            "higher_is_better": r.higher_is_better,
            "calibrated": r.calibrated,
            "I": describe(scores[r.name]),
            "meta": r.meta,
        }

    # Groups ------------------------------------------------------------------------------------
    priority = sum((np.isfinite(v).astype(float) for v in scores.values()), np.zeros(len(features)))
    groups = select_groups(features, imp, settings.top_n, settings.middle_n, priority)
    group = np.full(len(features), "", dtype=object)
    group[np.isin(features, groups.middle)] = "middle"
    group[np.isin(features, groups.top)] = "top"
    comparison = {}
    for name, values in scores.items():
        a = values[np.isin(features, groups.top)]
        b = values[np.isin(features, groups.middle)]
        comparison[name] = compare_two_groups(a[np.isfinite(a)], b[np.isfinite(b)], settings.n_boot, settings.seed)
    summary["groups"] = {
        "definition": (f"top = the {groups.top_n} most important features; middle = the {groups.middle_n} "
                       "features at the sorted positions centred on the median; I means over rated features"),
        "top": _group_summary(groups.top, features, imp, scores),
        "middle": _group_summary(groups.middle, features, imp, scores),
        "comparison": comparison,
        "notes": groups.notes,
    }
    for note in groups.notes:
        issues.append(Issue("groups", note))

    # Correlations with importance ---------------------------------------------------------------
    correlations: dict[str, Any] = {}
    for k, (name, values) in enumerate(scores.items()):
        ok = finite_imp & np.isfinite(values)
        entry: dict[str, Any] = {"n": int(ok.sum())}
        tests = {}
        for method in METHODS:
            res = correlation_test(imp[ok], values[ok], method, settings.n_boot, settings.n_perm,
                                   settings.seed + 7919 * k)
            tests[method] = {"value": res["value"], "ci95": res["ci95"], "p": res["p"]}
            if "reason" in res:
                tests[method]["reason"] = res["reason"].replace("first variable", "importance").replace(
                    "second variable", f"rater {name!r}")
        spearman = tests.pop("spearman")
        entry.update(spearman=spearman["value"], ci95=spearman["ci95"], p=spearman["p"], **tests)
        if "reason" in spearman:
            entry["reason"] = spearman["reason"]
            issues.append(Issue("undefined", f"correlation of importance with {name!r} is undefined: "
                                             f"{spearman['reason']}"))
        correlations[name] = entry
    summary["correlations"] = correlations

    # Automatic vs human (and reference answer key) agreement, and the noise ceiling ---------------
    humans = [r for r in raters if r.is_human]
    targets = [r for r in raters if r.is_target]
    autos = [r for r in raters if not r.is_target]
    summary["agreement"] = {a.name: {h.name: rater_agreement(a, h, features) for h in targets} for a in autos}
    if len(humans) >= 2:  # human raters against each other, too
        summary["human_agreement"] = {
            h1.name: {h2.name: rater_agreement(h1, h2, features) for h2 in humans if h2 is not h1} for h1 in humans
        }
    ceilings: dict[str, Any] = {}
    for h in humans:
        if h.answers is None:
            continue
        present = [c for c in AGREEMENT_COMPONENTS if c == "I" or c in h.components]
        overall = noise_ceiling(h.answers, "I", seed=settings.seed)
        if overall.get("reason"):
            ceilings[h.name] = {"available": False, "reason": overall["reason"]}
        else:
            ceilings[h.name] = {"available": True, **{c: noise_ceiling(h.answers, c, seed=settings.seed)
                                                      for c in present}}
    summary["noise_ceiling"] = ceilings

    # Rater x rater correlation matrix (importance first) ------------------------------------------
    matrix_names = ["importance", *scores]
    summary["rater_correlations"] = {
        "method": "spearman (pairwise complete features)",
        "names": matrix_names,
        "matrix": _rater_matrix(matrix_names, [imp, *scores.values()]),
    }
    summary["issues"] = [i.to_json() for i in issues]
    return Analysis(summary, features, imp, scores, group, list(raters), issues)
