"""The report's headline: every feature scored, correlations labelled by what they are computed over
(layer-wide / extreme groups / subset), within-group correlations, both importance measures with their
reliability, data notes grouped by cause, and empty sections that say why."""

from __future__ import annotations

import csv
import json
import math
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from autointerp.analysis import AnalysisSettings, RaterScores, analyze, read_importance_csv, read_rating_csv
from autointerp.analysis.inputs import Importance, Issue, group_issues

FAST = AnalysisSettings(top_n=20, middle_n=20, n_boot=100, n_perm=100, seed=0)


def _rater(name: str, features, values, human: bool = False) -> RaterScores:
    return RaterScores(name, np.asarray(features, dtype=np.int64), np.asarray(values, dtype=float), is_human=human)


def _spearman(x, y) -> float:
    return float(stats.spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------- the study's files


def _study_human_i(path: Path) -> dict[int, float]:
    """Per-feature I from the survey, computed here with the study's formula (answers kept as they are)."""
    per: dict[int, list[float]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            q1, q3, q4 = ((float(row[c]) - 1) / 4 for c in ("question1", "question3", "question4"))
            per.setdefault(int(row["neuron"]), []).append((q1 * q3 + q4) / 2)
    return {f: float(np.mean(v)) for f, v in per.items()}


def test_study_correlation_is_labelled_extreme_groups_with_within_group_values(
    shared_dir: Path, tmp_path: Path
) -> None:
    from autointerp.report import report_from_files

    study = shared_dir / "reference" / "seed_study"
    page = report_from_files(
        study / "importance.csv",
        tmp_path / "r",
        [study / "survey_results.csv"],
        "keep",
        AnalysisSettings(n_boot=100, n_perm=100),
    )
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    human = _study_human_i(study / "survey_results.csv")
    with (study / "importance.csv").open(newline="") as fh:
        importance = {int(r["feature_ind"]): float(r["importance"]) for r in csv.DictReader(fh)}
    feats = sorted(human)
    x = np.array([importance[f] for f in feats])
    y = np.array([human[f] for f in feats])
    top = x > 50  # the study's split: the 40 most important vs the 40 surveyed around the median
    assert top.sum() == 40 and len(feats) == 80

    c = s["correlations"]["human"]
    assert c["scope"] == "extreme groups" and c["n"] == 80
    assert c["scope_label"] == "extreme groups (top 40 + middle 40): scored 80 of 832"
    assert c["spearman"] == pytest.approx(_spearman(x, y)) and round(c["spearman"], 2) == 0.50
    within = c["extreme_groups"]["within"]
    assert within["top"]["n"] == within["middle"]["n"] == 40
    assert within["top"]["spearman"] == pytest.approx(_spearman(x[top], y[top]))
    assert within["middle"]["spearman"] == pytest.approx(_spearman(x[~top], y[~top]))
    assert round(within["top"]["spearman"], 2) == 0.29 and round(within["middle"]["spearman"], 2) == -0.02
    head = s["headline"][0]
    assert head["scope"] == "extreme groups" and (head["n_scored"], head["n_with_importance"]) == (80, 832)
    assert head["within_top"] == within["top"]["spearman"]
    # the single-rater survey has no noise ceiling, and every place says so
    assert s["noise_ceiling"]["human"]["reason"] == "no noise ceiling: only one rater"
    html = page.read_text()
    md = (tmp_path / "r" / "summary.md").read_text()
    for text in ("extreme groups", "within top", "no noise ceiling: only one rater", "80 of 832"):
        assert text in html and text in md, text
    assert "split-half reliability needs a run folder" in html  # why there is no importance reliability
    assert "no automatic raters: a bare importance CSV has none" in html


# --------------------------------------------------------------------------------------------- scope rule


def test_scope_rule_and_correlations_against_scipy() -> None:
    rng = np.random.default_rng(0)
    n = 200
    feats = np.arange(n)
    imp = rng.permutation(n).astype(float)
    truth = imp / n + rng.normal(0, 0.3, n)
    order = np.argsort(imp)
    top_ids = np.sort(feats[order[-20:]])
    mid_ids = np.sort(feats[order[(n - 20) // 2 : (n - 20) // 2 + 20]])
    groups = np.sort(np.concatenate([top_ids, mid_ids]))
    almost = np.sort(rng.choice(n, 192, replace=False))  # 96 % of the features
    most = np.sort(rng.choice(n, 180, replace=False))  # 90 %
    half_groups = np.sort(np.concatenate([top_ids[:15], mid_ids[:15]]))
    raters = [
        _rater("all", feats, truth),
        _rater("almost", almost, truth[almost]),
        _rater("most", most, truth[most]),
        _rater("groups", groups, truth[groups]),
        _rater("some_groups", half_groups, truth[half_groups]),
    ]
    s = analyze(Importance(feats, imp), raters, FAST).summary
    scope = {name: (c["scope"], c["n"]) for name, c in s["correlations"].items()}
    assert scope == {
        "all": ("layer-wide", 200),
        "almost": ("layer-wide", 192),
        "most": ("subset", 180),
        "groups": ("extreme groups", 40),
        "some_groups": ("extreme groups", 30),
    }
    assert s["raters"]["most"]["scope_label"].startswith("subset: scored 180 of 200")
    assert s["raters"]["almost"]["scope_label"] == "layer-wide: scored 192 of 200"
    assert [h["rater"] for h in s["headline"]] == [r.name for r in raters]
    c = s["correlations"]
    assert c["all"]["spearman"] == pytest.approx(_spearman(imp, truth))
    assert c["most"]["spearman"] == pytest.approx(_spearman(imp[most], truth[most]))
    assert c["all"]["kendall"]["value"] == pytest.approx(stats.kendalltau(imp, truth).statistic)
    # the layer-wide rater also gets the extreme-groups view, equal to scipy on the 40 group features
    eg = c["all"]["extreme_groups"]
    assert eg["n"] == 40 and eg["spearman"] == pytest.approx(_spearman(imp[groups], truth[groups]))
    assert eg["within"]["top"]["spearman"] == pytest.approx(_spearman(imp[top_ids], truth[top_ids]))
    assert eg["within"]["middle"]["spearman"] == pytest.approx(_spearman(imp[mid_ids], truth[mid_ids]))
    assert c["groups"]["spearman"] == pytest.approx(eg["spearman"])  # its scope is the extreme groups
    sub = c["some_groups"]["extreme_groups"]["within"]["top"]
    assert sub["n"] == 15 and sub["spearman"] == pytest.approx(_spearman(imp[top_ids[:15]], truth[top_ids[:15]]))


# --------------------------------------------------------------------------------------------- data notes


def test_identical_causes_become_one_line(tmp_path: Path) -> None:
    n = 50
    imp = Importance(np.arange(n), np.arange(n, dtype=float))
    raters = []
    for k in range(25):  # 25 raters that did not score the same 40 features (e.g. not visualised)
        lines = ["feature_ind,I,q4,p_value,I_oof"]
        for f in range(n):
            scored = f < 10
            q4 = "" if (scored and f < 3 and k < 5) else f"{f / n:.3f}"  # raters 0..4: q4 missing at 0..2
            lines.append(f"{f},{f / n if scored else ''},{q4 if scored else ''},,{'' if f else 0.5}")
        (tmp_path / f"r{k:02d}.csv").write_text("\n".join(lines) + "\n")
        (tmp_path / f"r{k:02d}.json").write_text(json.dumps({"rater": f"r{k:02d}", "components": ["q4"]}))
        raters.append(read_rating_csv(tmp_path / f"r{k:02d}.csv"))
    s = analyze(imp, raters, AnalysisSettings(5, 5, 0, 0)).summary
    coverage = [i for i in s["issues"] if i["kind"] == "coverage"]
    assert len(coverage) == 1
    line = coverage[0]
    assert line["subjects"] == [f"r{k:02d}" for k in range(25)] and line["features"] == list(range(10, 50))
    assert line["message"].startswith("features with an importance (of 50) without a score: r00, r01,")
    assert "40 feature(s) (10, 11, 12" in line["message"]
    nan = [i for i in s["issues"] if i["kind"] == "not_numeric"]
    assert len(nan) == 1 and nan[0]["subjects"] == [f"r{k:02d}" for k in range(5)]
    assert "r00 (q4), r01 (q4)" in nan[0]["message"] and nan[0]["features"] == [0, 1, 2]
    # diagnostic extras (p_value) and out-of-fold columns are NaN by design: no note about them
    assert not any("p_value" in i["message"] or "I_oof" in i["message"] for i in s["issues"])
    assert len(s["issues"]) == 2


def test_group_issues_keeps_detail_when_a_cause_occurs_once() -> None:
    one = Issue("coverage", "rater 'a' scored 8 of 10", [8, 9], subject="a", cause="without a score")
    plain = Issue("duplicate", "file: 1 feature on identical rows", [3])
    two = [
        Issue("not_numeric", "x", [1], subject="a", column="q1", cause="missing"),
        Issue("not_numeric", "y", [1], subject="a", column="q3", cause="missing"),
        Issue("not_numeric", "z", [2, 4], subject="b", column="q1", cause="missing"),
    ]
    merged = group_issues([one, plain, *two])
    assert [m.message for m in merged[:2]] == ["rater 'a' scored 8 of 10", "file: 1 feature on identical rows"]
    assert merged[2].message == "missing: a (q1, q3): 1 feature(s) (1); b (q1): 2 feature(s) (2, 4)"
    assert merged[2].features == [1, 2, 4] and merged[2].subjects == ["a", "b"]


# --------------------------------------------------------------------------------------------- empty sections


def test_empty_sections_say_why(tmp_path: Path) -> None:
    from autointerp.report.sources import report_from_files, report_from_run
    from tests.report_fixtures import build_run

    ctx = build_run(tmp_path / "run", with_media=False)
    ctx.config.rate.human = []  # a run without a survey
    ctx.config.report.bootstrap = ctx.config.report.permutations = 50
    page = report_from_run(ctx.root, tmp_path / "rep", config=ctx.config)
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    why = "no human answers in this run (rate.human is empty); see docs/survey.md"
    assert s["agreement"] == {"good": {}, "noise": {}} and s["empty_reasons"]["agreement"] == why
    assert s["noise_ceiling"] == {} and why in s["empty_reasons"]["noise_ceiling"]
    html = page.read_text()
    assert html.count(why) >= 2  # the agreement table and the noise ceiling
    assert why in (tmp_path / "rep" / "summary.md").read_text()
    # a bare importance file without answers: every rater-dependent section says why it is empty
    imp = tmp_path / "imp.csv"
    imp.write_text("model,layer,feature_ind,importance\n" + "".join(f"M,L,{f},{f % 7}\n" for f in range(20)))
    bare = report_from_files(imp, tmp_path / "bare", settings=AnalysisSettings(5, 5, 0, 0)).read_text()
    for text in (
        "no raters: give survey answers with --human FILE",
        "no human answers given (--human FILE)",
        "split-half reliability needs a run folder",
    ):
        assert text in bare, text


# --------------------------------------------------------------------------------------------- importance reliability


def _planted_reliability(features: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(
        method="images",
        n_images=500,
        n_units=500,
        warning=None,
        feature_ind=features,
        measures={
            "importance": {"split_half_spearman_brown": 0.64, "split_half_raw": 0.47, "odd_even": 0.63, "n_splits": 20},
            "mean_delta_logprob_true": {
                "split_half_spearman_brown": 0.81,
                "split_half_raw": 0.68,
                "odd_even": 0.8,
                "n_splits": 20,
            },
        },
        per_feature={
            "importance_ci_low": features - 1.0,
            "importance_ci_high": features + 1.0,
            "importance": features.astype(float),
        },
    )


@pytest.fixture
def reliability_module() -> types.ModuleType:
    """``autointerp.analysis.reliability`` (the real module: the report imports it plainly)."""
    import autointerp.analysis.reliability as module

    return module


def test_both_importance_measures_with_reliability_and_corrected_correlations(
    tmp_path: Path, reliability_module: types.ModuleType
) -> None:
    rng = np.random.default_rng(5)
    n = 60
    top_k = rng.poisson(10, n).astype(float)
    logp = top_k * 0.01 + rng.normal(0, 0.05, n)
    path = tmp_path / "importance.csv"
    path.write_text(
        "model,layer,feature_ind,importance,mean_delta_logprob_true,method\n"
        + "".join(f"M,L,{f},{top_k[f]:g},{logp[f]:.6f},exact\n" for f in range(n))
    )
    imp = read_importance_csv(path)
    assert set(imp.measures) == {"mean_delta_logprob_true"}
    rater_i = logp + rng.normal(0, 0.05, n)
    rater = _rater("auto", np.arange(n), rater_i)
    a = analyze(imp, [rater], AnalysisSettings(10, 10, 0, 0), reliability=_planted_reliability(np.arange(n)))
    im = json.loads(json.dumps(a.summary["importance_measures"], allow_nan=False))
    assert im["reliability"]["available"] and im["reliability"]["n_images"] == 500
    assert im["measures"]["importance"]["reliability"] == 0.64
    assert im["measures"]["mean_delta_logprob_true"]["reliability"] == 0.81
    got = im["correlations"]["auto"]
    r_top_k = _spearman(top_k, rater_i)
    r_logp = _spearman(logp, rater_i)
    assert got["importance"]["spearman"] == pytest.approx(r_top_k) and got["importance"]["n"] == n
    assert got["mean_delta_logprob_true"]["spearman"] == pytest.approx(r_logp)
    assert got["importance"]["corrected"] == pytest.approx(r_top_k / math.sqrt(0.64))
    assert got["mean_delta_logprob_true"]["corrected"] == pytest.approx(r_logp / math.sqrt(0.81))
    np.testing.assert_allclose(a.measures["importance_ci_low"], np.arange(n) - 1.0)
    assert "importance" not in a.measures  # only the per-feature intervals go to the gallery

    # The reliability is the layer's: a rater that scored only the two extreme groups gets no corrected value.
    ids = np.arange(n)
    rated = ids[np.argsort(-top_k, kind="stable")][:10]
    extreme = _rater("extreme", rated, rater_i[rated])
    b = analyze(imp, [rater, extreme], AnalysisSettings(10, 10, 0, 0), reliability=_planted_reliability(ids))
    got = b.summary["importance_measures"]["correlations"]["extreme"]["importance"]
    assert b.summary["raters"]["extreme"]["scope"] != "layer-wide"
    assert got["corrected"] is None and "reliability is layer-wide" in got["corrected_reason"]
    assert b.summary["importance_measures"]["correlations"]["auto"]["importance"]["corrected"] is not None

    # Through a run folder: the report shows the measures, their reliabilities and the corrected values.
    from autointerp.report.sources import report_from_run
    from tests.report_fixtures import build_run

    ctx = build_run(tmp_path / "run", with_media=False)
    ctx.config.report.bootstrap = ctx.config.report.permutations = 0
    planted = _planted_reliability(np.arange(48))
    reliability_module.read_importance_reliability = lambda importance_dir: planted
    page = report_from_run(ctx.root, tmp_path / "rep", config=ctx.config).read_text()
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["importance_measures"]["reliability"]["available"] and "importance_reliability" not in s["empty_reasons"]
    good = s["importance_measures"]["correlations"]["good"]["importance"]
    assert good["corrected"] == pytest.approx(good["spearman"] / 0.8)
    for text in (
        "Importance measures and their reliability",
        "0.640",
        "corrected for unreliability",
        "importance CI low",
        f"{good['corrected']:.3f}",
    ):
        assert text in page, text
    # a run whose importance stage wrote no reliability data says so in one line
    reliability_module.read_importance_reliability = lambda importance_dir: None
    report_from_run(ctx.root, tmp_path / "rep2", config=ctx.config)
    s = json.loads((tmp_path / "rep2" / "summary.json").read_text())
    assert "has no per-image importance data" in s["empty_reasons"]["importance_reliability"]
    assert s["importance_measures"]["correlations"]["good"]["importance"]["corrected"] is None
