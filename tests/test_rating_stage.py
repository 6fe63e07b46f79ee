"""The rate stage and its CLI: files written, skip/overwrite, one embedding per image, errors, plug-ins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from rater_harness import make_world
from typer.testing import CliRunner

from autointerp.cli.rate import register
from autointerp.errors import UserError
from autointerp.rating import RATERS, ScoreTable
from autointerp.stages.rate import run_rate

REPO = Path(__file__).resolve().parents[1]
BUILTINS = ["human", "clip_coherence", "clip_vis_match", "clip_label", "fid", "mis", "auto_I", "random"]


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path / "run", n_features=5, n_images=120)


@pytest.fixture
def cli():
    app = typer.Typer()
    register(app)

    @app.command()
    def noop() -> None:  # typer needs two commands to keep subcommand names
        pass

    return app


def test_run_rate_writes_csv_and_json_per_rater(world):
    out = run_rate(world.run, raters=["random", "clip_coherence", "fid"], dataset=world.dataset)
    assert out == world.root / "ratings"
    for name in ("random", "clip_coherence", "fid"):
        table = ScoreTable.read_csv(out / f"{name}.csv")
        meta = json.loads((out / f"{name}.json").read_text())
        assert list(table.feature_ind) == world.features
        assert meta["rater"] == name and meta["components"] == list(RATERS.get(name).components)
        assert meta["higher_is_better"] is RATERS.get(name).higher_is_better and meta["seed"] == 0
    assert json.loads((out / "fid.json").read_text())["embedder"] == "handcrafted-v2-64"
    header = (out / "clip_coherence.csv").read_text().splitlines()[0]
    assert header == "feature_ind,I,q4,coherence,null_mean,null_std,z,p_value"


def test_existing_outputs_are_skipped_unless_overwrite(world, capsys):
    run_rate(world.run, raters=["random"])
    csv = world.root / "ratings" / "random.csv"
    stamp = csv.stat().st_mtime_ns
    run_rate(world.run, raters=["random"])
    assert csv.stat().st_mtime_ns == stamp
    assert "exists, skipped" in capsys.readouterr().err
    world.run.config.seed = 5
    run_rate(world.run, raters=["random"], overwrite=True)
    assert json.loads((world.root / "ratings" / "random.json").read_text())["seed"] == 5


def test_nan_scores_are_written_as_empty_cells(world):
    idx = world.root / "visualizations" / "index.json"
    data = json.loads(idx.read_text())
    del data["features"]["1"]
    idx.write_text(json.dumps(data))
    run_rate(world.run, raters=["fid"])
    header, _, row = (world.root / "ratings" / "fid.csv").read_text().splitlines()[:3]
    assert header == "feature_ind,I,kid,fd,fd_corrected,null_mean,null_std,z,p_value"
    assert row == "1" + "," * 8


def test_each_image_is_embedded_once_across_raters(world):
    """Four embedding raters over 5 features: every distinct image (vis + examples + null pool +
    MIS queries) is embedded exactly once, and a rerun embeds nothing."""
    from autointerp.embedders.cache import EmbeddingCache
    from autointerp.embedders.handcrafted import HandcraftedEmbedder

    calls: list[int] = []

    class Counting(HandcraftedEmbedder):
        def _embed_batch(self, images):
            calls.append(len(images))
            return super()._embed_batch(images)

    run_rate(
        world.run,
        raters=["clip_coherence", "clip_vis_match", "fid", "mis", "auto_I"],
        embedder=Counting(),
        dataset=world.dataset,
    )
    cache = EmbeddingCache(HandcraftedEmbedder(), world.root / "ratings" / "cache")
    image_rows = [k for k in cache._index if not k.startswith("text:")]
    assert sum(calls) == len(image_rows)  # nothing embedded twice
    needed = set()
    from autointerp.rating import RatingContext

    ctx = RatingContext(world.run, dataset=world.dataset)
    for f in world.features:
        for p in ctx.vis_paths(f) + ctx.example_paths(f) + ctx.example_paths(f, "bottom"):
            needed.add(cache.key(ctx.load_image(p)))
    assert needed <= set(image_rows)
    calls.clear()
    run_rate(
        world.run,
        raters=["clip_coherence", "clip_vis_match", "fid", "mis"],
        embedder=Counting(),
        dataset=world.dataset,
        overwrite=True,
    )
    assert sum(calls) == 0


def test_stage_errors_are_one_line(world, tmp_path):
    with pytest.raises(UserError, match=r"unknown rater 'clip'; valid: .*clip_coherence"):
        run_rate(world.run, raters=["clip"])
    with pytest.raises(UserError, match="rater 'human' needs human: no survey answers"):
        run_rate(world.run, raters=["human"])
    (world.root / "activations" / "scores.npy").unlink()
    with pytest.raises(UserError, match=r"rater 'mis' needs activations: .*scores.npy missing"):
        run_rate(world.run, raters=["mis"])
    empty = make_world(tmp_path / "empty", n_features=2, n_images=60)
    for sub in ("examples", "visualizations", "importance"):
        import shutil

        shutil.rmtree(empty.root / sub)
    (empty.root / "activations" / "scores.npy").unlink()
    with pytest.raises(UserError, match="no features to rate"):
        run_rate(empty.run, raters=["random"])


def test_cli_lists_every_builtin(cli):
    res = CliRunner().invoke(cli, ["raters", "list"])
    assert res.exit_code == 0, res.output
    listed = [line.split()[0] for line in res.output.splitlines() if line.strip()]
    assert set(BUILTINS) <= set(listed)
    for line in res.output.splitlines():
        assert len(line.split(None, 1)) == 2  # name + description on one line


def test_cli_rate_with_a_local_rater_file(cli, world, monkeypatch, tmp_path):
    from test_rating_contract import readme_example

    rater_file = tmp_path / "my_rater.py"  # the README's example, as a user would save it
    rater_file.write_text(readme_example())
    before = set(RATERS.names())
    # the example's null draws random dataset images: give the run the world's images as a downsampled-ImageNet file
    images = np.stack([world.dataset.image(i) for i in range(len(world.dataset))])
    np.savez(
        tmp_path / "world.npz",
        data=images.transpose(0, 3, 1, 2).reshape(len(images), -1),
        labels=np.ones(len(images), dtype=np.int64),
    )
    (world.root / "config.yaml").write_text(
        f"seed: 0\ndataset: {{type: npz, path: {tmp_path / 'world.npz'}}}\nrate:\n  embedder: {{type: handcrafted}}\n"
    )
    try:
        res = CliRunner().invoke(
            cli, ["rate", str(world.root), "--raters", "brightness,random", "--rater-path", str(rater_file)]
        )
        assert res.exit_code == 0, res.output
        table = ScoreTable.read_csv(world.root / "ratings" / "brightness.csv")
        assert list(table.feature_ind) == world.features and np.all((table.I > 0) & (table.I < 1))
        assert (world.root / "ratings" / "random.csv").exists()
        listed = CliRunner().invoke(cli, ["raters", "list", "--rater-path", str(rater_file)])
        assert "brightness" in listed.output
    finally:
        for name in set(RATERS.names()) - before:
            RATERS.unregister(name)


def test_cli_rate_reports_user_errors_in_one_line(cli, world):
    (world.root / "config.yaml").write_text("seed: 0\n")
    res = CliRunner().invoke(cli, ["rate", str(world.root), "--raters", "nope"])
    assert res.exit_code == 2
    assert "unknown rater 'nope'" in res.output and "Traceback" not in res.output


def test_cli_rate_human_with_invalid_policy(cli, world, tmp_path, shared_dir):
    """`--human FILE --invalid POLICY` rate the study's answers: 'error' names the bad row, 'keep'
    rates all 80 features (3 out-of-range answers kept, as the study did)."""
    (world.root / "config.yaml").write_text("seed: 0\n")
    answers = shared_dir / "reference/seed_study/survey_results.csv"
    res = CliRunner().invoke(cli, ["rate", str(world.root), "--raters", "human", "--human", str(answers)])
    assert res.exit_code == 2 and "survey_results.csv" in res.output
    res = CliRunner().invoke(
        cli, ["rate", str(world.root), "--raters", "human", "--human", str(answers), "--invalid", "keep"]
    )
    assert res.exit_code == 0, res.output
    table = ScoreTable.read_csv(world.root / "ratings" / "human.csv")
    meta = json.loads((world.root / "ratings" / "human.json").read_text())
    import csv

    rated = {int(r["neuron"]) for r in csv.DictReader(open(answers))}
    assert meta["n_features_rated"] == 80
    assert meta["rated_features_not_in_run"] == sorted(rated - set(world.features))
    assert [f for f, v in zip(table.feature_ind, table.I, strict=True) if np.isfinite(v)] == sorted(
        rated & set(world.features)
    )
    res = CliRunner().invoke(cli, ["rate", str(world.root), "--raters", "human", "--invalid", "maybe"])
    assert res.exit_code == 2 and "human_invalid" in res.output
