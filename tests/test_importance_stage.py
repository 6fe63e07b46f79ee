"""The importance stage and CLI on a real (tiny) run folder: outputs, resume, determinism, errors."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.config import config_from_dict
from autointerp.errors import UserError
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations
from autointerp.stages.importance import run_importance


def make_run(root, dtype="float32", chunk_size=8, segment_images=16, **importance):
    cfg = config_from_dict(
        {
            "name": "imp",
            "seed": 0,
            "device": "cpu",
            "model": {"name": "demo_cnn", "pretrained": False},
            "layer": "conv3",
            "dataset": {"type": "synthetic", "options": {"n_images": 48, "seed": 2}},
            "activations": {"batch_size": 16, "top_k": 4, "dtype": dtype},
            "importance": {
                "k": 8,
                "chunk_size": chunk_size,
                "segment_images": segment_images,
                "batch_size": 16,
                **importance,
            },
        }
    )
    ctx = RunContext.create(cfg, root)
    run_activations(ctx)
    return ctx


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    ctx = make_run(tmp_path_factory.mktemp("imp") / "run")
    run_importance(ctx)
    return ctx


def test_exact_csv_columns_counts_and_summary(base_run):
    rows = read_rows(base_run.paths.importance_csv)
    assert list(rows[0].keys())[:4] == ["model", "layer", "feature_ind", "importance"]
    assert [int(r["feature_ind"]) for r in rows] == list(range(32))
    for r in rows:
        assert int(r["importance"]) == int(r["correct_to_wrong"]) - int(r["wrong_to_correct"])
        assert int(r["n_skipped"]) + int(r["n_bounded"]) + int(r["n_exact"]) == 48
        assert r["model"] == "demo_cnn" and r["layer"] == "conv3" and r["method"] == "exact"
    summary = json.loads((base_run.paths.importance / "summary.json").read_text())["exact"]
    assert summary["n_features"] == 32 and summary["peak_rss_mb"] > 0
    assert 0.0 <= summary["skipped_fraction"] <= 1.0
    cum = read_rows(base_run.paths.importance / "cumulative_ablation.csv")
    assert [int(r["n_ablated"]) for r in cum] == [0, 1, 2, 4, 8, 16, 32]
    meta = json.loads((base_run.paths.activations / "meta.json").read_text())
    assert float(cum[0]["top1"]) == pytest.approx(meta["accuracy"]["top1"])


def test_exact_equals_naive_stage(base_run):
    run_importance(base_run, method="naive")
    exact = read_rows(base_run.paths.importance / "importance_exact.csv")
    naive = read_rows(base_run.paths.importance / "importance_naive.csv")
    for e, n in zip(exact, naive, strict=True):
        assert (e["importance"], e["correct_to_wrong"], e["wrong_to_correct"]) == (
            n["importance"], n["correct_to_wrong"], n["wrong_to_correct"],
        )  # fmt: skip
    assert any(int(r["correct_to_wrong"]) + int(r["wrong_to_correct"]) > 0 for r in naive)
    # importance.csv keeps the configured method (exact)
    assert read_rows(base_run.paths.importance_csv)[0]["method"] == "exact"


def test_attribution_writes_estimate_and_agreement(base_run):
    path = run_importance(base_run, method="attribution")
    assert path.name == "importance_attribution.csv"
    rows = read_rows(path)
    assert list(rows[0].keys()) == ["model", "layer", "feature_ind", "importance", "mean_delta_logprob_true", "method"]
    assert {r["method"] for r in rows} == {"attribution"}
    summary = json.loads((base_run.paths.importance / "summary.json").read_text())["attribution"]
    agree = summary["agreement_with_exact"]
    assert -1.0 <= agree["spearman"] <= 1.0 and 0.0 <= agree["top40_overlap"] <= 1.0


def test_rerun_is_skipped_and_overwrite_is_byte_identical(base_run):
    before = base_run.paths.importance_csv.read_bytes()
    mtime = base_run.paths.importance_csv.stat().st_mtime_ns
    run_importance(base_run)
    assert base_run.paths.importance_csv.stat().st_mtime_ns == mtime
    run_importance(base_run, overwrite=True)
    assert base_run.paths.importance_csv.read_bytes() == before


def test_interrupted_run_resumes_to_identical_result(base_run, tmp_path, monkeypatch):
    import autointerp.importance.engine as engine

    root = tmp_path / "run"
    shutil.copytree(base_run.root / "activations", root / "activations")
    shutil.copy(base_run.paths.config, root / "config.yaml")
    ctx = RunContext.open(root)
    real = engine.evaluate_segment
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_segment", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_importance(ctx)
    assert not ctx.paths.importance_csv.exists()
    # 4 chunks of 8 features x 3 segments of 16 images: two units were saved, the third was interrupted
    assert len(list((root / "importance" / "chunks" / "exact").glob("chunk_*_images_*.npz"))) == 2
    resumed = {"n": 0}

    def counting(*args, **kwargs):
        resumed["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate_segment", counting)
    run_importance(ctx)
    assert resumed["n"] == 12 - 2  # the resumed run evaluated only the units not saved
    assert ctx.paths.importance_csv.read_bytes() == base_run.paths.importance_csv.read_bytes()
    after = json.loads((ctx.paths.importance / "summary.json").read_text())["exact"]
    whole = json.loads((base_run.paths.importance / "summary.json").read_text())["exact"]
    assert after["segments"] == whole["segments"] == 3
    for key in ("boundary_fallbacks", "n_skipped", "n_bounded", "n_exact"):  # over all units, not this run's
        assert after[key] == whole[key]


@pytest.mark.parametrize(("chunk_size", "segment_images"), [(8, 48), (32, 16), (32, 48)])
def test_chunk_and_segment_sizes_do_not_change_the_counts(base_run, tmp_path, chunk_size, segment_images):
    """Other chunks of features and segments of images than the base run's (8 and 16): the same counts
    per feature (the mean log-probability change adds the same terms in another order)."""
    ctx = make_run(tmp_path / "run", chunk_size=chunk_size, segment_images=segment_images)
    run_importance(ctx)
    other, base = read_rows(ctx.paths.importance_csv), read_rows(base_run.paths.importance_csv)
    cols = ["feature_ind", "importance", "correct_to_wrong", "wrong_to_correct", "n_skipped", "n_bounded", "n_exact"]
    assert [[r[c] for c in cols] for r in other] == [[r[c] for c in cols] for r in base]
    for a, b in zip(other, base, strict=True):
        assert float(a["mean_delta_logprob_true"]) == pytest.approx(float(b["mean_delta_logprob_true"]), abs=1e-9)
    files = list((ctx.paths.importance / "chunks" / "exact").glob("chunk_*_images_*.npz"))
    assert len(files) == (32 // chunk_size) * (48 // segment_images)


def test_float16_cache_and_position_scope_match_naive(tmp_path):
    ctx = make_run(tmp_path / "run16", dtype="float16", mean_scope="position")
    run_importance(ctx, features=[0, 5, 9, 31])
    run_importance(ctx, features=[0, 5, 9, 31], method="naive")
    exact = read_rows(ctx.paths.importance / "importance_exact.csv")
    naive = read_rows(ctx.paths.importance / "importance_naive.csv")
    assert [r["feature_ind"] for r in exact] == ["0", "5", "9", "31"]
    assert [r["importance"] for r in exact] == [r["importance"] for r in naive]


def test_user_errors(base_run, tmp_path):
    with pytest.raises(UserError, match="out of range"):
        run_importance(base_run, features=[99], overwrite=True)
    with pytest.raises(UserError, match="method"):
        run_importance(base_run, method="magic")
    cfg = config_from_dict({"model": {"name": "demo_cnn", "pretrained": False}, "layer": "conv3"})
    empty = RunContext.create(cfg, tmp_path / "empty")
    with pytest.raises(UserError, match="activations"):
        run_importance(empty)


def test_cli_subset_and_one_line_error(base_run, tmp_path):
    from autointerp.cli import app

    root = tmp_path / "cli"
    shutil.copytree(base_run.root / "activations", root / "activations")
    shutil.copy(base_run.paths.config, root / "config.yaml")
    runner = CliRunner()
    res = runner.invoke(app, ["importance", str(root), "--features", "0,3-5"])
    assert res.exit_code == 0, res.output
    rows = read_rows(root / "importance" / "importance.csv")
    assert [int(r["feature_ind"]) for r in rows] == [0, 3, 4, 5]
    full = {r["feature_ind"]: r for r in read_rows(base_run.paths.importance_csv)}
    assert all(r["importance"] == full[r["feature_ind"]]["importance"] for r in rows)
    res = runner.invoke(app, ["importance", str(root), "--features", "0,77", "--overwrite"])
    assert res.exit_code == 2
    assert "out of range" in res.output and "Traceback" not in res.output
    assert np.isfinite([float(r["mean_delta_logprob_true"]) for r in rows]).all()


def test_segment_size_invalidates_exact_results_only(base_run, monkeypatch):
    """Another segment_images changes what the exact method's files hold, not the naive method's."""
    from autointerp.stages.importance import ImportanceInputs, _settings_key

    inputs = ImportanceInputs(base_run)

    def keys():
        return {m: _settings_key(base_run, inputs, m, list(range(32))) for m in ("exact", "naive")}

    before = keys()
    monkeypatch.setattr(base_run.config.importance, "segment_images", 48)
    after = keys()
    assert before["exact"] != after["exact"] and before["naive"] == after["naive"]
