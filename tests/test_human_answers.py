"""Human survey importer: encodings, layout, every kind of invalid input, policies, aggregation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from autointerp.errors import DataError, UserError
from autointerp.human_answers import aggregate, load_human_scores, read_answers

HEADER = ["model", "layer", "neuron", "question1", "text_question", "question3", "question4", "question5", "question6"]


def write_csv(
    path: Path, header: list[str], rows: list[list[object]], encoding: str = "utf-8", newline: str = "\n"
) -> Path:
    lines = [",".join(header)] + [",".join(_cell(v) for v in row) for row in rows]
    path.write_bytes((newline.join(lines) + newline).encode(encoding))
    return path


def _cell(value: object) -> str:
    text = str(value)
    return f'"{text}"' if "," in text else text


def row(
    neuron: int,
    q1: object,
    q3: object,
    q4: object,
    q5: object = 3,
    q6: object = 3,
    text: str = "dogs, fur",
    layer: str = "mixed5a",
) -> list[object]:
    return ["InceptionV1", layer, neuron, q1, text, q3, q4, q5, q6]


def I_of(q1: float, q3: float, q4: float) -> float:
    q = [(v - 1) / 4 for v in (q1, q3, q4)]
    return (q[0] * q[1] + q[2]) / 2


def test_single_file_scores_match_formula(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", HEADER, [row(7, 5, 5, 5), row(3, 1, 1, 1), row(12, 4, 2, 3)])
    scores = load_human_scores([path])
    assert scores.feature_ind.tolist() == [3, 7, 12]
    np.testing.assert_allclose(scores.I, [0.0, 1.0, I_of(4, 2, 3)])
    np.testing.assert_allclose(scores.q3, [0.0, 1.0, 0.25])
    assert scores.n_raters.tolist() == [1, 1, 1]
    assert np.isnan(scores.I_std).all()  # spread is undefined with one participant
    assert scores.layer == "mixed5a" and scores.model == "InceptionV1"


@pytest.mark.parametrize(
    "encoding,newline", [("utf-8-sig", "\n"), ("utf-8", "\r\n"), ("cp1252", "\r\n"), ("latin-1", "\n")]
)
def test_encodings_and_line_endings(tmp_path: Path, encoding: str, newline: str) -> None:
    rows = [row(1, 4, 2, 3, text="café, naïve"), row(2, 2, 5, 1, text="€ signs")]
    if encoding == "latin-1":
        rows[1][4] = "pound £"
    path = write_csv(tmp_path / "s.csv", HEADER, rows, encoding=encoding, newline=newline)
    answers = read_answers(path)
    assert answers.feature_ind.tolist() == [1, 2]
    assert answers.text[0] == "café, naïve"
    assert answers.text[1] in ("€ signs", "pound £")
    np.testing.assert_allclose(answers.I, [I_of(4, 2, 3), I_of(2, 5, 1)])


def test_column_order_and_header_case_do_not_matter(tmp_path: Path) -> None:
    header = [
        "Question4",
        "neuron",
        " question1 ",
        "participant",
        "question6",
        "layer",
        "question3",
        "model",
        "question5",
        "text_question",
    ]
    rows = [[3, 9, 4, "p1", 1, "mixed5a", 2, "InceptionV1", 5, "eyes"]]
    scores = load_human_scores([write_csv(tmp_path / "r.csv", header, rows)])
    assert scores.feature_ind.tolist() == [9]
    np.testing.assert_allclose(scores.I, [I_of(4, 2, 3)])
    np.testing.assert_allclose(scores.q5, [1.0])
    np.testing.assert_allclose(scores.q6, [0.0])


def test_multi_participant_aggregation_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    answers = rng.integers(1, 6, size=(3, 5, 5))  # participant, feature, question (q1,q3,q4,q5,q6)
    rated = rng.random((3, 5)) < 0.8
    rated[:, 0] = True  # feature 0 rated by everybody
    header = [*HEADER, "participant"]
    rows = []
    for p in range(3):
        for f in range(5):
            if rated[p, f]:
                a = answers[p, f]
                rows.append(["InceptionV1", "mixed5a", 100 + f, a[0], "x", a[1], a[2], a[3], a[4], f"P{p}"])
    path = write_csv(tmp_path / "multi.csv", header, rows)
    scores = load_human_scores([path])
    for f in range(5):
        who = np.flatnonzero(rated[:, f])
        if len(who) == 0:
            assert 100 + f not in scores.feature_ind
            continue
        k = int(np.flatnonzero(scores.feature_ind == 100 + f)[0])
        q = (answers[who, f].astype(float) - 1) / 4
        per_answer_I = (q[:, 0] * q[:, 1] + q[:, 2]) / 2
        assert scores.n_raters[k] == len(who)
        assert scores.I[k] == pytest.approx(per_answer_I.mean())
        assert scores.q1[k] == pytest.approx(q[:, 0].mean())
        assert scores.q6[k] == pytest.approx(q[:, 4].mean())
        if len(who) > 1:
            assert scores.I_std[k] == pytest.approx(per_answer_I.std(ddof=1))
        # I is the mean of per-answer I, not I of the mean answers (they differ in general)
    assert scores.n_participants == 3


def test_files_without_participant_column_are_one_participant_each(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "alice.csv", HEADER, [row(1, 5, 5, 5), row(2, 1, 1, 1)])
    b = write_csv(tmp_path / "bob.csv", HEADER, [row(1, 1, 1, 1)])
    answers = read_answers([a, b])
    assert answers.participants == ["alice", "bob"]
    scores = aggregate(answers)
    assert scores.n_raters.tolist() == [2, 1]
    np.testing.assert_allclose(scores.I, [0.5, 0.0])
    matrix, features, people = answers.matrix("I")
    assert features.tolist() == [1, 2] and people == ["alice", "bob"]
    assert matrix[0].tolist() == [1.0, 0.0] and matrix[1, 0] == 0.0 and np.isnan(matrix[1, 1])


def test_every_out_of_range_and_non_numeric_answer_is_listed(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv", HEADER, [row(1, 0, 3, 3), row(2, 3, 3, 3), row(3, 3, 6, "abc"), row(4, 3, 3, 3, q6="")]
    )
    with pytest.raises(DataError) as info:
        read_answers(path)
    message = str(info.value)
    assert "\n" not in message
    for where, column, value in (
        ("bad.csv:2", "question1", "'0'"),
        ("bad.csv:4", "question3", "'6'"),
        ("bad.csv:4", "question4", "'abc'"),
        ("bad.csv:5", "question6", "''"),
    ):
        assert f"{where} column {column} = {value}" in message
    assert "bad.csv:3" not in message
    assert "4 answers" in message


def test_policies(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", HEADER, [row(1, 0, 3, 3), row(2, 3, 3, 3), row(3, 5, 6, 5)])
    dropped = load_human_scores(path, invalid="drop")
    assert dropped.feature_ind.tolist() == [2]
    assert "dropped 2 row(s)" in dropped.notes[0] and "p.csv:2" in dropped.notes[0]
    clipped = load_human_scores(path, invalid="clip")
    np.testing.assert_allclose(clipped.I, [I_of(1, 3, 3), I_of(3, 3, 3), I_of(5, 5, 5)])
    kept = load_human_scores(path, invalid="keep")
    np.testing.assert_allclose(kept.I, [I_of(0, 3, 3), I_of(3, 3, 3), I_of(5, 6, 5)])
    assert "kept 2 answer(s)" in kept.notes[0]
    with pytest.raises(UserError, match="policy 'ignore'"):
        load_human_scores(path, invalid="ignore")


def test_non_numeric_cannot_be_clipped_or_kept_but_can_be_dropped(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", HEADER, [row(1, "four", 3, 3), row(2, 3, 3, 3)])
    for policy in ("clip", "keep"):
        with pytest.raises(DataError, match=r"non-numeric answers .*n.csv:2 column question1 = 'four'"):
            read_answers(path, invalid=policy)
    assert load_human_scores(path, invalid="drop").feature_ind.tolist() == [2]


def test_duplicate_participant_feature(tmp_path: Path) -> None:
    header = [*HEADER, "participant"]
    rows = [
        [*row(5, 3, 3, 3), "ann"],
        [*row(5, 4, 4, 4), "bob"],
        [*row(5, 2, 2, 2), "ann"],
        [*row(6, 2, 2, 2), "ann"],
        [*row(6, 2, 2, 2), "ann"],
    ]
    with pytest.raises(DataError) as info:
        read_answers(write_csv(tmp_path / "d.csv", header, rows))
    message = str(info.value)
    assert "d.csv:4 duplicates participant 'ann' feature 5 (first at" in message
    assert "d.csv:6 duplicates participant 'ann' feature 6" in message
    assert "d.csv:3 duplicates" not in message  # bob's answer is fine


def test_duplicates_across_files_without_participant_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", HEADER, [row(5, 3, 3, 3), row(5, 4, 4, 4)])
    with pytest.raises(DataError, match="one.csv:3 duplicates participant 'one' feature 5"):
        read_answers(path)


def test_wrong_layer_and_model(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "l.csv",
        HEADER,
        [row(1, 3, 3, 3), row(2, 3, 3, 3, layer="mixed4d"), row(3, 3, 3, 3, layer="mixed4e")],
    )
    with pytest.raises(DataError) as info:
        read_answers(path, layer="mixed5a")
    message = str(info.value)
    assert "l.csv:3 column layer = 'mixed4d', expected 'mixed5a'" in message
    assert "l.csv:4 column layer = 'mixed4e', expected 'mixed5a'" in message
    with pytest.raises(DataError, match="mix layers"):
        read_answers(path)
    ok = write_csv(tmp_path / "m.csv", HEADER, [row(1, 3, 3, 3)])
    assert read_answers(ok, model="inceptionv1").model == "inceptionv1"  # spelling/case tolerant
    with pytest.raises(DataError, match="column model = 'InceptionV1', expected 'resnet50'"):
        read_answers(ok, model="resnet50")


def test_missing_columns_and_bad_neuron(tmp_path: Path) -> None:
    header = [h for h in HEADER if h not in ("question3", "layer")]
    path = write_csv(tmp_path / "c.csv", header, [["InceptionV1", 1, 3, "x", 3, 3, 3]])
    with pytest.raises(DataError, match=r"c.csv: missing column\(s\) layer, question3"):
        read_answers(path)
    bad = write_csv(
        tmp_path / "b.csv",
        HEADER,
        [
            row(1, 3, 3, 3),
            ["InceptionV1", "mixed5a", "1.5", 3, "x", 3, 3, 3, 3],
            ["InceptionV1", "mixed5a", "-2", 3, "", 3, 3, 3, 3],
        ],
    )
    with pytest.raises(DataError) as info:
        read_answers(bad)
    assert "b.csv:3 column neuron = '1.5'" in str(info.value) and "b.csv:4 column neuron = '-2'" in str(info.value)
    with pytest.raises(DataError, match="not found"):
        read_answers(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        read_answers(tmp_path / "empty.csv")


def test_feature_ind_alias_and_blank_lines(tmp_path: Path) -> None:
    header = ["model", "layer", "feature_ind", *HEADER[3:]]
    path = write_csv(tmp_path / "a.csv", header, [row(4, 5, 5, 5)])
    path.write_text(path.read_text() + "\n\n")
    assert load_human_scores(path).feature_ind.tolist() == [4]


def test_real_seed_study_file(shared_dir: Path) -> None:
    path = shared_dir / "reference" / "seed_study" / "survey_results.csv"
    with pytest.raises(DataError) as info:
        read_answers(path, layer="mixed5a")
    message = str(info.value)
    assert message.count("column question") == 3
    for neuron_row, column in ((":40 ", "question4"), (":44 ", "question1"), (":57 ", "question1")):
        assert f"survey_results.csv{neuron_row}column {column} = '0'" in message
    scores = load_human_scores([path], invalid="keep", layer="mixed5a", model="InceptionV1")
    assert len(scores) == 80 and scores.n_raters.max() == 1
    # reference computed independently with the csv module and the study's formula
    with path.open(newline="") as fh:
        ref = {
            int(r["neuron"]): I_of(float(r["question1"]), float(r["question3"]), float(r["question4"]))
            for r in csv.DictReader(fh)
        }
    np.testing.assert_allclose(scores.I, [ref[f] for f in scores.feature_ind.tolist()])
    assert len(load_human_scores([path], invalid="drop")) == 77


def test_participants_the_survey_flagged_exclude_are_left_out_with_a_note(tmp_path: Path) -> None:
    header = [*HEADER, "participant", "exclude"]
    rows = [
        [*row(1, 5, 5, 5), "good", 0],
        [*row(2, 5, 5, 5), "good", 0],
        [*row(1, 1, 1, 1), "careless", 1],
        [*row(2, 1, 1, 1), "careless", 1],
        [*row(2, 3, 3, 3), "no-verdict", ""],  # no attention checks in this study design: kept
    ]
    answers = read_answers([write_csv(tmp_path / "export.csv", header, rows)])
    assert sorted(set(answers.participant)) == ["good", "no-verdict"]
    assert any("careless" in note and "exclude" in note for note in answers.notes)
    scores = aggregate(answers)
    assert scores.I[scores.feature_ind.tolist().index(1)] == pytest.approx(1.0)  # careless answers left out

    rows[0][-1] = "maybe"
    with pytest.raises(DataError, match=r"export.csv:2 column exclude = 'maybe', expected 0, 1 or empty"):
        read_answers([write_csv(tmp_path / "export.csv", header, rows)])
