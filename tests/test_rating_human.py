"""The `human` rater (wrapping autointerp.human_answers) and `auto_I`'s calibration to human answers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from rater_harness import check_rater, make_world

from autointerp.errors import UserError
from autointerp.rating import create_rater
from autointerp.stages.rate import run_rate

HEADER = ["model", "layer", "neuron", "question1", "text_question", "question3", "question4", "question5", "question6"]


def write_answers(path: Path, rows: list[list], participant: str | None = None) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER + (["participant"] if participant else []))
        for row in rows:
            w.writerow(list(row) + ([participant] if participant else []))
    return path


def study_I(q1: float, q3: float, q4: float) -> float:
    """The study's formula on raw 1..5 answers, written out independently."""
    return ((q4 - 1) / 4 + (q1 - 1) / 4 * (q3 - 1) / 4) / 2


def planted_answers(world, rng: np.random.Generator, noise: float) -> list[list]:
    rows = []
    for f in world.features:
        base = 1 + 4 * world.purity[f]
        q = [int(np.clip(round(base + rng.normal(0, noise)), 1, 5)) for _ in range(5)]
        rows.append(["planted", "layer", f, q[0], "red things", q[1], q[2], q[3], q[4]])
    return rows


@pytest.fixture(scope="module")
def seed_study_world(tmp_path_factory, shared_dir):
    """A run folder over the study's 832 features (importance from the study) rated by its survey."""
    world = make_world(tmp_path_factory.mktemp("study"), n_features=3, n_images=60)
    src = shared_dir / "reference/seed_study/importance.csv"
    (world.root / "importance" / "importance.csv").write_text(src.read_text())
    world.run.config.rate.human = [str(shared_dir / "reference/seed_study/survey_results.csv")]
    world.run.config.rate.human_invalid = "keep"
    return world


def test_human_rater_reproduces_the_seed_study(seed_study_world, shared_dir):
    ctx = seed_study_world.context()
    feats = ctx.features
    assert len(feats) == 832
    table = create_rater("human").score(ctx, feats)
    rows = list(csv.DictReader(open(shared_dir / "reference/seed_study/survey_results.csv")))
    ref = {int(r["neuron"]): study_I(float(r["question1"]), float(r["question3"]), float(r["question4"])) for r in rows}
    rated = np.isfinite(table.I)
    assert rated.sum() == 80 and set(table.feature_ind[rated]) == set(ref)
    np.testing.assert_allclose(table.I[rated], [ref[int(f)] for f in table.feature_ind[rated]], atol=1e-12)
    np.testing.assert_allclose(
        table.components["q1q3"][rated] + table.components["q4"][rated], 2 * table.I[rated], atol=1e-12
    )
    assert (table.extras["n_raters"][rated] == 1).all() and (table.extras["n_raters"][~rated] == 0).all()
    # the published group means: importance > 50 → 0.56, the rest of the rated features → 0.24
    imp = np.array([ctx.importance[int(f)] for f in table.feature_ind])
    assert table.I[rated & (imp > 50)].mean() == pytest.approx(0.558, abs=5e-4)
    assert table.I[rated & (imp <= 50)].mean() == pytest.approx(0.240, abs=5e-4)


def test_invalid_answers_policy_is_passed_through(seed_study_world):
    ctx = seed_study_world.context()
    with pytest.raises(UserError, match="survey_results.csv"):
        create_rater("human", invalid="error").score(ctx, ctx.features)
    dropped = create_rater("human", invalid="drop").score(ctx, ctx.features)
    assert np.isfinite(dropped.I).sum() == 77  # three features had an out-of-range answer
    with pytest.raises(Exception, match="rate.options.human.invalid"):
        create_rater("human", invalid="ignore").score(ctx, ctx.features)


def test_several_participants_are_averaged_with_spread(tmp_path):
    world = make_world(tmp_path / "run", n_features=4, n_images=60)
    a = write_answers(
        tmp_path / "a.csv",
        [["planted", "layer", 0, 5, "", 5, 5, 3, 3], ["planted", "layer", 2, 1, "", 1, 1, 3, 3]],
        participant="ann",
    )
    b = write_answers(tmp_path / "b.csv", [["planted", "layer", 0, 3, "", 3, 1, 3, 3]], participant="bob")
    world.run.config.rate.human = [str(a), str(b)]
    table = check_rater("human", world)
    i_ann, i_bob = study_I(5, 5, 5), study_I(3, 3, 1)
    assert table.I[0] == pytest.approx((i_ann + i_bob) / 2)
    assert table.extras["I_std"][0] == pytest.approx(np.std([i_ann, i_bob], ddof=1))
    assert list(table.extras["n_raters"]) == [2, 0, 1, 0]
    assert np.isnan(table.I[1]) and table.I[2] == 0.0


def test_auto_i_calibrates_to_humans_with_out_of_fold_predictions(tmp_path):
    from raters.auto_i import combine, fit_out_of_fold

    world = make_world(tmp_path / "run", n_features=24, n_images=240)
    answers = write_answers(tmp_path / "answers.csv", planted_answers(world, np.random.default_rng(0), 0.5))
    world.run.config.rate.human = [str(answers)]
    rater = create_rater("auto_I", calibration="isotonic", folds=4)
    table = check_rater("auto_I", world, options={"calibration": "isotonic", "folds": 4})
    meta = rater.score(world.context(), world.features).meta["calibration"]
    assert meta["method"] == "isotonic" and meta["folds"] == 4
    oof = meta["out_of_fold"]
    assert oof["n"] == 24 and oof["spearman"] > 0.5
    # I is exactly the out-of-fold prediction of the cross-validated calibration
    ctx = world.context()
    q13 = create_rater("clip_vis_match", seed=3).score(ctx, world.features).components["q1q3"]
    q4 = create_rater("clip_coherence", seed=3).score(ctx, world.features).components["q4"]
    np.testing.assert_allclose(table.extras["I_raw"], combine(q13, q4))
    human = create_rater("human").score(ctx, world.features)
    fit = fit_out_of_fold(q13, q4, human.components["q1q3"], human.components["q4"], human.I, "isotonic", 4, seed=3)
    np.testing.assert_allclose(table.I, np.clip(fit["I"], 0, 1))
    np.testing.assert_allclose(table.extras["I_oof"], table.I)  # every feature here has answers
    # the written metadata carries the out-of-fold agreement
    run_rate(world.run, raters=["auto_I"], dataset=world.dataset)
    import json

    written = json.loads((world.root / "ratings" / "auto_I.json").read_text())
    assert written["calibration"]["out_of_fold"]["n"] == 24 and written["calibrated"] is True
    # the analysis reads the out-of-fold column as such
    from autointerp.analysis.inputs import read_rating_csv

    scores = read_rating_csv(world.root / "ratings" / "auto_I.csv")
    assert scores.calibrated and np.isfinite(scores.oof["I"]).all()


def test_auto_i_refuses_calibration_with_too_few_answers(tmp_path):
    from autointerp.errors import ConfigError

    world = make_world(tmp_path / "run", n_features=6, n_images=120)
    answers = write_answers(tmp_path / "few.csv", planted_answers(world, np.random.default_rng(1), 0.3)[:3])
    world.run.config.rate.human = [str(answers)]
    with pytest.raises(ConfigError, match=r"only 3 feature\(s\) have both .* at least 10"):
        create_rater("auto_I").score(world.context(), world.features)
    t = create_rater("auto_I", calibration="none").score(world.context(), world.features)
    np.testing.assert_allclose(t.I, t.extras["I_raw"])
    assert np.isnan(t.extras["I_oof"]).all() and "calibrated" not in t.meta
