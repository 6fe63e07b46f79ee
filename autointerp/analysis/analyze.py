"""The whole analysis of a run: importance vs every rater, group comparison, agreement, noise ceiling.

:func:`analyze` returns an :class:`Analysis` whose ``summary`` is JSON-ready (``None`` for undefined
values, with a reason) and whose per-feature table feeds the plots and the feature gallery.

What a correlation with importance is computed over (its *scope*, see :func:`correlation_scope`):

* ``layer-wide`` — the rater scored (nearly: at least :data:`LAYER_WIDE_FRACTION`) every feature
  with an importance; the correlation is over all of them. This is the headline.
* ``extreme groups`` — the rater scored only features of the top and middle groups (e.g. the
  study's survey of 40 + 40 features). Correlations over two groups far apart in importance are
  inflated by the gap; the within-group correlations are shown beside them.
* ``subset`` — any other partial coverage; the subset is named ("scored N of M").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.analysis.agreement import ONE_RATER, noise_ceiling, rater_agreement
from autointerp.analysis.groups import Groups, select_groups
from autointerp.analysis.inputs import (
    AGREEMENT_COMPONENTS,
    Importance,
    Issue,
    RaterScores,
    align,
    group_issues,
    id_list,
)
from autointerp.analysis.stats import METHODS, _float, compare_two_groups, correlation, correlation_test, describe

#: a rater that scored at least this fraction of the features with an importance is "layer-wide"
LAYER_WIDE_FRACTION = 0.95

#: labels of the importance measures the report knows
MEASURE_LABELS = {
    "importance": "importance (Δ correct top-k when ablated)",
    "mean_delta_logprob_true": "mean Δ log p(true class) when ablated",
}

#: what empty sections say when the caller gives no more specific reason
DEFAULT_EXPLANATIONS = {
    "no_human": "no human answers (see docs/survey.md to run a survey)",
    "no_auto": "no automatic raters to compare with the human answers",
    "no_raters": "no raters: nothing to correlate with importance",
    "reliability": "importance reliability unavailable: no per-image importance data was given",
}


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
    #: further per-feature columns aligned on features: other importance measures, importance CIs
    measures: dict[str, np.ndarray] = field(default_factory=dict)

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


# --------------------------------------------------------------------------------------------- data notes


def _coverage_issues(features: np.ndarray, importance: Importance, raters: list[RaterScores]) -> list[Issue]:
    issues: list[Issue] = []
    missing = np.setdiff1d(features, importance.feature_ind)
    if len(missing):
        issues.append(
            Issue(
                "missing_feature",
                f"{len(missing)} feature(s) have ratings but no importance "
                f"({id_list(missing)}); they are left out of importance statistics",
                missing.tolist(),
            )
        )
    nan_imp = importance.feature_ind[~np.isfinite(importance.importance)]
    if len(nan_imp) and not any(i.kind in ("not_numeric", "duplicate_conflict") for i in importance.issues):
        issues.append(
            Issue(
                "not_numeric", f"{len(nan_imp)} feature(s) have a NaN importance ({id_list(nan_imp)})", nan_imp.tolist()
            )
        )
    with_importance = importance.feature_ind[np.isfinite(importance.importance)]
    m = len(with_importance)
    for rater in raters:
        scored = rater.feature_ind[np.isfinite(rater.I)]
        absent = np.setdiff1d(with_importance, scored)
        if not len(absent):
            continue
        what = "rated" if rater.is_human else "scored"
        n_rated = m - len(absent)
        nan_rows = np.intersect1d(absent, rater.feature_ind)
        detail = f" ({len(nan_rows)} of them on rows with an empty or non-numeric I)" if len(nan_rows) else ""
        issues.append(
            Issue(
                "coverage",
                f"rater {rater.name!r} {what} {n_rated} of {m} feature(s) with an importance; {len(absent)} have no "
                f"score{detail} ({id_list(absent)})",
                absent.tolist(),
                subject=rater.name,
                cause=f"features with an importance (of {m}) without a score",
            )
        )
    return issues


def _rater_input_issues(rater: RaterScores) -> list[Issue]:
    """The reader's notes on a rater, less the missing-I one (the coverage note tells it)."""
    return [i for i in rater.issues if not (i.kind == "not_numeric" and i.column == "I")]


# --------------------------------------------------------------------------------------------- pieces


def _group_summary(
    ids: np.ndarray, features: np.ndarray, importance: np.ndarray, scores: dict[str, np.ndarray]
) -> dict[str, Any]:
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


def correlation_scope(scored: np.ndarray, n_with_importance: int, groups: Groups) -> tuple[str, str]:
    """``(scope, label)`` of a rater's correlation with importance (see the module docstring).

    ``scored`` are the features with both an importance and a score. The label names the subset,
    e.g. ``"layer-wide: scored 1280 of 1280"`` or ``"extreme groups (top 40 + middle 40): scored 80 of 832"``.
    """
    n, m = len(scored), n_with_importance
    counted = f"scored {n} of {m}"
    if m and n >= LAYER_WIDE_FRACTION * m:
        return "layer-wide", f"layer-wide: {counted}"
    in_groups = np.isin(scored, np.concatenate([groups.top, groups.middle]))
    if n and in_groups.all():
        return "extreme groups", f"extreme groups (top {groups.top_n} + middle {groups.middle_n}): {counted}"
    return "subset", f"subset: {counted} (neither the whole layer nor the extreme groups)"


def _test(
    x: np.ndarray, y: np.ndarray, name: str, settings: AnalysisSettings, seed: int, methods: tuple[str, ...] = METHODS
) -> dict[str, Any]:
    """Correlations of importance ``x`` with rater ``y``; the Spearman one flat, the others nested."""
    entry: dict[str, Any] = {"n": int(len(x))}
    for method in methods:
        res = correlation_test(x, y, method, settings.n_boot, settings.n_perm, seed)
        test = {"value": res["value"], "ci95": res["ci95"], "p": res["p"]}
        if "reason" in res:
            test["reason"] = (
                res["reason"].replace("first variable", "importance").replace("second variable", f"rater {name!r}")
            )
        if method == "spearman":
            entry.update(spearman=test["value"], ci95=test["ci95"], p=test["p"])
            if "reason" in test:
                entry["reason"] = test["reason"]
        else:
            entry[method] = test
    return entry


def _extreme_groups(
    imp: np.ndarray, values: np.ndarray, group: np.ndarray, name: str, settings: AnalysisSettings, seed: int
) -> dict[str, Any]:
    """Correlation over the top + middle groups, and within each group."""
    ok = np.isfinite(imp) & np.isfinite(values)
    both = ok & (group != "")
    out = _test(imp[both], values[both], name, settings, seed, ("spearman", "kendall"))
    out["within"] = {}
    for k, label in enumerate(("top", "middle")):
        sel = ok & (group == label)
        out["within"][label] = _test(imp[sel], values[sel], name, settings, seed + 104729 * (k + 1), ("spearman",))
    return out


def _reliability_summary(reliability: Any, reason: str | None) -> dict[str, Any]:
    """``ImportanceReliability`` (from :mod:`autointerp.analysis.reliability`) as JSON, or why there is none."""
    if reliability is None:
        return {"available": False, "reason": reason or DEFAULT_EXPLANATIONS["reliability"], "measures": {}}
    measures: dict[str, Any] = {}
    for key, entry in (getattr(reliability, "measures", None) or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        measures[str(key)] = {
            k: entry.get(k)
            for k in ("split_half_spearman_brown", "split_half_raw", "odd_even", "n_splits", "reason")
            if k in entry
        }
    out = {
        "available": True,
        "method": getattr(reliability, "method", None),
        "n_images": getattr(reliability, "n_images", None),
        "n_units": getattr(reliability, "n_units", None),
        "measures": measures,
    }
    if getattr(reliability, "warning", None):
        out["warning"] = str(reliability.warning)
    return out


def _corrected(r: float | None, reliability_x: float | None) -> tuple[float | None, str | None]:
    """Spearman ``r`` corrected for the unreliability of the importance measure, or why not."""
    if r is None:
        return None, "no correlation"
    if reliability_x is None:
        return None, "reliability of the measure unknown"
    from autointerp.analysis.reliability import attenuation_corrected

    value = attenuation_corrected(r, reliability_x)
    if value is None or not np.isfinite(value):
        return None, f"undefined for reliability {reliability_x:.3f}"
    return float(value), None


def _importance_measures(
    imp: np.ndarray,
    measures: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    rel: dict[str, Any],
    scopes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Both importance measures, their reliabilities and each rater's correlation with each
    (over every feature the rater scored), raw and corrected for the measure's unreliability."""
    columns = {"importance": imp, **measures}
    out: dict[str, Any] = {"measures": {}, "correlations": {}}
    for key, values in columns.items():
        r = rel["measures"].get(key, {})
        out["measures"][key] = {
            "label": MEASURE_LABELS.get(key, key),
            **describe(values),
            "reliability": r.get("split_half_spearman_brown"),
        }
    for name, values in scores.items():
        per: dict[str, Any] = {}
        for key, x in columns.items():
            ok = np.isfinite(x) & np.isfinite(values)
            entry: dict[str, Any] = {"n": int(ok.sum()), "spearman": None, "corrected": None}
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(values[ok]) > 0:
                entry["spearman"] = _float(correlation(x[ok], values[ok], "spearman"))
            scope = (scopes or {}).get(name, "layer-wide")
            if rel["available"] and scope != "layer-wide":
                # the reliability is the layer's; a correlation over a subset (e.g. two extreme groups) has another
                entry["corrected_reason"] = f"the reliability is layer-wide; this correlation is over {scope}"
            elif rel["available"]:
                corrected, why = _corrected(entry["spearman"], out["measures"][key]["reliability"])
                entry["corrected"] = corrected
                if why:
                    entry["corrected_reason"] = why
            per[key] = entry
        out["correlations"][name] = per
    return out


def _ceiling(h: RaterScores, seed: int) -> dict[str, Any]:
    """The noise ceiling of human rater ``h`` per component, or why there is none."""
    if h.answers is None:
        counts = h.components.get("n_raters")
        if counts is not None and np.isfinite(counts).any() and np.nanmax(counts) <= 1:
            return {"available": False, "reason": ONE_RATER}
        return {
            "available": False,
            "reason": "no noise ceiling: only per-feature means are available, not the "
            "individual answers (give the survey files with --human)",
        }
    present = [c for c in AGREEMENT_COMPONENTS if c == "I" or c in h.components]
    overall = noise_ceiling(h.answers, "I", seed=seed)
    if overall.get("reason"):
        return {"available": False, "reason": overall["reason"]}
    return {"available": True, **{c: noise_ceiling(h.answers, c, seed=seed) for c in present}}


def _empty_reasons(summary: dict[str, Any], raters: list[RaterScores], explain: dict[str, str]) -> dict[str, str]:
    """Why a section of the report is empty (only the empty ones)."""
    out: dict[str, str] = {}
    targets = [r for r in raters if r.is_target]
    autos = [r for r in raters if not r.is_target]
    if not raters:
        out["correlations"] = explain["no_raters"]
    if not targets:
        out["agreement"] = explain["no_human"]
    elif not autos:
        out["agreement"] = explain["no_auto"]
    if not [r for r in raters if r.is_human]:
        out["noise_ceiling"] = explain["no_human"] + "; so no noise ceiling"
    if not summary["importance_measures"]["reliability"]["available"]:
        out["importance_reliability"] = summary["importance_measures"]["reliability"]["reason"]
    if summary["n_features"] == 0:
        out["groups"] = "no feature has an importance"
    return out


# --------------------------------------------------------------------------------------------- analysis


def analyze(
    importance: Importance,
    raters: list[RaterScores],
    settings: AnalysisSettings | None = None,
    reliability: Any = None,
    explain: dict[str, str] | None = None,
) -> Analysis:
    """Run every statistic of the report. Never raises on imperfect data; problems become issues.

    ``reliability`` is an ``ImportanceReliability`` (:mod:`autointerp.analysis.reliability`) or
    None; ``explain`` overrides the one-line reasons of empty sections (keys ``no_human``,
    ``no_auto``, ``no_raters``, ``reliability``; see :data:`DEFAULT_EXPLANATIONS`).
    """
    settings = settings or AnalysisSettings()
    explain = {**DEFAULT_EXPLANATIONS, **(explain or {})}
    names = [r.name for r in raters]
    if len(set(names)) != len(names):
        raise ValueError(f"rater names must be unique, got {names}")
    features = np.unique(np.concatenate([importance.feature_ind, *[r.feature_ind for r in raters]])).astype(np.int64)
    imp = align(features, importance.feature_ind, importance.importance)
    measures = {k: align(features, importance.feature_ind, v) for k, v in importance.measures.items()}
    scores = {r.name: align(features, r.feature_ind, r.I) for r in raters}
    issues = list(importance.issues)
    for r in raters:
        issues.extend(_rater_input_issues(r))
    issues.extend(_coverage_issues(features, importance, raters))

    finite_imp = np.isfinite(imp)
    n_with_importance = int(finite_imp.sum())
    summary: dict[str, Any] = {
        "model": importance.model,
        "layer": importance.layer,
        "n_features": n_with_importance,
        "n_features_total": int(len(features)),
        "importance": describe(imp),
        "raters": {},
        "settings": {
            "top_n": settings.top_n,
            "middle_n": settings.middle_n,
            "bootstrap": settings.n_boot,
            "permutations": settings.n_perm,
            "seed": settings.seed,
            "layer_wide_fraction": LAYER_WIDE_FRACTION,
        },
    }
    if n_with_importance < 2:
        issues.append(
            Issue(
                "too_few_features",
                f"only {n_with_importance} feature(s) with an importance; "
                "statistics need at least two (three for correlations)",
            )
        )

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
        "definition": (
            f"top = the {groups.top_n} most important features; middle = the {groups.middle_n} "
            "features at the sorted positions centred on the median; I means over rated features"
        ),
        "top": _group_summary(groups.top, features, imp, scores),
        "middle": _group_summary(groups.middle, features, imp, scores),
        "comparison": comparison,
        "notes": groups.notes,
    }
    for note in groups.notes:
        issues.append(Issue("groups", note))

    # Raters ------------------------------------------------------------------------------------
    for r in raters:
        scored = features[finite_imp & np.isfinite(scores[r.name])]
        scope, label = correlation_scope(scored, n_with_importance, groups)
        summary["raters"][r.name] = {
            "human": r.is_human,
            "reference": r.is_reference,
            "n_scored": int(np.isfinite(scores[r.name]).sum()),
            "n_scored_with_importance": int(len(scored)),
            "n_with_importance": n_with_importance,
            "scope": scope,
            "scope_label": label,
            "higher_is_better": r.higher_is_better,
            "calibrated": r.calibrated,
            "out_of_fold": sorted(k for k in r.oof if r.on_human_scale_out_of_fold(k)),
            "scale": r.scale,
            "scale_kind": r.scale_kind,
            "I": describe(scores[r.name]),
            "meta": r.meta,
        }

    # Correlations with importance: over the rater's scope, plus extreme groups and within groups ---
    correlations: dict[str, Any] = {}
    headline: list[dict[str, Any]] = []
    for k, (name, values) in enumerate(scores.items()):
        info = summary["raters"][name]
        ok = finite_imp & np.isfinite(values)
        seed = settings.seed + 7919 * k
        entry = _test(imp[ok], values[ok], name, settings, seed)
        entry.update(
            scope=info["scope"],
            scope_label=info["scope_label"],
            n_scored=int(ok.sum()),
            n_with_importance=n_with_importance,
        )
        if "reason" in entry:
            issues.append(
                Issue("undefined", f"correlation of importance with {name!r} is undefined: {entry['reason']}")
            )
        entry["extreme_groups"] = _extreme_groups(imp, values, group, name, settings, seed + 1)
        correlations[name] = entry
        eg = entry["extreme_groups"]
        headline.append(
            {
                "rater": name,
                "automatic": not (info["human"] or info["reference"]),
                "scope": info["scope"],
                "label": info["scope_label"],
                "n_scored": int(ok.sum()),
                "n_with_importance": n_with_importance,
                "spearman": entry["spearman"],
                "ci95": entry["ci95"],
                "p": entry["p"],
                "extreme_groups": eg["spearman"],
                "within_top": eg["within"]["top"]["spearman"],
                "within_middle": eg["within"]["middle"]["spearman"],
            }
        )
    summary["correlations"] = correlations
    summary["headline"] = headline

    # Both importance measures, their reliability, attenuation-corrected correlations --------------
    rel = _reliability_summary(reliability, explain["reliability"] if reliability is None else None)
    scopes = {name: info["scope"] for name, info in summary["raters"].items()}
    summary["importance_measures"] = {"reliability": rel, **_importance_measures(imp, measures, scores, rel, scopes)}
    if reliability is not None:
        rel_features = np.asarray(getattr(reliability, "feature_ind", []), dtype=np.int64)
        for key, values in (getattr(reliability, "per_feature", None) or {}).items():
            values = np.asarray(values)
            usable = str(key).endswith(("_ci_low", "_ci_high", "_se")) and values.ndim == 1
            if usable and len(values) == len(rel_features) and np.issubdtype(values.dtype, np.number):
                order = np.argsort(rel_features, kind="stable")
                measures[str(key)] = align(features, rel_features[order], values[order].astype(np.float64))

    # Automatic vs human (and reference answer key) agreement, and the noise ceiling ---------------
    humans = [r for r in raters if r.is_human]
    targets = [r for r in raters if r.is_target]
    autos = [r for r in raters if not r.is_target]
    summary["agreement"] = {a.name: {h.name: rater_agreement(a, h, features) for h in targets} for a in autos}
    if len(humans) >= 2:  # human raters against each other, too
        summary["human_agreement"] = {
            h1.name: {h2.name: rater_agreement(h1, h2, features) for h2 in humans if h2 is not h1} for h1 in humans
        }
    summary["noise_ceiling"] = {h.name: _ceiling(h, settings.seed) for h in humans}

    # Rater x rater correlation matrix (importance first) ------------------------------------------
    matrix_names = ["importance", *scores]
    summary["rater_correlations"] = {
        "method": "spearman (pairwise complete features)",
        "names": matrix_names,
        "matrix": _rater_matrix(matrix_names, [imp, *scores.values()]),
    }
    summary["empty_reasons"] = _empty_reasons(summary, list(raters), explain)
    grouped = group_issues(issues)
    summary["issues"] = [i.to_json() for i in grouped]
    return Analysis(summary, features, imp, scores, group, list(raters), grouped, measures)
