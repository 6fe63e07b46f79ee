"""`auto_I`: components on the common scale, fitted to human answers out of fold (calibrations and weights).

Planted cases: human answers generated from known weights of the automatic components plus noise
must give those weights back; a feature's out-of-fold prediction must not move when its own answers
change (it would under an in-sample fit); negative human I (q1 = 0 answers kept) is fitted, not
dropped; sources that are not on the common scale and too few rated features are one-line errors.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from rater_harness import check_rater, make_world

from autointerp.errors import ConfigError, UserError
from autointerp.rating import RATERS, Rater, RatingContext, ScoreTable, create_rater, register_rater
from autointerp.survey.export import COLUMNS
from raters.auto_i import HumanFit, agreement, check_source, fit_out_of_fold, nonnegative_combination

HEADER = list(COLUMNS)  # the survey export's columns: the study format with a participant column


# ------------------------------------------------------------------------------------------ planted sources
class PlantedSources(Rater):
    """A source rater with planted components (test only; registered by the ``planted`` fixture)."""

    name = "_planted_sources"
    description = "planted q1q3 and q4 on the common scale"
    components = ("q1q3", "q4")
    scale = "null_percentile"
    values: ClassVar[dict[int, tuple[float, float]]] = {}

    def score(self, ctx: RatingContext, features) -> ScoreTable:
        v = np.array([self.values.get(int(f), (np.nan, np.nan)) for f in features], dtype=np.float64).reshape(-1, 2)
        return self.table(features, I=v.mean(axis=1), components={"q1q3": v[:, 0], "q4": v[:, 1]})


SOURCES = {"q13_source": "_planted_sources.q1q3", "q4_source": "_planted_sources.q4"}


@pytest.fixture(scope="module")
def planted():
    register_rater(PlantedSources)
    yield PlantedSources
    RATERS.unregister(PlantedSources.name)


def planted_world(
    root: Path,
    n: int,
    rated: int,
    seed: int = 0,
    invalid: dict[int, int] | None = None,
    participants: int = 6,
    human_invalid: str = "keep",
):
    """A run folder of ``n`` features with planted sources and survey answers for the first ``rated``.

    Human q1·q3 ≈ 0.05 + 0.9·q̂13 (question3 is always 5, so q1·q3 = q1) and human q4 ≈ 0.3 + 0.4·q̂4,
    as 1..5 answers of ``participants`` people with noise; ``invalid`` = {feature: participants answering
    question1 = 0 and question4 = 1}.
    """
    rng = np.random.default_rng([seed, 7])
    world = make_world(root / "run", n_features=n, n_images=60, bottom=False)
    x13, x4 = rng.random(n), rng.random(n)
    PlantedSources.values = {f: (float(x13[f]), float(x4[f])) for f in range(n)}
    rows = []
    for f in range(rated):
        bad = (invalid or {}).get(f, 0)
        for p in range(participants):
            q1 = int(np.clip(round(1 + 4 * (0.05 + 0.9 * x13[f]) + rng.normal(0, 0.6)), 1, 5))
            q4 = int(np.clip(round(1 + 4 * (0.3 + 0.4 * x4[f]) + rng.normal(0, 0.6)), 1, 5))
            if p < bad:
                q1, q4 = 0, 1
            rows.append(["planted", "layer", f, q1, "", 5, q4, 3, 3, f"p{p}"])
    path = root / "answers.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    world.run.config.rate.human = [str(path)]
    world.run.config.rate.human_invalid = human_invalid
    return world, x13, x4, path


def human_columns(world, features):
    table = create_rater("human").score(world.context(), features)
    return table.components["q1q3"], table.components["q4"], table.I


# ------------------------------------------------------------------------------------------ pure functions
def planted_arrays(seed: int, n: int = 60, b4: float = 0.4):
    """Continuous human components from known weights: h13 = 0.05 + 0.9·x13, h4 = 0.3 + b4·x4 (+ noise)."""
    rng = np.random.default_rng(seed)
    x13, x4 = rng.random(n), rng.random(n)
    h13 = 0.05 + 0.9 * x13 + 0.05 * rng.normal(size=n)
    h4 = 0.3 + b4 * x4 + 0.05 * rng.normal(size=n) if b4 else 0.5 + 0.2 * rng.normal(size=n)
    return x13, x4, h13, h4, (h13 + h4) / 2


def test_fitted_weights_recover_the_planted_weights():
    """human I = (h13 + h4)/2 = 0.175 + 0.45·q̂13 + 0.2·q̂4 (+ noise): the linear fit gives those numbers back
    as its weights on the sources, and weights ≈ 0.5/0.5 on the calibrated components (isotonic too)."""
    x13, x4, h13, h4, h_i = planted_arrays(0)
    lin = fit_out_of_fold(x13, x4, h13, h4, h_i, "linear", 5, seed=0)["model"].describe()
    implied = lin["linear_in_sources"]
    assert implied["q1q3"] == pytest.approx(0.45, abs=0.03) and implied["q4"] == pytest.approx(0.2, abs=0.03)
    assert implied["intercept"] == pytest.approx(0.175, abs=0.03)
    iso = fit_out_of_fold(x13, x4, h13, h4, h_i, "isotonic", 5, seed=0)["model"].describe()
    for weights in (lin, iso):
        assert weights["q1q3"] == pytest.approx(0.5, abs=0.08) and weights["q4"] == pytest.approx(0.5, abs=0.08)
    # a second draw with other weights: q̂4 twice as important
    x13, x4, h13, h4, _ = planted_arrays(1)
    h4 = 0.1 + 0.8 * x4 + 0.05 * np.random.default_rng(9).normal(size=len(x4))
    implied = fit_out_of_fold(x13, x4, h13, h4, (h13 + h4) / 2, "linear", 5, seed=2)["model"].describe()
    assert implied["linear_in_sources"]["q4"] == pytest.approx(0.4, abs=0.03)


def test_a_component_that_does_not_predict_its_human_counterpart_gets_no_weight():
    x13, x4, h13, h4, h_i = planted_arrays(2, b4=0.0)  # human q4 unrelated to q̂4
    iso = fit_out_of_fold(x13, x4, h13, h4, h_i, "isotonic", 5, seed=0)["model"].describe()
    assert iso["q4"] < 0.05 and iso["q1q3"] > 0.35
    lin = fit_out_of_fold(x13, x4, h13, h4, h_i, "linear", 5, seed=0)["model"].describe()
    assert abs(lin["linear_in_sources"]["q4"]) < 0.05


def test_nonnegative_combination_matches_a_free_intercept_least_squares_when_unconstrained():
    rng = np.random.default_rng(3)
    c = rng.random((40, 2))
    y = 0.2 + c @ np.array([0.7, 0.1]) + 0.01 * rng.normal(size=40)
    b, w = nonnegative_combination(c, y)
    ref = np.linalg.lstsq(np.column_stack([np.ones(40), c]), y, rcond=None)[0]
    np.testing.assert_allclose([b, *w], ref, atol=1e-10)
    # a negative true weight is clipped to 0 and the intercept refitted
    b, w = nonnegative_combination(c, 0.5 - 0.6 * c[:, 1] + 0.3 * c[:, 0])
    assert w[1] == 0.0 and w[0] > 0


def test_out_of_fold_prediction_never_uses_the_features_own_answer():
    """Changing one row's human answers leaves its own out-of-fold prediction exactly as it was (an
    in-sample fit would move it), while rows of other folds, whose models saw that row, move."""
    x13, x4, h13, h4, h_i = planted_arrays(4, n=30)
    j = 7
    h13b, h4b = h13.copy(), h4.copy()
    h13b[j], h4b[j] = h13[j] + 0.8, h4[j] - 0.6  # far from what its components predict
    h_ib = (h13b + h4b) / 2
    for method in ("isotonic", "linear"):
        a = fit_out_of_fold(x13, x4, h13, h4, h_i, method, 5, seed=1)
        b = fit_out_of_fold(x13, x4, h13b, h4b, h_ib, method, 5, seed=1)
        for name in ("I", "q1q3", "q4"):
            assert a[name][j] == b[name][j], (method, name)
        assert np.sum(~np.isclose(a["I"], b["I"])) >= 5, method  # the other folds did see the change
        # the check has teeth: an in-sample fit moves the row's own prediction
        ins_a = HumanFit.fit(x13, x4, h13, h4, h_i, method, 5, 1).predict(x13[j : j + 1], x4[j : j + 1])[2]
        ins_b = HumanFit.fit(x13, x4, h13b, h4b, h_ib, method, 5, 1).predict(x13[j : j + 1], x4[j : j + 1])[2]
        assert abs(ins_a[0] - ins_b[0]) > 1e-3, method


def test_negative_human_scores_are_fitted_on_the_human_scale():
    x13, x4, h13, h4, _ = planted_arrays(5, n=40)
    h13, h4 = h13 - 0.7, h4 - 0.3  # many human scores below 0 (as q1 = 0 answers kept would give)
    h_i = (h13 + h4) / 2
    assert (h_i < 0).sum() >= 10
    res = fit_out_of_fold(x13, x4, h13, h4, h_i, "isotonic", 5, seed=0)
    assert np.isfinite(res["I"]).all() and (res["I"] < 0).sum() >= 5  # unclipped out-of-fold predictions
    assert (res["q1q3"] < 0).sum() >= 10 and agreement(res["I"], h_i)["spearman"] > 0.8


# ------------------------------------------------------------------------------------------ the rater
def test_rater_fits_out_of_fold_with_negative_human_I_under_keep(planted, tmp_path):
    world, x13, x4, _ = planted_world(tmp_path, n=30, rated=24, invalid={3: 6, 11: 6, 17: 6})
    h13, h4, h_i = human_columns(world, world.features)
    assert (h_i[[3, 11, 17]] < 0).all()  # q1 = 0 answers kept: negative human I
    options = {**SOURCES, "calibration": "isotonic", "folds": 4}
    table = check_rater("auto_I", world, options=options)  # determinism, batch invariance, CSV round trip
    meta = table.meta["calibration"]
    assert table.meta["calibrated"] is True and table.meta["scale"]["kind"] == "fitted_to_human"
    assert meta["n"] == 24 and meta["n_negative_human_I"] == 3  # nothing dropped
    rated, unrated = np.arange(24), np.arange(24, 30)
    assert np.isfinite(table.extras["I_oof"][rated]).all() and np.isnan(table.extras["I_oof"][unrated]).all()
    np.testing.assert_array_equal(table.I[rated], table.extras["I_oof"][rated])
    for comp in ("q1q3", "q4"):
        np.testing.assert_array_equal(table.components[comp][rated], table.extras[f"{comp}_oof"][rated])
    assert np.isfinite(table.I).all() and ((table.I >= 0) & (table.I <= 1)).all()
    np.testing.assert_allclose(table.extras["q1q3_raw"], x13)
    np.testing.assert_allclose(table.extras["I_raw"], (x13 + x4) / 2)
    # the reported agreement is that of the out-of-fold column, computed here independently
    from scipy import stats

    oof = table.extras["I_oof"][rated]
    assert meta["out_of_fold"]["spearman"] == pytest.approx(stats.spearmanr(oof, h_i[rated]).statistic)
    assert meta["out_of_fold"]["mae"] == pytest.approx(np.mean(np.abs(oof - h_i[rated])))
    assert meta["out_of_fold"]["spearman"] > 0.6
    assert meta["weights"]["q1q3"] > 0.2 and meta["weights"]["q4"] > 0.1 and len(meta["fold_weights"]) == 4


def test_rater_out_of_fold_column_does_not_move_with_the_features_own_answers(planted, tmp_path):
    world, _, _, path = planted_world(tmp_path, n=20, rated=20)
    options = {**SOURCES, "calibration": "linear", "folds": 5}
    before = create_rater("auto_I", seed=2, **options).score(world.context(), world.features)
    human_before = human_columns(world, [6])[2][0]
    rows = list(csv.reader(open(path, newline="")))
    for row in rows[1:]:
        if row[2] == "6":  # every participant now rates feature 6 the opposite way
            row[3], row[6] = str(6 - int(row[3])), str(6 - int(row[6]))
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    after = create_rater("auto_I", seed=2, **options).score(world.context(), world.features)
    assert abs(human_columns(world, [6])[2][0] - human_before) > 0.1  # the new answers are read
    assert after.extras["I_oof"][6] == before.extras["I_oof"][6]
    assert after.extras["q4_oof"][6] == before.extras["q4_oof"][6]
    assert np.sum(after.extras["I_oof"] != before.extras["I_oof"]) >= 5


def test_without_answers_I_is_the_mean_of_the_sources(planted, tmp_path):
    world, x13, x4, _ = planted_world(tmp_path, n=8, rated=0)
    world.run.config.rate.human = []
    table = create_rater("auto_I", **SOURCES).score(world.context(), world.features)
    np.testing.assert_allclose(table.I, (x13 + x4) / 2)
    np.testing.assert_allclose(table.components["q1q3"], x13)
    assert np.isnan(table.extras["I_oof"]).all() and "calibrated" not in table.meta
    assert table.meta["scale"]["kind"] == "mean_of_null_percentiles"
    assert table.meta["scale"]["calibrated_to_human"] is False


def test_written_json_states_the_scale_of_the_run(planted, tmp_path):
    from autointerp.stages.rate import run_rate

    world, _, _, _ = planted_world(tmp_path, n=12, rated=12)
    world.run.config.rate.options["auto_I"] = dict(SOURCES)
    run_rate(world.run, raters=["auto_I"], dataset=world.dataset)
    meta = json.loads((world.root / "ratings" / "auto_I.json").read_text())
    assert meta["scale"]["kind"] == "fitted_to_human" and meta["scale"]["calibrated_to_human"] is True
    assert meta["calibration"]["out_of_fold"]["n"] == 12


def test_calibration_with_too_few_rated_features_is_an_error(planted, tmp_path):
    world, _, _, _ = planted_world(tmp_path, n=12, rated=6)
    with pytest.raises(ConfigError, match=r"only 6 feature\(s\) have both .* at least 10 \(min_human = 10") as info:
        create_rater("auto_I", **SOURCES).score(world.context(), world.features)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"at least 7 \(min_human = 3, folds = 7\)"):
        create_rater("auto_I", **SOURCES, min_human=3, folds=7).score(world.context(), world.features)
    ok = create_rater("auto_I", **SOURCES, min_human=6, folds=3).score(world.context(), world.features)
    assert ok.meta["calibration"]["n"] == 6
    none = create_rater("auto_I", **SOURCES, calibration="none").score(world.context(), world.features)
    assert "calibrated" not in none.meta  # calibration not asked for: no error, no fit


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "fid.kid",
            r"fid.kid is fid's raw statistic \(lower is better\), not a component on the common scale; use fid.I",
        ),
        ("fid.fd", r"fid.fd is not fid.I or a declared component of fid, so its scale and direction are unknown"),
        (
            "clip_coherence.coherence",
            r"clip_coherence's raw statistic \(higher is better\).*use clip_coherence.I, "
            r"clip_coherence.q4",
        ),
        ("human.q4", r"human scores are \(fitted to\) human answers"),
        ("auto_I.I", r"auto_I cannot use itself"),
        ("clip_coherence", r"must look like rater.component"),
    ],
)
def test_sources_off_the_common_scale_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        create_rater("auto_I", q4_source=spec)
    assert "\n" not in str(info.value) and "rate.options.auto_I.q4_source" in str(info.value)


def test_other_bad_options_are_one_line_errors():
    with pytest.raises(UserError, match="unknown rater 'nope'"):
        check_source("nope.I", "q13_source")
    assert check_source("fid.I", "q13_source") == ("fid", "I")
    for options, message in (
        ({"calibration": "magic"}, "calibration = 'magic'"),
        ({"folds": 1}, "folds = 1"),
        ({"min_human": "ten"}, "min_human = 'ten'"),
    ):
        with pytest.raises(ConfigError, match=message):
            create_rater("auto_I", **options)


def test_agreement_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(6)
    pred, truth = rng.random(30), rng.random(30) - 0.1
    a = agreement(pred, truth)
    assert a["spearman"] == pytest.approx(stats.spearmanr(pred, truth).statistic)
    assert a["pearson"] == pytest.approx(stats.pearsonr(pred, truth).statistic)
    assert a["mae"] == pytest.approx(np.mean(np.abs(pred - truth)))
    assert a["r2"] == pytest.approx(1 - np.sum((truth - pred) ** 2) / np.sum((truth - truth.mean()) ** 2))
