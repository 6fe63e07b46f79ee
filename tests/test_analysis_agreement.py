"""Agreement, noise ceiling, tolerant input readers and the analysis on imperfect data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from autointerp.analysis import AnalysisSettings, RaterScores, analyze, read_importance_csv, read_rating_csv
from autointerp.analysis.agreement import noise_ceiling, pair_agreement
from autointerp.analysis.inputs import Importance
from autointerp.human_answers import AnswerTable

FAST = AnalysisSettings(top_n=5, middle_n=5, n_boot=200, n_perm=200, seed=0)


def answer_table(matrix: np.ndarray) -> AnswerTable:
    """Per-answer table from a participants × features matrix of raw 1..5 answers (NaN = not rated);
    the same answer is used for q1, q3 and q4."""
    p, f = np.nonzero(np.isfinite(matrix))
    values = matrix[p, f]
    return AnswerTable(
        participant=np.array([f"p{i}" for i in p]), feature_ind=f.astype(np.int64),
        Q={c: values.copy() for c in ("question1", "question3", "question4", "question5", "question6")},
        text=np.array([""] * len(p)), source=np.array([""] * len(p)), model=None, layer=None,
    )


def test_pair_agreement_against_references() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(30)
    y = x + rng.normal(0, 0.1, 30)
    y[3] = np.nan
    res = pair_agreement(x, y)
    ok = np.isfinite(y)
    assert res["n"] == 29
    assert res["spearman"] == pytest.approx(stats.spearmanr(x[ok], y[ok]).statistic)
    assert res["kendall"] == pytest.approx(stats.kendalltau(x[ok], y[ok]).statistic)
    assert res["mae"] == pytest.approx(np.abs(x[ok] - y[ok]).mean())
    same = pair_agreement(x, x)
    assert same["spearman"] == pytest.approx(1) and same["krippendorff_alpha"] == pytest.approx(1) and same["mae"] == 0
    shifted = pair_agreement(x, x + 0.5)  # same ranking, different values: alpha punishes, rho does not
    assert shifted["spearman"] == pytest.approx(1) and shifted["krippendorff_alpha"] < 0.5
    const = pair_agreement(x, np.full(30, 0.2), ("auto", "human"))
    assert const["spearman"] is None and "human is constant" in const["reason"]


def test_noise_ceiling_perfect_and_noisy_raters() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(1, 6, 40).astype(float)
    perfect = noise_ceiling(answer_table(np.vstack([truth, truth, truth])), "q1", n_splits=20)
    assert perfect["krippendorff_alpha"] == pytest.approx(1)
    assert perfect["lower"] == pytest.approx(1) and perfect["upper"] == pytest.approx(1)
    assert perfect["split_half"] == pytest.approx(1)
    noise = np.vstack([rng.integers(1, 6, 40) for _ in range(4)]).astype(float)
    noisy = noise_ceiling(answer_table(noise), "I", n_splits=20)
    assert abs(noisy["lower"]) < 0.35 and noisy["upper"] > noisy["lower"]
    assert abs(noisy["krippendorff_alpha"]) < 0.2
    # agreeing but not identical raters sit in between
    mixed = np.clip(np.vstack([truth + rng.integers(-1, 2, 40) for _ in range(3)]), 1, 5)
    mid = noise_ceiling(answer_table(mixed), "q4", n_splits=20)
    assert noisy["lower"] < mid["lower"] < 1
    one = noise_ceiling(answer_table(truth[None]), "I")
    assert one["lower"] is None and "two or more participants" in one["reason"]


def test_noise_ceiling_with_partial_overlap() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 6, 30).astype(float)
    m = np.vstack([truth, truth, truth])
    m[0, :10] = np.nan
    m[1, 10:20] = np.nan
    m[2, 20:] = np.nan  # every feature has exactly two raters
    res = noise_ceiling(answer_table(m), "q1", n_splits=10)
    assert res["n_features_shared"] == 30 and res["lower"] == pytest.approx(1)


def test_importance_reader_reports_duplicates_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "imp.csv"
    path.write_text("model,layer,feature_ind,importance\nM,L,0,5\nM,L,1,nan\nM,L,2,abc\nM,L,3,7\nM,L,3,7\n"
                    "M,L,4,1\nM,L,4,2\nM,L,x,3\n")
    imp = read_importance_csv(path)
    assert imp.feature_ind.tolist() == [0, 1, 2, 3, 4]  # nothing silently dropped
    assert imp.importance[0] == 5 and imp.importance[3] == 7
    assert np.isnan(imp.importance[[1, 2, 4]]).all()
    kinds = {i.kind: i for i in imp.issues}
    assert kinds["duplicate"].features == [3]
    assert kinds["duplicate_conflict"].features == [4] and "rows 7, 8" in kinds["duplicate_conflict"].message
    assert kinds["not_numeric"].features == [1, 2]
    assert "row 9 ('x')" in kinds["bad_feature_id"].message


def test_rating_reader_components_oof_and_meta(tmp_path: Path) -> None:
    (tmp_path / "fit.csv").write_text("feature_ind,I,q1,q3,q4,I_oof,q1_oof,label\n0,0.5,0.1,0.2,0.3,0.4,0.1,dog\n"
                                      "1,0.6,0.2,0.3,0.4,0.5,0.2,cat\n")
    (tmp_path / "fit.json").write_text(json.dumps({"rater": "calibrated_clip", "higher_is_better": True,
                                                   "components": ["q1", "q3", "q4"]}))
    r = read_rating_csv(tmp_path / "fit.csv")
    assert r.name == "fit" and not r.is_human and r.calibrated
    assert set(r.components) == {"q1", "q3", "q4"} and set(r.oof) == {"I", "q1"}
    np.testing.assert_allclose(r.values("I", out_of_fold=True), [0.4, 0.5])
    np.testing.assert_allclose(r.values("q3", out_of_fold=True), [0.2, 0.3])
    (tmp_path / "human_survey.csv").write_text("feature_ind,I,n_raters\n0,0.5,2\n1,,0\n2,nan,0\n")
    human = read_rating_csv(tmp_path / "human_survey.csv")
    assert human.is_human and human.issues == []  # unrated rows are coverage, not bad values
    a = analyze(Importance(np.arange(3), np.arange(3.0)), [human], FAST)
    cover = [i for i in a.summary["issues"] if i["kind"] == "coverage"]
    assert cover[0]["features"] == [1, 2] and "rated 1 feature" in cover[0]["message"]


def _rater(name: str, features, values, human: bool = False, **components) -> RaterScores:
    return RaterScores(name, np.asarray(features), np.asarray(values, dtype=float),
                       {k: np.asarray(v, dtype=float) for k, v in components.items()}, is_human=human)


def test_analyze_bad_input_never_crashes_and_says_why() -> None:
    features = np.arange(30)
    importance = np.arange(30, dtype=float)
    importance[4] = np.nan
    imp = Importance(features, importance, "m", "l")
    good = _rater("good", features, importance / 30 + 0.01)
    const = _rater("const", features, np.full(30, 0.3))
    partial = _rater("partial", np.arange(25, 35), np.linspace(0, 1, 10))  # 30..34 have no importance
    human = _rater("human", features[::2], (importance[::2] / 30), human=True, q1=importance[::2] / 30)
    a = analyze(imp, [good, const, partial, human], FAST)
    s = json.loads(json.dumps(a.summary, allow_nan=False))  # JSON-clean
    assert s["n_features"] == 29 and s["n_features_total"] == 35
    assert s["correlations"]["const"]["spearman"] is None
    assert "constant" in s["correlations"]["const"]["reason"]
    assert s["correlations"]["good"]["spearman"] == pytest.approx(1)
    assert s["correlations"]["partial"]["n"] == 5
    kinds = [i["kind"] for i in s["issues"]]
    assert "missing_feature" in kinds and "undefined" in kinds
    missing = next(i for i in s["issues"] if i["kind"] == "missing_feature" and "no importance" in i["message"])
    assert missing["features"] == [30, 31, 32, 33, 34]
    assert s["agreement"]["const"]["human"]["spearman"] is None
    assert s["agreement"]["good"]["human"]["I"]["spearman"] == pytest.approx(1)
    assert "q1" not in s["agreement"]["good"]["human"]  # the automatic rater has no q1
    assert s["groups"]["top"]["n"] == 5 and 4 not in s["groups"]["top"]["features"]
    assert len(a.features) == 35  # gallery keeps every feature


def test_analyze_with_fewer_than_two_features() -> None:
    imp = Importance(np.array([3]), np.array([1.0]))
    a = analyze(imp, [_rater("r", [3], [0.5])], FAST)
    s = json.loads(json.dumps(a.summary, allow_nan=False))
    assert s["n_features"] == 1 and s["correlations"]["r"]["spearman"] is None
    assert s["groups"]["top"]["n"] == 0 and s["groups"]["comparison"]["r"]["reason"]
    assert any(i["kind"] == "too_few_features" for i in s["issues"])
    empty = analyze(Importance(np.array([], dtype=np.int64), np.array([])), [], FAST)
    assert empty.summary["n_features"] == 0 and empty.summary["importance"]["mean"] is None
