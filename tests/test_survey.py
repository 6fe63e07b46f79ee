"""Survey building blocks: feature choice, blinded orders, storage rules, export format (no server)."""

from __future__ import annotations

import csv
import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path

import pytest

from autointerp.errors import DataError, UserError
from autointerp.survey.db import CHECK_FEATURE, AnswerRejected, SurveyStore
from autointerp.survey.export import COLUMNS, EXPORT_COLUMNS, export_answers
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
    assert sorted(state.order) == [3, 7, 11] and state.order == participant_order([3, 7, 11], "p1")  # the first
    first, second = state.current, 1
    assert first == 0
    with pytest.raises(AnswerRejected, match="before Q3-Q6") as err:
        store.submit_step2("p1", first, 2, 2, 2, 2)
    assert err.value.status == 409
    with pytest.raises(AnswerRejected, match="not the participant's current item"):
        store.submit_step1("p1", second, 3, "a")
    with pytest.raises(AnswerRejected, match="no such item"):
        store.submit_step1("p1", 5, 3, "a")
    with pytest.raises(AnswerRejected, match="q1: expected an integer from 1 to 5"):
        store.submit_step1("p1", first, 6, "a")
    with pytest.raises(AnswerRejected, match="q1"):
        store.submit_step1("p1", first, True, "a")  # bool is not an answer
    with pytest.raises(AnswerRejected, match="not registered"):
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
    (row,) = [r for r in store.rows() if r["position"] == first]
    assert row["feature"] == state.order[0] and row["kind"] == "rate"
    assert (row["q1"], row["q2"], row["q3"], row["q4"], row["q5"], row["q6"]) == (4, "fur, eyes", 5, 4, 3, 2)


def test_q3_must_be_1_without_phrases(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [1])
    store.start("p")
    store.submit_step1("p", 0, 2, "  , ")
    with pytest.raises(AnswerRejected, match="q3: must be 1"):
        store.submit_step2("p", 0, 3, 1, 1, 1)
    assert store.submit_step2("p", 0, 1, 5, 1, 1).done == 1


def test_database_constraints_hold_without_the_python_checks(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [1, 2])
    store.start("p")
    insert = "INSERT INTO answers(participant, position, feature, kind, q1, q2, step1_at) VALUES (?,?,?,?,?,?,?)"
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError):
        con.execute(insert, ("p", 0, 1, "rate", 9, "", "t"))  # q1 out of range
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError):
        con.execute("PRAGMA foreign_keys = ON")
        con.execute(insert, ("p", 7, 1, "rate", 3, "", "t"))  # no such assigned item
    store.submit_step1("p", 0, 3, "")
    with sqlite3.connect(store.path) as con, pytest.raises(sqlite3.IntegrityError):
        con.execute(insert, ("p", 0, 1, "rate", 3, "", "t"))  # the same item twice


def test_reopening_with_another_design_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "a.sqlite"
    SurveyStore(db, [1, 2])
    SurveyStore(db, [1, 3])  # nobody registered yet: the new design replaces the old one
    store = SurveyStore(db, [1, 3], groups={1: "top", 3: "middle"})
    store.start("p")
    with pytest.raises(UserError, match="different features"):
        SurveyStore(db, [1, 2])
    with pytest.raises(UserError, match="different seed"):
        SurveyStore(db, [1, 3], seed=5)
    with pytest.raises(UserError, match="different per_participant"):
        SurveyStore(db, [1, 3], per_participant=1)
    with pytest.raises(UserError, match="different attention_checks"):
        SurveyStore(db, [1, 3], attention_checks=True)
    with pytest.raises(UserError, match="different consent"):
        SurveyStore(db, [1, 3], consent_sha256="ab" * 32)
    # group labels are stored once: a restart with other labels is refused and changes nothing
    with pytest.raises(UserError, match="different groups"):
        SurveyStore(db, [1, 3], groups={1: "middle", 3: "top"})
    assert json.loads(store.meta()["groups"]) == {"1": "top", "3": "middle"}


def test_old_databases_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE answers (participant TEXT, feature INTEGER, q1 INTEGER)")
    with pytest.raises(UserError, match="older version"):
        SurveyStore(db, [1])


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


def test_balanced_assignment_covers_every_feature_equally(tmp_path: Path) -> None:
    features = list(range(10, 17))  # 7 features, 3 per participant: coverage must stay within floor/ceil
    store = SurveyStore(tmp_path / "a.sqlite", features, per_participant=3)
    orders = []
    for p in range(1, 15):
        st = store.start(f"p{p:02d}")
        assert len(st.items) == 3 and len(set(st.order)) == 3 and set(st.order) <= set(features)
        orders.append(tuple(st.order))
        counts = store.coverage()
        assert sum(counts.values()) == 3 * p
        assert sorted(set(counts.values())) in ([3 * p // 7], [3 * p // 7, 3 * p // 7 + 1]), (p, counts)
    assert store.coverage() == dict.fromkeys(features, 6)  # 14 * 3 / 7
    # counterbalanced: a feature is not always shown in the same place
    places = {f: Counter(o.index(f) for o in orders if f in o) for f in features}
    assert all(len(p) >= 2 for p in places.values()), places
    assert store.start("p01").order == list(orders[0]), "a returning participant keeps their assignment"


def test_orders_form_latin_squares(tmp_path: Path) -> None:
    """Everyone rates all 4 features: after 8 participants each feature was shown exactly twice at each place."""
    store = SurveyStore(tmp_path / "a.sqlite", [1, 2, 3, 4])
    orders = [store.start(f"q{p}").order for p in range(8)]
    assert len(set(map(tuple, orders))) >= 4
    assert Counter((f, k) for o in orders for k, f in enumerate(o)) == {
        (f, k): 2 for f in (1, 2, 3, 4) for k in range(4)
    }


def test_attention_check_items(tmp_path: Path) -> None:
    store = SurveyStore(tmp_path / "a.sqlite", [4, 5, 6, 8], per_participant=3, attention_checks=True)
    for p in ("a", "b", "c", "d"):
        items = store.start(p).items
        kinds = [it.kind for it in items]
        assert sorted(kinds) == ["check", "rate", "rate", "rate", "retest"] and kinds[0] == "rate"
        assert kinds[-1] == "retest" and items[-1].feature == items[0].feature
        (check,) = [it for it in items if it.kind == "check"]
        assert check.feature == CHECK_FEATURE and 0 < check.position < len(items) - 1
    assert sum(store.coverage().values()) == 12, "checks and repeats do not count as coverage"


def _answer_all(store: SurveyStore, participant: str, answers: dict) -> None:
    """Answer every item of ``participant``: features from ``answers``; the check and the repeat from the keys
    ``"check"`` and ``"retest"`` (defaults: a passing check, the same answers again)."""
    st = store.start(participant)
    while st.current is not None:
        item = st.current_item
        if item.kind == "check":
            q = answers.get("check", (1, "", 1, 1, 1, 1))
        elif item.kind == "retest":
            q = answers.get("retest", answers[item.feature])
        else:
            q = answers[item.feature]
        store.submit_step1(participant, item.position, q[0], q[1])
        st = store.submit_step2(participant, item.position, *q[2:])


def _cli():  # a typer app with the survey commands
    import typer

    from autointerp.cli.survey import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None: ...

    return app


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
    assert tuple(rows[0]) == EXPORT_COLUMNS and EXPORT_COLUMNS[:10] == COLUMNS == (
        "model", "layer", "neuron", "question1", "text_question", "question3", "question4", "question5",
        "question6", "participant",
    )  # fmt: skip
    got = {(r[9], int(r[2])): dict(zip(EXPORT_COLUMNS, r, strict=True)) for r in rows[1:]}
    for p, answers in given.items():
        order = survey.store.state(p).order
        for f, (q1, q2, q3, q4, q5, q6) in answers.items():
            r = got[(p, f)]
            assert (r["model"], r["layer"]) == ("FakeNet", "mixed5a")
            assert [int(r[c]) for c in ("question1", "question3", "question4", "question5", "question6")] == [
                q1, q3, q4, q5, q6,
            ]  # fmt: skip
            assert r["text_question"] == ", ".join(check_phrases(q2))
            assert int(r["position"]) == order.index(f)
            assert r["step1_at"] <= r["step2_at"] and r["step2_at"].startswith("20")
            assert (r["check_passed"], r["retest_delta"], r["exclude"]) == ("", "", "0")
    scores = human.load_human_scores([out], layer="mixed5a", model="FakeNet")
    assert scores.n_participants == 2
    for i, f in enumerate(scores.feature_ind):
        q = {k: [(given[p][int(f)][j] - 1) / 4 for p in given] for k, j in (("q1", 0), ("q3", 2), ("q4", 3))}
        expected_I = sum((a * b + c) / 2 for a, b, c in zip(q["q1"], q["q3"], q["q4"], strict=True)) / 2
        assert scores.I[i] == pytest.approx(expected_I)
        assert scores.q4[i] == pytest.approx(sum(q["q4"]) / 2)


def test_attention_flags_in_the_export(run: Path, tmp_path: Path) -> None:
    from autointerp import human_answers as human

    survey = open_survey(run, attention_checks=True, db=tmp_path / "s" / "a.sqlite")
    base = {3: (4, "a", 4, 4, 4, 4), 7: (3, "b", 3, 3, 3, 3), 11: (2, "c", 2, 2, 2, 2)}
    first = {p: None for p in ("good", "badcheck", "flaky")}
    for p in first:
        first[p] = survey.store.start(p).items[0].feature
    _answer_all(survey.store, "good", base)  # passes the check, repeats exactly
    _answer_all(survey.store, "badcheck", {**base, "check": (4, "cat", 4, 4, 4, 4)})
    f = first["flaky"]
    q = base[f]
    _answer_all(survey.store, "flaky", {**base, "retest": (q[0], q[1], q[2], 5 if q[3] < 3 else 1, 1, 1)})
    out = tmp_path / "answers.csv"
    summary = export_answers(run, out, db=survey.db_path)
    assert (summary.rows, summary.participants, summary.excluded) == (9, 3, 2)
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    flags = {r["participant"]: (r["check_passed"], r["retest_delta"], r["exclude"]) for r in rows}
    assert flags["good"] == ("1", "0", "0")
    assert flags["badcheck"] == ("0", "0", "1")
    assert flags["flaky"][0] == "1" and int(flags["flaky"][1]) >= 3 and flags["flaky"][2] == "1"
    assert all(int(r["neuron"]) >= 0 for r in rows), "the check item is never exported as a feature"
    read = human.read_answers(out)  # the repeat is not a duplicate row for the importer (else an error)
    assert len(read) == 3 and set(read.participant) == {"good"}  # the flagged participants are left out
    assert any("badcheck, flaky" in note for note in read.notes)
    kept = export_answers(run, tmp_path / "kept.csv", db=survey.db_path, drop_excluded=True)
    assert (kept.rows, kept.participants) == (3, 1)


def test_formula_cells_are_neutralised_and_read_back(run: Path, tmp_path: Path) -> None:
    from autointerp import human_answers as human
    from autointerp.survey.export import spreadsheet_safe

    typed = {3: "=HYPERLINK(x)", 7: "@SUM(1+1), -1", 11: "'=already quoted"}
    survey = open_survey(run)
    _answer_all(survey.store, "p", {f: (3, t, 2, 2, 2, 2) for f, t in typed.items()})
    out = tmp_path / "answers.csv"
    export_answers(run, out)
    with out.open(newline="") as fh:
        rows = {int(r["neuron"]): r for r in csv.DictReader(fh)}
    for f, text in typed.items():
        assert rows[f]["text_question"] == "'" + text
    table = human.read_answers(out)
    assert {int(f): t for f, t in zip(table.feature_ind, table.text, strict=True)} == typed
    for text in ("plain", "'quoted", "", "a=b", "+", "\tx", "''=x"):
        assert human.unescape_formula(spreadsheet_safe(text)) == text
    assert spreadsheet_safe("\rx")[0] == "'" and spreadsheet_safe("plain") == "plain"


def test_export_cli_and_overwrite_rules(run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    app = _cli()
    survey = open_survey(run)
    _answer_all(survey.store, "solo", {3: (2, "a", 2, 2, 2, 2), 7: (3, "b", 3, 3, 3, 3), 11: (4, "c", 4, 4, 4, 4)})
    out = tmp_path / "sub" / "answers.csv"
    res = CliRunner().invoke(app, ["survey", "export", str(run), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Wrote 3 answers from 1 participant(s)" in res.output
    assert len(out.read_text().splitlines()) == 4
    out.write_text("keep me")
    res = CliRunner().invoke(app, ["survey", "export", str(run), "--out", str(out)])
    assert isinstance(res.exception, UserError) and "--overwrite" in str(res.exception)
    assert out.read_text() == "keep me"
    res = CliRunner().invoke(app, ["survey", "export", str(run), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 4
    db = survey.db_path
    before = db.read_bytes()
    for target in (db, Path(str(db) + "-wal"), db.parent / "secret.key"):
        res = CliRunner().invoke(app, ["survey", "export", str(run), "--out", str(target), "--overwrite"])
        assert isinstance(res.exception, UserError), target
    copy = tmp_path / "backup.sqlite"
    copy.write_bytes(before)
    res = CliRunner().invoke(app, ["survey", "export", str(run), "--out", str(copy), "--overwrite"])
    assert isinstance(res.exception, UserError) and "SQLite" in str(res.exception)
    assert db.read_bytes()[:16] == b"SQLite format 3\x00" and copy.read_bytes() == before
    res = CliRunner().invoke(app, ["survey", "export", str(tmp_path), "--out", str(tmp_path / "x.csv")])
    assert isinstance(res.exception, UserError)


def test_images_are_pinned_when_the_study_starts(run: Path) -> None:
    survey = open_survey(run)
    (run / "examples" / "0007" / "top_2.png").write_bytes((run / "examples" / "0003" / "top_2.png").read_bytes())
    open_survey(run)  # nobody has seen anything yet: the pin follows the run
    survey.store.start("p")
    (run / "visualizations" / "0011" / "vis_0.png").write_bytes(b"\x89PNG changed")
    (run / "examples" / "0003" / "top_0.png").write_bytes(b"\x89PNG changed too")
    with pytest.raises(UserError, match=r"images of 2 feature\(s\) changed .*: 3, 11; .*--accept-changed-images"):
        open_survey(run)
    assert open_survey(run, accept_changed_images=True).changed_images == [3, 11]
    assert open_survey(run).changed_images == []  # re-pinned


def test_secret_and_tokens(run: Path, tmp_path: Path) -> None:
    import stat

    from autointerp.survey.access import handle, load_secret, sign, verify

    folder = tmp_path / "survey"
    secret = load_secret(folder)
    path = folder / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(secret) == 32
    assert load_secret(folder) == secret, "never replaced"
    token = sign(secret, "alice")
    assert verify(secret, token) == "alice"
    assert verify(load_secret(tmp_path / "other"), token) is None  # another survey's secret
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "alice", "", None, 5, token + ".x", "x" * 500):
        assert verify(secret, bad) is None
    forged = sign(secret, "alice").split(".")[1]
    assert verify(secret, f"Ym9i.{forged}") is None  # alice's signature on bob's id
    assert handle(secret, "alice", 0) != handle(secret, "bob", 0) != handle(secret, "alice", 1)
    path.chmod(0o644)
    with pytest.raises(UserError, match="chmod 600"):
        load_secret(folder)


def test_invite_status_and_withdraw(run: Path, tmp_path: Path) -> None:
    import stat
    from urllib.parse import parse_qs, urlsplit

    from typer.testing import CliRunner

    from autointerp.survey.access import load_secret, verify, withdrawn_key

    app = _cli()
    links = tmp_path / "links.csv"
    args = ["survey", "invite", str(run), "--n", "5", "--out", str(links), "--base-url", "https://study.example/"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(links.stat().st_mode) == 0o600
    with links.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    secret = load_secret(run / "survey")
    assert len({r["participant"] for r in rows}) == 5
    for r in rows:
        assert r["link"].startswith("https://study.example/#t=")  # after "#": never sent to the server
        assert verify(secret, parse_qs(urlsplit(r["link"]).fragment)["t"][0]) == r["participant"]
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, UserError) and "--overwrite" in str(res.exception)

    survey = open_survey(run)
    who = rows[0]["participant"]
    _answer_all(survey.store, who, {3: (2, "a", 2, 2, 2, 2), 7: (3, "b", 3, 3, 3, 3), 11: (4, "c", 4, 4, 4, 4)})
    _answer_all(survey.store, "other", {3: (2, "a", 2, 2, 2, 2), 7: (3, "b", 3, 3, 3, 3), 11: (4, "c", 4, 4, 4, 4)})
    res = CliRunner().invoke(app, ["survey", "status", str(run)])
    assert res.exit_code == 0, res.output
    assert "2 registered, 2 finished, 0 flagged for exclusion, 0 withdrawn" in res.output
    assert any(line.split() == ["3", "2", "2"] for line in res.output.splitlines())
    res = CliRunner().invoke(app, ["survey", "withdraw", str(run), who, "--yes"])
    assert res.exit_code == 0 and "3 answer(s) deleted" in res.output
    assert {r["participant"] for r in survey.store.rows()} == {"other"}
    log = (run / "survey" / "withdrawals.log").read_text()
    assert "3 answer(s) deleted" in log and who not in log
    with pytest.raises(AnswerRejected, match="withdrawn"):
        survey.store.start(who, withdrawn_key=withdrawn_key(secret, who))
    res = CliRunner().invoke(app, ["survey", "withdraw", str(run), who, "--yes"])
    assert isinstance(res.exception, UserError)
    assert (
        "1 registered, 1 finished, 0 flagged for exclusion, 1 withdrawn"
        in CliRunner().invoke(app, ["survey", "status", str(run)]).output
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("\u200b", "no visible characters"),
        ("cats, \u200d\ufeff", "phrase 2 has no visible"),
        ("\u00ad", "no visible"),  # a soft hyphen alone
        ("abc\u202edef", "text-direction"),
        ("abc\u200fdef", "text-direction"),
        ("abc\x9bdef", "control"),  # C1
        ("abc\x00", "control"),
    ],
)
def test_invisible_and_control_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_phrases(text)


def test_text_is_nfc_and_joiners_inside_words_are_kept() -> None:
    assert check_phrases("cafe\u0301, \U0001f469\u200d\U0001f4bb") == ["caf\u00e9", "\U0001f469\u200d\U0001f4bb"]


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
    res = cli("serve", str(run), "--open-enrollment", "--host", "0.0.0.0", "--port", "1")
    assert res.returncode == 2 and "loopback only" in res.stderr, res.stderr
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


def test_subset_study_export_gives_a_noise_ceiling(tmp_path: Path) -> None:
    """Balanced subsets from several raters, exported and read back, give the report's noise ceiling: raters
    who answer a planted true score (plus a little noise) agree, so the reliability is high."""
    import random

    from autointerp import human_answers as human
    from autointerp.analysis.agreement import noise_ceiling

    features = tuple(range(12))
    run = make_fake_run(tmp_path / "run", features=features, size=8)
    survey = open_survey(run, per_participant=6)
    truth = {f: 1 + (f * 7) % 5 for f in features}  # a planted 1..5 score per feature
    for p in range(8):
        rng = random.Random(p)

        def noisy(f: int, rng: random.Random = rng) -> int:
            return min(5, max(1, truth[f] + rng.choice((-1, 0, 0, 0, 1))))

        _answer_all(survey.store, f"r{p}", {f: (noisy(f), "x", noisy(f), noisy(f), 1, 1) for f in features})
    assert survey.store.coverage() == dict.fromkeys(features, 4)
    out = tmp_path / "answers.csv"
    export_answers(run, out)
    table = human.read_answers(out, layer="mixed5a", model="FakeNet")
    assert len(table) == 48 and len(table.participants) == 8
    ceiling = noise_ceiling(table)
    assert ceiling["n_participants"] == 8 and ceiling["n_features_shared"] == 12
    assert ceiling["split_half"] is not None and ceiling["split_half"] > 0.7, ceiling
    assert ceiling["ceiling"] > 0.8
    # and the report on it shows the agreement and the noise ceiling from several raters
    from autointerp.report.sources import report_from_files

    index = report_from_files(run / "importance" / "importance.csv", tmp_path / "report", human=[out])
    summary = json.loads((index.parent / "summary.json").read_text(encoding="utf-8"))
    (res,) = summary["noise_ceiling"].values()
    assert res["available"] and res["I"]["n_participants"] == 8
    assert res["I"]["ceiling"] == pytest.approx(ceiling["ceiling"])
    assert "noise ceiling" in index.read_text(encoding="utf-8")
