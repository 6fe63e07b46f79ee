"""The run-folder API (autointerp.runfolder names, autointerp.runfiles readers and writers): round trips,
NaN through JSON, the layout table of docs/ARCHITECTURE.md, and one-line errors naming the file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from autointerp.atomic import json_safe, write_json
from autointerp.errors import DataError, UserError
from autointerp.rating import ScoreTable
from autointerp.runfiles import (
    load_array,
    read_ablation_curve,
    read_activation_meta,
    read_feature_entries,
    read_importance,
    read_importance_summary,
    read_index,
    read_json,
    read_ratings,
    read_report_summary,
    read_topk,
    write_ablation_curve,
    write_activation_meta,
    write_feature_entry,
    write_importance,
    write_importance_summary,
    write_index,
    write_ratings,
    write_report_summary,
)
from autointerp.runfolder import RunPaths, report_paths

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"


def _one_line_error(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    """The error is a UserError, on one line, names the file and says each of ``words``."""
    message = str(exc.value)
    assert isinstance(exc.value, UserError)
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, (word, message)


# -- names ---------------------------------------------------------------------------------------------
def _layout_lines() -> list[str]:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("## Run folder layout", 1)[1].split("```", 2)[1]
    return [line.split("  ")[0].strip() for line in block.splitlines() if line.startswith("RUN/")]


def test_every_path_of_runpaths_is_in_the_layout_table() -> None:
    lines = _layout_lines()
    assert len(lines) > 15
    paths = RunPaths(Path("RUN"))
    listed = {name: getattr(paths, name) for name in dir(RunPaths) if isinstance(getattr(RunPaths, name), property)}
    listed.update(
        importance_method_csv=paths.importance_method_csv("<method>"),
        chunks=paths.chunks("<method>"),
        rating_csv=paths.rating_csv("<rater>"),
        rating_json=paths.rating_json("<rater>"),
    )
    listed.update({f"report_{p.name}": p for p in report_paths(paths.report)})
    assert len(listed) > 25
    for name, path in listed.items():
        rel = path.as_posix()
        if path.suffix:  # a file: on a line of its folder (the table lists a few on one line)
            folder = path.parent.as_posix() + "/"
            ok = any(
                line.startswith(folder) and re.search(rf"(^|[/, ]){re.escape(path.name)}(,|$| )", line)
                for line in lines
            )
        else:  # a folder: some entry lies inside it
            ok = any(line.startswith(rel + "/") or line == rel + "/" for line in lines)
        assert ok, f"RunPaths.{name} = {rel} is not in docs/ARCHITECTURE.md's run folder layout"


# -- JSON ----------------------------------------------------------------------------------------------
def test_json_nan_round_trip_writes_null_and_plain_numbers(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    obj = {
        "nan": math.nan,
        "list": [math.inf, -math.inf, 1.5, np.float32(2.5)],
        "np": {"i": np.int64(3), "b": np.bool_(True), "a": np.array([1.0, np.nan])},
        4: (1, 2),
        "path": tmp_path,
    }
    write_json(path, obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(path) == {
        "nan": None,
        "list": [None, None, 1.5, 2.5],
        "np": {"i": 3, "b": True, "a": [1.0, None]},
        "4": [1, 2],
        "path": str(tmp_path),
    }
    with pytest.raises(TypeError, match="cannot write object"):
        json_safe({"x": object()})
    assert json_safe({"x": {1, 2}}, unknown=lambda o: sorted(o)) == {"x": [1, 2]}


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 1,\n oops}')
    with pytest.raises(DataError) as exc:
        read_json(bad)
    _one_line_error(exc, bad, "not valid JSON", "line 2")
    array = tmp_path / "array.json"
    array.write_text("[1, 2]")
    with pytest.raises(DataError) as exc:
        read_json(array)
    _one_line_error(exc, array, "expected a JSON object", "list")
    with pytest.raises(DataError) as exc:
        read_json(tmp_path / "absent.json", missing="run `x` first")
    _one_line_error(exc, tmp_path / "absent.json", "not found", "run `x` first")


# -- activation cache ----------------------------------------------------------------------------------
def test_activation_meta_and_arrays(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    with pytest.raises(DataError) as exc:
        read_activation_meta(paths)
    _one_line_error(exc, paths.activations_meta, "autointerp activations")
    write_activation_meta(paths.activations, {"model": "m", "layer": "l", "channels": 3, "nan": float("nan")})
    assert read_activation_meta(paths) == {"model": "m", "layer": "l", "channels": 3, "nan": None}
    paths.activations_meta.write_text('"just a string"')
    with pytest.raises(DataError) as exc:
        read_activation_meta(paths)
    _one_line_error(exc, paths.activations_meta, "expected a JSON object")

    with pytest.raises(DataError) as exc:
        load_array(paths.scores)
    _one_line_error(exc, paths.scores, "not found")
    paths.scores.write_bytes(b"not numpy")
    with pytest.raises(DataError) as exc:
        load_array(paths.scores)
    _one_line_error(exc, paths.scores, "not a readable .npy")
    np.save(paths.scores, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert load_array(paths.scores, mmap=True)[1, 2] == 5.0

    with pytest.raises(DataError) as exc:
        read_topk(paths)
    _one_line_error(exc, paths.topk, "not found")
    np.savez(paths.topk, top_idx=np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(DataError) as exc:
        read_topk(paths)
    _one_line_error(exc, paths.topk, "'top_val'")
    np.savez(paths.topk, top_idx=np.zeros((3, 2), dtype=np.int64), top_val=np.ones((3, 2), dtype=np.float32))
    assert read_topk(paths)["top_val"].shape == (3, 2)


# -- indexes -------------------------------------------------------------------------------------------
def test_index_round_trip_and_errors(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert read_index(paths.examples_index) == {}
    with pytest.raises(DataError) as exc:
        read_index(paths.examples_index, required="run `autointerp examples`")
    _one_line_error(exc, paths.examples_index, "autointerp examples")
    entries = {12: {"top": [{"path": "examples/0012/top_0.png", "activation": math.nan}]}, 3: {"top": []}}
    write_index(paths.examples_index, entries, settings={"k": 1})
    data = json.loads(paths.examples_index.read_text())
    assert list(data) == ["settings", "features"] and list(data["features"]) == ["3", "12"]
    back = read_index(paths.examples_index)
    assert back == {3: {"top": []}, 12: {"top": [{"path": "examples/0012/top_0.png", "activation": None}]}}
    for content, words in (
        ('{"features": [1, 2]}', ["'features' mapping"]),
        ('{"features": {"x": {}}}', ["'x'", "non-negative integer"]),
        ('{"features": {"-1": {}}}', ["'-1'", "non-negative integer"]),
        ('{"features": {"4": 7}}', ["features.4", "expected an object"]),
        ('{"features": ', ["not valid JSON"]),
    ):
        paths.visualizations_index.parent.mkdir(exist_ok=True)
        paths.visualizations_index.write_text(content)
        with pytest.raises(DataError) as exc:
            read_index(paths.visualizations_index)
        _one_line_error(exc, paths.visualizations_index, *words)


def test_feature_entries_round_trip_and_a_damaged_entry_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "visualizations"
    for f in (7, 2):
        write_feature_entry(folder / f"{f:04d}", {"vis": [f"v{f}.png"], "x": math.inf})
    (folder / ".0009.abc.tmp").mkdir()  # a crash's litter is not a feature folder
    (folder / "0005x").mkdir()
    (folder / "0005x" / "meta.json").write_text("{}")
    assert read_feature_entries(folder) == {2: {"vis": ["v2.png"], "x": None}, 7: {"vis": ["v7.png"], "x": None}}
    damaged = folder / "0003" / "meta.json"
    damaged.parent.mkdir()
    damaged.write_text("{")
    with pytest.raises(DataError) as exc:
        read_feature_entries(folder)
    _one_line_error(exc, damaged, "not valid JSON")


# -- importance ----------------------------------------------------------------------------------------
def _exact_row(f: int, c2w: int, w2c: int, dlp: float) -> dict:
    return {
        "model": "m",
        "layer": "l",
        "feature_ind": f,
        "importance": c2w - w2c,
        "correct_to_wrong": c2w,
        "wrong_to_correct": w2c,
        "mean_delta_logprob_true": dlp,
        "n_skipped": 0,
        "n_bounded": 1,
        "n_exact": 2,
        "method": "exact",
    }


def test_importance_round_trip(tmp_path: Path) -> None:
    path = RunPaths(tmp_path).importance_csv
    write_importance(path, [_exact_row(0, 5, 1, -0.25), _exact_row(1, 0, 2, math.nan), _exact_row(4, 3, 3, 0.1)])
    assert path.read_text().splitlines()[0].startswith("model,layer,feature_ind,importance,correct_to_wrong")
    table = read_importance(path).check()
    assert (table.model, table.layer) == ("m", "l")
    assert [(i.kind, i.column, i.features) for i in table.issues] == [("not_numeric", "mean_delta_logprob_true", [1])]
    assert table.values() == {0: 4.0, 1: -2.0, 4: 0.0}
    dlp = table.column("mean_delta_logprob_true")
    assert dlp[0] == -0.25 and math.isnan(dlp[1]) and dlp[2] == 0.1
    assert list(table.column("correct_to_wrong")) == [5.0, 0.0, 3.0]
    with pytest.raises(DataError) as exc:
        table.column("nope")
    _one_line_error(exc, path, "'nope'")
    # attribution and study-only tables
    write_importance(path, [{"model": "m", "layer": "l", "feature_ind": 2, "importance": 0.5}])
    assert path.read_text() == "model,layer,feature_ind,importance\nm,l,2,0.5\n"
    assert read_importance(path).check().values() == {2: 0.5}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("feature_ind,importance\n1,2\nx,3\n", ["row 3", "'x'", "feature_ind"]),
        ("feature_ind,importance\n1,2\n-4,3\n", ["row 3", "'-4'"]),
        ("feature_ind,importance\n1,2\n2,abc\n", ["row 3", "column importance", "'abc'", "not numbers"]),
        ("feature_ind,importance\n1,2\n1,5\n", ["conflicting", "rows 2, 3"]),
    ],
)
def test_a_bad_importance_row_is_refused_naming_the_file_and_row(tmp_path: Path, body: str, words: list) -> None:
    path = tmp_path / "importance.csv"
    path.write_text(body)
    table = read_importance(path)  # parsed; the problem is recorded, not skipped silently
    assert table.issues
    with pytest.raises(DataError) as exc:
        table.check()
    _one_line_error(exc, path, *words)


def test_importance_structure_errors(tmp_path: Path) -> None:
    path = tmp_path / "importance.csv"
    with pytest.raises(DataError) as exc:
        read_importance(path, missing="run `autointerp importance` first")
    _one_line_error(exc, path, "not found", "autointerp importance")
    path.write_text("")
    with pytest.raises(DataError) as exc:
        read_importance(path)
    _one_line_error(exc, path, "empty")
    path.write_text("feature_ind,score\n1,2\n")
    with pytest.raises(DataError) as exc:
        read_importance(path)
    _one_line_error(exc, path, "missing column 'importance'")
    path.write_text("feature_ind,importance\n1,2\n1,2\n3,\n4,nan\n")  # identical duplicate, missing values
    table = read_importance(path).check()
    assert list(table.feature_ind) == [1, 3, 4] and table.values(finite=True) == {1: 2.0}
    assert {i.kind for i in table.issues} == {"duplicate", "not_numeric"}


def test_importance_summary_and_ablation_curve(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert read_importance_summary(paths) == {}
    write_importance_summary(paths, {"exact": {"seconds": 1.5, "ratio": math.nan}})
    assert read_importance_summary(paths) == {"exact": {"seconds": 1.5, "ratio": None}}
    paths.importance_summary.write_text("[]")
    with pytest.raises(DataError) as exc:
        read_importance_summary(paths)
    _one_line_error(exc, paths.importance_summary, "expected a JSON object")

    assert read_ablation_curve(paths.cumulative_ablation_csv) is None
    write_ablation_curve(paths.cumulative_ablation_csv, [{"n_ablated": 0, "top1": 0.5}, {"n_ablated": 1, "top1": 0.25}])
    assert read_ablation_curve(paths.cumulative_ablation_csv) == {"n_ablated": [0.0, 1.0], "top1": [0.5, 0.25]}
    paths.cumulative_ablation_csv.write_text("n_ablated,top1\n0,0.5\n1,lots\n")
    with pytest.raises(DataError) as exc:
        read_ablation_curve(paths.cumulative_ablation_csv)
    _one_line_error(exc, paths.cumulative_ablation_csv, "row 3", "column top1", "'lots'")


# -- ratings -------------------------------------------------------------------------------------------
def test_ratings_round_trip(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    table = ScoreTable(
        [0, 3], [0.25, math.nan], {"q4": [1.0, 0.5]}, {"label": np.array(["a", "b"], dtype=object), "z": [2.0, 3.0]}
    )
    meta = {"rater": "r", "components": ["q4"], "seed": 1, "p": math.nan, "n": np.int64(2)}
    csv_path, json_path = write_ratings(paths, "r", table, meta)
    assert (csv_path, json_path) == (paths.rating_csv("r"), paths.rating_json("r"))
    file = read_ratings(csv_path)
    assert file.header == ["feature_ind", "I", "q4", "label", "z"]
    assert [row for _, row in file.rows] == [["0", "0.25", "1.0", "a", "2.0"], ["3", "", "0.5", "b", "3.0"]]
    assert file.meta == {"rater": "r", "components": ["q4"], "seed": 1, "p": None, "n": 2}
    back = ScoreTable.read_csv(csv_path)
    assert list(back.feature_ind) == [0, 3] and back.I[0] == 0.25 and math.isnan(back.I[1])
    assert list(back.components) == ["q4"] and list(back.extras) == ["label", "z"]
    assert list(back.extras["label"]) == ["a", "b"]


def test_ratings_errors_name_the_file(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    paths.ratings.mkdir()
    csv_path = paths.rating_csv("r")
    csv_path.write_text("feature_ind,score\n1,2\n")
    with pytest.raises(DataError) as exc:
        read_ratings(csv_path)
    _one_line_error(exc, csv_path, "missing column 'I'")
    csv_path.write_text("feature_ind,I,q4\n1,2,3\n4,5\n")
    with pytest.raises(DataError) as exc:
        read_ratings(csv_path).check_ragged()
    _one_line_error(exc, csv_path, "row 3 has 2 cells, expected 3")
    csv_path.write_text("feature_ind,I\n1,0.5\n")
    paths.rating_json("r").write_text("[1]")
    with pytest.raises(DataError) as exc:
        read_ratings(csv_path)
    _one_line_error(exc, paths.rating_json("r"), "expected a JSON object")
    with pytest.raises(DataError) as exc:
        read_ratings(paths.rating_csv("absent"))
    _one_line_error(exc, paths.rating_csv("absent"), "not found")


def test_report_summary_round_trip(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        read_report_summary(tmp_path)
    _one_line_error(exc, report_paths(tmp_path)[1], "autointerp report")
    write_report_summary(tmp_path, {"r": math.nan, "n": 3})
    assert read_report_summary(tmp_path) == {"r": None, "n": 3}


# -- the consumers share the policy ---------------------------------------------------------------------
def test_every_consumer_of_a_run_refuses_a_bad_importance_row_the_report_notes_it(tmp_path: Path) -> None:
    """Stages, raters' context, the survey and the visualise-'groups' selection all refuse a bad row with the
    same one-line error (none skips it); the report shows it as a data note and carries on."""
    from autointerp.rating import RatingContext
    from autointerp.report.sources import report_from_run
    from autointerp.survey.features import read_importance as survey_importance
    from autointerp.vis.selection import _group_features
    from tests.report_fixtures import build_run

    ctx = build_run(tmp_path / "run", with_media=False)
    good = RatingContext(ctx).importance
    assert len(good) > 20 and survey_importance(ctx.root) == {f: v for f, v in good.items() if math.isfinite(v)}
    path = ctx.paths.importance_csv
    path.write_text(path.read_text() + "demo,mixed5a,seven,3\n")
    row = len(path.read_text().splitlines())
    for read in (
        lambda: RatingContext(ctx).importance,
        lambda: survey_importance(ctx.root),
        lambda: _group_features(ctx),
    ):
        with pytest.raises(DataError) as exc:
            read()
        _one_line_error(exc, path, f"row {row}", "'seven'")
    page = report_from_run(ctx.root, tmp_path / "report", ctx.config)
    notes = json.loads(report_paths(page.parent)[1].read_text())["issues"]
    assert any(n["kind"] == "bad_feature_id" and f"row {row} ('seven')" in n["message"] for n in notes)


def test_importance_units_round_trip_and_a_broken_unit_is_one_line(tmp_path: Path) -> None:
    import numpy as np

    from autointerp.errors import DataError
    from autointerp.runfiles import read_unit, write_unit

    path = tmp_path / "chunk_00003_00005_3_images_00000000_00000008.npz"
    flips = np.array([[1, 0, 2]], np.int64)
    write_unit(path, [3, 4, 5], {"correct_to_wrong": flips})
    back = read_unit(path)
    assert back["features"].tolist() == [3, 4, 5] and np.array_equal(back["correct_to_wrong"], flips)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"chunk_00003_00005_3_images_00000000_00000008.npz: not a readable unit"):
        read_unit(path)
    assert "\n" not in str(pytest.raises(DataError, read_unit, path).value)
