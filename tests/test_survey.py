"""Survey building blocks: feature choice, blinded orders, storage rules, export format (no server)."""

from __future__ import annotations

import csv
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from autointerp.errors import DataError, UserError
from autointerp.survey.db import AnswerRejected, SurveyStore
from autointerp.survey.export import COLUMNS, export_answers
from autointerp.survey.features import participant_order, read_feature_list, run_model_layer, select_groups
from autointerp.survey.loader import choose_features, open_survey
from autointerp.survey.questions import QUESTIONS, check_phrases
from autointerp.survey.testing import make_fake_run


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return make_fake_run(tmp_path / "run", features=(3, 7, 11))


def test_question_texts_are_the_studys() -> None:
    texts = {q.key: q.text for q in QUESTIONS}
    assert [q.key for q in QUESTIONS] == ["q1", "q2", "q3", "q4", "q5", "q6"]
    assert texts["q1"].startswith("On a scale from 1 to 5, how clear are the objects on the 4 feature visualization")
    assert texts["q2"].endswith("List 0-4 phrases through comma.")
    assert texts["q3"].endswith("Respond 1 if you didn't write any phrases.")
    assert '"There clearly are three objects"' in texts["q6"]
    assert [q.step for q in QUESTIONS] == [1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize(
    ("text", "phrases"),
    [("", []), ("  dog faces , eyes,", ["dog faces", "eyes"]), ("a,b,c,d", ["a", "b", "c", "d"]), (",,", [])],
)
def test_phrases_are_split_on_commas(text: str, phrases: list[str]) -> None:
    assert check_phrases(text) == phrases


@pytest.mark.parametrize("text", ["a,b,c,d,e", "x" * 401, "two\nlines"])
def test_bad_phrases_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="q2"):
        check_phrases(text)


def test_order_is_seeded_per_participant_and_mixes_groups() -> None:
    features = list(range(80))
    groups = {f: "top" if f < 40 else "middle" for f in features}
    a1, a2 = participant_order(features, "alice"), participant_order(features[::-1], "alice")
    b = participant_order(features, "bob")
    assert a1 == a2, "a returning participant must get the same order"
    assert sorted(a1) == features and sorted(b) == features
    assert a1 != b
    assert participant_order(features, "alice", seed=1) != a1
    # groups are interleaved, not blocked: the first half holds both groups in similar numbers
    first_half = Counter(groups[f] for f in a1[:40])
    assert 10 <= first_half["top"] <= 30, first_half


def test_select_groups_top_and_median() -> None:
    importance = {f: float(v) for f, v in enumerate([5, 9, 1, 7, 3, 8, 2, 6, 4, 0])}  # ranks known by hand
    got = select_groups(importance, ["top", "middle"], 2)
    assert {f for f, g in got.items() if g == "top"} == {1, 5}  # importance 9, 8
    # ascending importance 0..9 -> median position 5 -> window [4, 6) = importance 4, 5 -> features 8, 0
    assert {f for f, g in got.items() if g == "middle"} == {8, 0}
    with pytest.raises(UserError, match="--group-size"):
        select_groups(importance, ["top", "middle"], 4)
    with pytest.raises(UserError, match="unknown group 'bottom'"):
        select_groups(importance, ["bottom"], 2)


def test_groups_option_uses_importance_csv(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "r", features=tuple(range(10)), importance={f: float(f) for f in range(10)})
    feats, labels = choose_features(run, groups=["top", "middle"], group_size=2)
    assert labels == {9: "top", 8: "top", 4: "middle", 5: "middle"}
    assert feats == [4, 5, 8, 9]


def test_feature_list_formats(tmp_path: Path) -> None:
    plain = tmp_path / "f.txt"
    plain.write_text("# chosen\n12, 7\n3\n7\n", encoding="utf-8")
    assert read_feature_list(plain) == [12, 7, 3]
    table = tmp_path / "f.csv"
    table.write_text("feature_ind,importance\n5,0.1\n2,0.3\n", encoding="utf-8")
    assert read_feature_list(table) == [5, 2]
    bad = tmp_path / "bad.txt"
    bad.write_text("4\n-1\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.txt: line 2: .*'-1'"):
        read_feature_list(bad)


def test_unknown_feature_and_escaping_paths_are_refused(run: Path, tmp_path: Path) -> None:
    listed = tmp_path / "f.txt"
    listed.write_text("3\n99\n", encoding="utf-8")
    with pytest.raises(DataError, match="no visualisations for feature 99"):
        open_survey(run, features=listed)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    index = run / "visualizations" / "index.json"
    index.write_text(index.read_text().replace("visualizations/0003/vis_0.png", "../secret.png"))
    with pytest.raises(DataError, match="outside the run folder"):
        open_survey(run)


def test_model_and_layer_come_from_meta_then_config(run: Path) -> None:
    assert run_model_layer(run) == ("FakeNet", "mixed5a")
    (run / "activations" / "meta.json").unlink()
    assert run_model_layer(run) == ("fakenet", "mixed5a")


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT * FROM answers ORDER BY participant, feature").fetchall()


def test_store_enforces_step_order_and_no_replay(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [3, 7, 11])
    with sqlite3.connect(store.path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    state = store.start("p1")
    first, second = state.order[0], state.order[1]
    with pytest.raises(AnswerRejected, match="before Q3-Q6") as err:
        store.submit_step2("p1", first, 2, 2, 2, 2)
    assert err.value.status == 409
    with pytest.raises(AnswerRejected, match="not the participant's current feature"):
        store.submit_step1("p1", second, 3, "a")
    with pytest.raises(AnswerRejected, match="not part of this survey"):
        store.submit_step1("p1", 5, 3, "a")
    with pytest.raises(AnswerRejected, match="q1: expected an integer from 1 to 5"):
        store.submit_step1("p1", first, 6, "a")
    with pytest.raises(AnswerRejected, match="q1"):
        store.submit_step1("p1", first, True, "a")  # bool is not an answer
    with pytest.raises(AnswerRejected, match="unknown participant"):
        store.submit_step1("nobody", first, 3, "a")
    assert _rows(store.path) == []
    st = store.submit_step1("p1", first, 4, " fur, eyes ,")
    assert st.step == 2 and st.current == first and st.done == 0
    before = _rows(store.path)
    with pytest.raises(AnswerRejected, match="already answered"):
        store.submit_step1("p1", first, 1, "other")
    assert _rows(store.path) == before
    st = store.submit_step2("p1", first, 5, 4, 3, 2)
    assert st.done == 1 and st.current == second and st.step == 1
    with pytest.raises(AnswerRejected, match="already answered"):
        store.submit_step2("p1", first, 1, 1, 1, 1)
    (row,) = [r for r in store.rows() if r["feature"] == first]
    assert (row["q1"], row["q2"], row["q3"], row["q4"], row["q5"], row["q6"]) == (4, "fur, eyes", 5, 4, 3, 2)


def test_q3_must_be_1_without_phrases(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [1])
    store.start("p")
    store.submit_step1("p", 1, 2, "  , ")
    with pytest.raises(AnswerRejected, match="q3: must be 1"):
        store.submit_step2("p", 1, 3, 1, 1, 1)
    assert store.submit_step2("p", 1, 1, 5, 1, 1).done == 1


def test_database_constraints_hold_without_the_python_checks(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [1, 2])
    store.start("p")
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO answers(participant, feature, position, q1, q2, step1_at) VALUES ('p',1,0,9,'','t')")
    store.submit_step1("p", store.state("p").current, 3, "")
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError):
        f = store.state("p").current
        con.execute(
            "INSERT INTO answers(participant, feature, position, q1, q2, step1_at) VALUES ('p',?,5,3,'','t')", (f,)
        )


def test_reopening_with_other_features_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite"
    SurveyStore(db, [1, 2]).start("p")
    SurveyStore(db, [1, 3])  # no answers yet: the new feature set replaces the old one
    store = SurveyStore(db, [1, 3])
    store.submit_step1("p", store.state("p").current, 3, "x")
    with pytest.raises(UserError, match="different features"):
        SurveyStore(db, [1, 2])
    with pytest.raises(UserError, match="different seed"):
        SurveyStore(db, [1, 3], seed=5)


def test_threads_racing_on_one_answer_store_it_once(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [1, 2, 3])
    store.start("p")
    first = store.state("p").current
    results: list[str] = []

    def submit(q1: int) -> None:
        try:
            store.submit_step1("p", first, q1, "x")
            results.append(f"ok{q1}")
        except AnswerRejected as exc:
            results.append(str(exc.status))

    threads = [threading.Thread(target=submit, args=(1 + i % 5,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.startswith("ok") for r in results) == 1 and results.count("409") == 11
    rows = store.rows(complete_only=False)
    assert len(rows) == 1 and f"ok{rows[0]['q1']}" in results


def _answer_all(store: SurveyStore, participant: str, answers: dict[int, tuple]) -> None:
    store.start(participant)
    for _ in answers:
        f = store.state(participant).current
        q1, q2, q3, q4, q5, q6 = answers[f]
        store.submit_step1(participant, f, q1, q2)
        store.submit_step2(participant, f, q3, q4, q5, q6)


def test_export_is_the_study_format_and_the_importer_reads_it(run: Path, tmp_path: Path) -> None:
    from autointerp import human_answers as human

    survey = open_survey(run)
    given = {
        "p1": {3: (5, "dogs, fur", 4, 5, 1, 2), 7: (1, "", 1, 2, 2, 1), 11: (3, 'a "quoted", b', 2, 3, 4, 5)},
        "p2": {3: (3, "cats", 2, 4, 1, 1), 7: (2, "sky", 5, 1, 3, 3), 11: (4, "x, y, z, w", 3, 3, 3, 3)},
    }
    for p, answers in given.items():
        _answer_all(survey.store, p, answers)
    survey.store.start("p3")  # a participant who only did step 1 of one feature
    survey.store.submit_step1("p3", survey.store.state("p3").current, 2, "half")
    out = tmp_path / "answers.csv"
    summary = export_answers(run, out)
    assert (summary.rows, summary.participants, summary.incomplete) == (6, 2, 1)
    with out.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == COLUMNS
    got = {(r[9], int(r[2])): r for r in rows[1:]}
    for p, answers in given.items():
        for f, (q1, q2, q3, q4, q5, q6) in answers.items():
            r = got[(p, f)]
            assert r[:2] == ["FakeNet", "mixed5a"]
            assert [int(x) for x in (r[3], r[5], r[6], r[7], r[8])] == [q1, q3, q4, q5, q6]
            assert r[4] == ", ".join(check_phrases(q2))
    scores = human.load_human_scores([out], layer="mixed5a", model="FakeNet")
    assert scores.n_participants == 2
    for i, f in enumerate(scores.feature_ind):
        q = {k: [(given[p][int(f)][j] - 1) / 4 for p in given] for k, j in (("q1", 0), ("q3", 2), ("q4", 3))}
        expected_I = sum((a * b + c) / 2 for a, b, c in zip(q["q1"], q["q3"], q["q4"], strict=True)) / 2
        assert scores.I[i] == pytest.approx(expected_I)
        assert scores.q4[i] == pytest.approx(sum(q["q4"]) / 2)


def test_export_cli(run: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from autointerp.cli.survey import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None: ...

    survey = open_survey(run)
    _answer_all(survey.store, "solo", {3: (2, "a", 2, 2, 2, 2), 7: (3, "b", 3, 3, 3, 3), 11: (4, "c", 4, 4, 4, 4)})
    out = tmp_path / "sub" / "answers.csv"
    res = CliRunner().invoke(app, ["survey", "export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Wrote 3 answers from 1 participant(s)" in res.output
    assert len(out.read_text().splitlines()) == 4
    res = CliRunner().invoke(app, ["survey", "export", str(tmp_path), "--out", str(out)])
    assert isinstance(res.exception, UserError)


def test_groups_reproduce_the_studys_selection(shared_dir: Path) -> None:
    """On the study's 832 importances, --groups top,middle picks features with exactly the importance values
    of the 80 the study surveyed (only the choice among equal importances at a boundary may differ)."""
    study = shared_dir / "reference" / "seed_study"
    with (study / "importance.csv").open(newline="") as fh:
        importance = {int(r["feature_ind"]): float(r["importance"]) for r in csv.DictReader(fh)}
    with (study / "survey_results.csv").open(newline="") as fh:
        surveyed = {int(r["neuron"]) for r in csv.DictReader(fh)}
    groups = select_groups(importance, ["top", "middle"], 40)
    assert Counter(groups.values()) == {"top": 40, "middle": 40}
    assert sorted(importance[f] for f in groups) == sorted(importance[f] for f in surveyed)
    middle = [importance[f] for f, g in groups.items() if g == "middle"]
    assert sum(middle) / 40 == pytest.approx(13.025)  # the published median-group mean (13.0)


def test_root_cli_has_survey_and_reports_errors_in_one_line(run: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from autointerp.survey.testing import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "autointerp", "survey", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

    res = cli("serve", str(run), "--features", "3,99", "--port", "1")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "no visualisations for feature 99" in res.stderr
    res = cli("serve", str(run), "--features", "no_such_file.txt")
    assert res.returncode == 2 and "no such file" in res.stderr
    res = cli("export", str(run), "--out", str(tmp_path / "a.csv"))
    assert res.returncode == 2 and "no survey database" in res.stderr
    assert not (tmp_path / "a.csv").exists()


def test_features_option_accepts_indices_or_a_file(run: Path, tmp_path: Path) -> None:
    from autointerp.cli.survey import _parse_features

    listed = tmp_path / "f.txt"
    listed.write_text("11\n3\n", encoding="utf-8")
    assert _parse_features("3, 7-8") == [3, 7, 8]
    assert open_survey(run, features=_parse_features(str(listed))).store.features == [3, 11]
    assert sorted(open_survey(run, features=[7], db=tmp_path / "b.sqlite").features) == [7]
    with pytest.raises(UserError, match="either --features or --groups"):
        open_survey(run, features=[7], groups=["top"])
