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
        participant=np.array([f"p{i}" for i in p]),
        feature_ind=f.astype(np.int64),
        Q={c: values.copy() for c in ("question1", "question3", "question4", "question5", "question6")},
        text=np.array([""] * len(p)),
        source=np.array([""] * len(p)),
        model=None,
        layer=None,
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
    assert perfect["individual_lower"] == pytest.approx(1) and perfect["individual_upper"] == pytest.approx(1)
    assert perfect["split_half"] == pytest.approx(1) and perfect["ceiling"] == pytest.approx(1)
    noise = np.vstack([rng.integers(1, 6, 40) for _ in range(4)]).astype(float)
    noisy = noise_ceiling(answer_table(noise), "I", n_splits=20)
    assert abs(noisy["individual_lower"]) < 0.35 and noisy["individual_upper"] > noisy["individual_lower"]
    assert abs(noisy["krippendorff_alpha"]) < 0.2 and abs(noisy["split_half"]) < 0.5
    # agreeing but not identical raters sit in between
    mixed = np.clip(np.vstack([truth + rng.integers(-1, 2, 40) for _ in range(3)]), 1, 5)
    mid = noise_ceiling(answer_table(mixed), "q4", n_splits=20)
    assert noisy["individual_lower"] < mid["individual_lower"] < 1
    assert noisy["split_half"] < mid["split_half"] < 1
    one = noise_ceiling(answer_table(truth[None]), "I")
    assert one["split_half"] is None and one["ceiling"] is None and one["reason"] == "no noise ceiling: only one rater"
    apart = np.vstack([truth, truth])
    apart[0, :20], apart[1, 20:] = np.nan, np.nan  # two raters, no shared feature
    disjoint = noise_ceiling(answer_table(apart), "I")
    assert disjoint["split_half"] is None and "share only 0 feature(s)" in disjoint["reason"]


def test_noise_ceiling_with_partial_overlap() -> None:
    rng = np.random.default_rng(2)
    truth = rng.integers(1, 6, 30).astype(float)
    m = np.vstack([truth, truth, truth])
    m[0, :10] = np.nan
    m[1, 10:20] = np.nan
    m[2, 20:] = np.nan  # every feature has exactly two raters
    res = noise_ceiling(answer_table(m), "q1", n_splits=10)
    assert res["n_features_shared"] == 30 and res["individual_lower"] == pytest.approx(1)
    assert res["split_half"] == pytest.approx(1) and res["raters_per_feature"] == pytest.approx(2)


def test_importance_reader_reports_duplicates_and_nan(tmp_path: Path) -> None:
    path = tmp_path / "imp.csv"
    path.write_text(
        "model,layer,feature_ind,importance\nM,L,0,5\nM,L,1,nan\nM,L,2,abc\nM,L,3,7\nM,L,3,7\n"
        "M,L,4,1\nM,L,4,2\nM,L,x,3\n"
    )
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
    (tmp_path / "fit.csv").write_text(
        "feature_ind,I,q1,q3,q4,I_oof,q1_oof,label\n0,0.5,0.1,0.2,0.3,0.4,0.1,dog\n1,0.6,0.2,0.3,0.4,0.5,0.2,cat\n"
    )
    (tmp_path / "fit.json").write_text(
        json.dumps({"rater": "calibrated_clip", "higher_is_better": True, "components": ["q1", "q3", "q4"]})
    )
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
    assert cover[0]["features"] == [1, 2] and "rated 1 of 3 feature(s)" in cover[0]["message"]


def _rater(name: str, features, values, human: bool = False, **components) -> RaterScores:
    return RaterScores(
        name,
        np.asarray(features),
        np.asarray(values, dtype=float),
        {k: np.asarray(v, dtype=float) for k, v in components.items()},
        is_human=human,
    )


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


# --------------------------------------------------------------------------------------------- alpha only on one scale


def _write_rater(folder: Path, name: str, columns: dict[str, np.ndarray], meta: dict) -> RaterScores:
    n = len(next(iter(columns.values())))
    lines = ["feature_ind," + ",".join(columns)]
    lines += [f"{f}," + ",".join("" if np.isnan(v[f]) else f"{v[f]:.6f}" for v in columns.values()) for f in range(n)]
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    (folder / f"{name}.json").write_text(json.dumps({"rater": name, "higher_is_better": True, **meta}))
    return read_rating_csv(folder / f"{name}.csv")


def test_alpha_and_mae_only_for_out_of_fold_calibrated_scales(tmp_path: Path) -> None:
    from tests.test_analysis_stats import alpha_by_pairs

    rng = np.random.default_rng(3)
    n = 40
    human_i = rng.random(n)
    oof = np.clip(human_i + rng.normal(0, 0.15, n), 0, 1)
    oof[30:] = np.nan  # out-of-fold predictions exist for the human-rated features only
    human_i[30:] = np.nan
    fitted = _write_rater(
        tmp_path,
        "fitted",
        {"I": np.where(np.isnan(oof), 0.5, human_i), "I_oof": oof},
        {"calibrated": True, "scale": {"kind": "fitted_to_human", "calibrated_to_human": True}},
    )
    plain = _write_rater(
        tmp_path,
        "plain",
        {"I": np.nan_to_num(human_i, nan=0.3) ** 2},
        {"scale": {"kind": "null_percentile", "calibrated_to_human": False}},
    )
    in_sample = _write_rater(tmp_path, "in_sample", {"I": np.nan_to_num(human_i, nan=0.3)}, {"calibrated": True})
    denied = _write_rater(
        tmp_path,
        "denied",
        {"I": np.nan_to_num(human_i), "I_oof": oof},
        {"scale": {"kind": "probability", "calibrated_to_human": False}},
    )
    no_scale = _write_rater(tmp_path, "no_scale", {"I": np.nan_to_num(human_i, nan=0.3)}, {})
    human = _rater("human", np.arange(30), human_i[:30], human=True)
    second = _rater("human_b", np.arange(30), np.clip(human_i[:30] + 0.1, 0, 1), human=True)
    key = RaterScores("key", np.arange(n), np.where(np.isnan(oof), 0.2, human_i), is_reference=True)
    imp = Importance(np.arange(n), rng.random(n))
    a = analyze(imp, [fitted, plain, in_sample, denied, no_scale, human, second, key], FAST)
    agree = json.loads(json.dumps(a.summary, allow_nan=False))["agreement"]

    res = agree["fitted"]["human"]["I"]  # the only pair on one scale: alpha from the out-of-fold column
    ok = np.isfinite(oof)
    assert res["n"] == 30 and res["out_of_fold"] is True and "alpha_reason" not in res
    assert res["krippendorff_alpha"] == pytest.approx(alpha_by_pairs(np.vstack([oof[ok], human_i[ok]])))
    assert res["krippendorff_alpha"] < 0.95  # not the in-sample I, which equals the human answers
    assert res["mae"] == pytest.approx(np.abs(oof[ok] - human_i[ok]).mean())
    assert res["spearman"] == pytest.approx(stats.spearmanr(oof[ok], human_i[ok]).statistic)
    assert agree["fitted"]["human"]["krippendorff_alpha"] == res["krippendorff_alpha"]  # flat keys = I
    for name in ("plain", "denied", "no_scale"):
        r = agree[name]["human"]
        assert r["krippendorff_alpha"] is None and r["mae"] is None, name
        assert r["alpha_reason"] == r["I"]["alpha_reason"] == "n/a (uncalibrated scale)", name
        assert isinstance(r["spearman"], float) and isinstance(r["kendall"], float), name  # rank agreement stays
    assert agree["plain"]["human"]["spearman"] == pytest.approx(1)  # a monotone transform: same ranking
    assert "in sample" in agree["in_sample"]["human"]["alpha_reason"]
    assert agree["in_sample"]["human"]["krippendorff_alpha"] is None
    # against an answer key the scales differ even for the calibrated rater
    assert agree["fitted"]["key"]["krippendorff_alpha"] is None
    assert agree["fitted"]["key"]["alpha_reason"] == "n/a (uncalibrated scale)"
    # two human raters share the answer scale
    hh = a.summary["human_agreement"]["human"]["human_b"]
    assert hh["krippendorff_alpha"] == pytest.approx(
        alpha_by_pairs(np.vstack([human_i[:30], np.clip(human_i[:30] + 0.1, 0, 1)]))
    )
    raters = a.summary["raters"]
    assert raters["fitted"]["scale_kind"] == "fitted_to_human" and raters["fitted"]["out_of_fold"] == ["I"]
    assert raters["denied"]["out_of_fold"] == [] and raters["no_scale"]["scale_kind"] is None


def test_scale_entry_is_read_and_a_bad_one_is_a_note(tmp_path: Path) -> None:
    r = _write_rater(tmp_path, "odd", {"I": np.linspace(0, 1, 5)}, {"scale": "percent"})
    assert r.scale is None and any(i.kind == "bad_metadata" and "odd.json" in i.message for i in r.issues)
    key = _write_rater(tmp_path, "key", {"I": np.linspace(0, 1, 5)}, {"scale": {"kind": "answer_key"}})
    assert key.is_reference and not key.is_human and key.scale_kind == "answer_key"
    fitted = _write_rater(
        tmp_path,
        "fit",
        {"I": np.linspace(0, 1, 5)},
        {"scale": {"kind": "fitted_to_human", "calibrated_to_human": True}},
    )
    assert fitted.calibrated and not fitted.on_human_scale_out_of_fold("I")  # no I_oof column
    human = _rater("human", np.arange(5), np.linspace(0, 1, 5) ** 2, human=True)
    res = analyze(Importance(np.arange(5), np.arange(5.0)), [fitted, human], FAST).summary["agreement"]
    assert res["fit"]["human"]["alpha_reason"] == "n/a (calibrated in sample; no out-of-fold predictions)"


# --------------------------------------------------------------------------------------------- split-half ceiling


@pytest.mark.parametrize("k", [4, 5])
def test_split_half_reliability_of_the_mean_matches_simulation(k: int) -> None:
    """Raters = true score + noise; the split-half estimate of the reliability of the mean of k raters
    must match the simulated one: the correlation between the means of two independent panels of k."""
    from autointerp.analysis.agreement import split_half_reliability

    rng = np.random.default_rng(10 + k)
    n, single = 400, 0.3  # single-rater reliability 0.3: noise variance (1 - 0.3) / 0.3
    sigma = np.sqrt((1 - single) / single)
    estimates, simulated, truth_corr = [], [], []
    for _ in range(6):
        truth = rng.normal(size=n)
        panel = truth + rng.normal(0, sigma, (k, n))
        other = truth + rng.normal(0, sigma, (k, n))
        estimates.append(split_half_reliability(panel, n_splits=30, seed=1)["reliability"])
        simulated.append(stats.spearmanr(panel.mean(0), other.mean(0)).statistic)
        truth_corr.append(stats.spearmanr(truth, panel.mean(0)).statistic)
    theory = k * single / (1 + (k - 1) * single)  # Spearman–Brown for Pearson; Spearman is close
    assert np.mean(simulated) == pytest.approx(theory, abs=0.04)
    assert np.mean(estimates) == pytest.approx(np.mean(simulated), abs=0.04)
    # a rater that knew the true score would correlate with the mean at about sqrt(reliability)
    assert np.mean(truth_corr) == pytest.approx(np.sqrt(np.mean(estimates)), abs=0.04)
    # uneven coverage: every feature rated by a random 2..k of the raters still gives an estimate
    ragged = panel.copy()
    for f in range(n):
        ragged[rng.choice(k, size=rng.integers(0, k - 1), replace=False), f] = np.nan
    res = split_half_reliability(ragged, n_splits=10)
    assert res["n_features"] == n and 0 < res["reliability"] < np.mean(estimates) + 0.05


def test_single_rater_study_has_no_noise_ceiling() -> None:
    truth = np.random.default_rng(4).integers(1, 6, (1, 30)).astype(float)
    table = answer_table(truth)
    from autointerp.analysis.inputs import human_rater
    from autointerp.human_answers import aggregate

    human = human_rater(aggregate(table), table)
    a = analyze(Importance(np.arange(30), np.arange(30.0)), [human], FAST)
    assert a.summary["noise_ceiling"]["human"] == {"available": False, "reason": "no noise ceiling: only one rater"}
    assert a.summary["raters"]["human"]["scale_kind"] == "human"
    # aggregated human ratings without the answers: one rater per feature says so too
    flat = _rater("human_file", np.arange(30), truth[0] / 5, human=True, n_raters=np.ones(30))
    b = analyze(Importance(np.arange(30), np.arange(30.0)), [flat], FAST)
    assert b.summary["noise_ceiling"]["human_file"]["reason"] == "no noise ceiling: only one rater"


def test_split_half_steps_up_the_mean_correlation_not_each_split() -> None:
    # two raters of five features that disagree: single splits near r = -1 would blow up (or drop out as NaN)
    # if each were stepped up first; the mean half correlation stepped up once is 2r / (1 + r)
    from autointerp.analysis.agreement import split_half_reliability

    panel = np.random.default_rng(1).normal(size=(2, 5))
    res = split_half_reliability(panel, seed=0)
    r = res["raw"]
    assert res["factor"] == pytest.approx(2.0)
    assert res["reliability"] == pytest.approx(2 * r / (1 + r))
