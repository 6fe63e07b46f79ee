"""The visualize stage on the planted world: the run-folder contract, the quality check measured like
the cache, cards laid out as in the study, resumability, NaN retry, bad input and the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_vis_world import RED, SIZE, make_run, planted_adapter  # tests/ helper module
from torch import nn

from autointerp.errors import UserError
from autointerp.runfolder import RunContext
from autointerp.stages.visualize import run_visualize
from autointerp.vis.compose import card_caption

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    ctx = make_run(tmp_path_factory.mktemp("vis") / "run", visualize={"steps": 96, "negative": True})
    ctx.paths.importance.mkdir()
    ctx.paths.importance_csv.write_text(
        "model,layer,feature_ind,importance\n" + "".join(f"planted,2,{f},{10 * f + 3}\n" for f in range(4))
    )
    run_visualize(ctx)
    return ctx


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_run_folder_contract(run: RunContext) -> None:
    out = run.paths.visualizations
    index = json.loads((out / "index.json").read_text())
    assert index["seed"] == 0 and index["settings"]["steps"] == 96 and index["settings"]["n_images"] == 4
    assert list(index["features"]) == ["0", "1", "2", "3"]
    for f, entry in index["features"].items():
        name = f"{int(f):04d}"
        assert entry["vis"] == [f"visualizations/{name}/vis_{i}.png" for i in range(4)]
        assert entry["neg"] == [f"visualizations/{name}/neg_{i}.png" for i in range(4)]
        assert entry["card"] == f"visualizations/{name}/card.png"
        assert len(entry["vis_activation"]) == 4 and isinstance(entry["seed"], int)
        assert set(entry["quality"]) >= {"vis_max", "example_max", "ratio", "ok"}
        assert entry["importance"] == 10 * int(f) + 3
        for p in [*entry["vis"], *entry["neg"], entry["card"]]:
            assert (run.root / p).exists()
        assert _png(run.root / entry["vis"][0]).shape == (SIZE, SIZE, 3)
    assert (out / "contact_sheet.png").exists()
    rows = (out / "quality.csv").read_text().splitlines()
    assert rows[0].startswith("feature_ind,vis_max,example_max,ratio,ok") and len(rows) == 5
    summary = index["quality_summary"]
    assert summary["n_features"] == 4 and summary["n_ok"] + summary["n_weak"] == 4
    assert summary["weak_features"] == [int(f) for f, e in index["features"].items() if not e["quality"]["ok"]]


def test_planted_feature_visualisation_beats_every_dataset_image(run: RunContext) -> None:
    entry = json.loads((run.paths.visualizations / "index.json").read_text())["features"][str(RED)]
    scores = np.load(run.paths.activations / "scores.npy")[:, RED]
    assert entry["quality"]["example_max"] == pytest.approx(float(scores.max()))
    assert entry["quality"]["vis_max"] > scores.max()
    assert entry["quality"]["ok"] and "weak" not in entry["flags"]


def test_vis_activation_is_measured_like_the_cache(run: RunContext) -> None:
    """Saved PNG → resized to the cache's input size → spatial max of the channel (meta reduce)."""
    head = planted_adapter().head("2")
    index = json.loads((run.paths.visualizations / "index.json").read_text())
    for f, entry in index["features"].items():
        x = torch.stack(
            [torch.from_numpy(_png(run.root / p).copy()).permute(2, 0, 1).float() / 255 for p in entry["vis"]]
        )
        with torch.no_grad():
            ref = head(x)[:, int(f)].amax(dim=(1, 2)).numpy()
        np.testing.assert_allclose(entry["vis_activation"], ref, rtol=1e-5, atol=1e-6)
        assert entry["quality"]["vis_max"] == pytest.approx(float(ref.max()))
        assert entry["quality"]["ok"] == bool(ref.max() >= entry["quality"]["example_max"])


def test_card_has_visualisations_above_examples(run: RunContext) -> None:
    index = json.loads((run.paths.visualizations / "index.json").read_text())["features"][str(RED)]
    examples = json.loads((run.paths.examples / "index.json").read_text())["features"][str(RED)]["top"]
    card = _png(run.root / index["card"]).astype(float)
    cell, gap, margin = 64, 6, 10  # visualize.size=32 → cells of 64 px
    assert card.shape[1] == 2 * margin + 4 * cell + 3 * gap

    def tile(path: str) -> np.ndarray:
        with Image.open(run.root / path) as im:
            return np.asarray(im.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC)).astype(float)

    def find_row(image: np.ndarray, x: int) -> int:
        errors = [np.abs(card[y : y + cell, x : x + cell] - image).mean() for y in range(card.shape[0] - cell)]
        assert min(errors) < 1.0
        return int(np.argmin(errors))

    vis_rows = {find_row(tile(p), margin + k * (cell + gap)) for k, p in enumerate(index["vis"])}
    ex_rows = [find_row(tile(e["path"]), margin + (k % 4) * (cell + gap)) for k, e in enumerate(examples)]
    assert len(vis_rows) == 1 and len(set(ex_rows[:4])) == 1 and len(set(ex_rows[4:])) == 1
    assert min(vis_rows) < ex_rows[0] < ex_rows[4]


def test_caption() -> None:
    assert card_caption(12, 34.0) == "feature 12 · importance 34"
    assert card_caption(12, 0.01234) == "feature 12 · importance 0.0123"
    assert card_caption(12, None) == "feature 12"


def test_resumable_and_overwrite_is_deterministic(run: RunContext) -> None:
    out = run.paths.visualizations
    before = {p: (p.stat().st_mtime_ns, _png(p)) for p in out.glob("*/vis_0.png")}
    run_visualize(run)
    assert all(p.stat().st_mtime_ns == t for p, (t, _) in before.items())  # nothing redone
    shutil.rmtree(out / "0002")
    run_visualize(run, features=[2, 3])
    for p, (t, img) in before.items():
        if p.parent.name == "0002":
            # rendered alone now (it shared a batch before): same seed → same image up to rounding
            assert np.abs(_png(p).astype(int) - img.astype(int)).max() <= 2
        else:
            assert p.stat().st_mtime_ns == t
    run_visualize(run, overwrite=True, features=[3])
    p3 = out / "0003" / "vis_0.png"
    assert p3.stat().st_mtime_ns != before[p3][0]
    assert np.abs(_png(p3).astype(int) - before[p3][1].astype(int)).max() <= 2
    assert len(json.loads((out / "index.json").read_text())["features"]) == 4


def test_resumed_feature_is_rendered_with_its_batch_mates_so_its_images_are_identical(
    run: RunContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autointerp.vis.render as render_module

    batches: list[list[int]] = []
    real_render = render_module.render

    def recording_render(head, jobs, *args, **kwargs):
        batches.append(sorted({job.feature for job in jobs}))
        return real_render(head, jobs, *args, **kwargs)

    monkeypatch.setattr(render_module, "render", recording_render)
    out = run.paths.visualizations
    before = {p.name: p.read_bytes() for p in (out / "0001").glob("*.png")}
    kept = (out / "0000" / "vis_0.png").stat().st_mtime_ns
    shutil.rmtree(out / "0001")  # as if killed after its batch-mates were written
    run_visualize(run)
    # the same batch as the first run (batch_features 4: all four), so batched kernels round the same way
    assert batches == [[0, 1, 2, 3]]
    assert {p.name: p.read_bytes() for p in (out / "0001").glob("*.png")} == before
    assert (out / "0000" / "vis_0.png").stat().st_mtime_ns == kept  # batch-mates re-rendered, not rewritten


def test_bad_input(run: RunContext) -> None:
    with pytest.raises(UserError, match=r"channel index 7 out of range for layer '2' \(valid: 0\.\.3\)"):
        run_visualize(run, features=[7])
    ctx = RunContext(run.root, run.config.model_copy(update={"layer": "nope"}))
    ctx.__dict__["model"] = planted_adapter()
    with pytest.raises(UserError, match="unknown layer 'nope'"):
        run_visualize(ctx)


class _FragileRed(nn.Module):
    """``-sqrt(0.75 - redness)``: fine on every dataset image (redness ≤ 0.71), NaN once an optimised
    image gets redder than 0.75 — which Adam at lr 0.05 reaches within 96 steps, at lr 0.005 not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.sqrt(0.75 - (x[:, :1] - 0.5 * (x[:, 1:2] + x[:, 2:3])))


def test_nonfinite_feature_is_retried_with_smaller_lr_and_flagged(tmp_path: Path) -> None:
    module = nn.Sequential(_FragileRed(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 2)).eval()
    ctx = make_run(tmp_path / "run", visualize={"steps": 96}, module=module, layer="0")
    run_visualize(ctx)
    index = json.loads((ctx.paths.visualizations / "index.json").read_text())
    entry = index["features"]["0"]
    assert "retried_lr" in entry["flags"] and entry["lr"] == pytest.approx(0.005)
    assert np.isfinite(entry["vis_activation"]).all() and len(entry["vis"]) == 4
    assert index["quality_summary"]["n_retried_lr"] == 1


def test_cli_errors_are_one_line(run: RunContext) -> None:
    from typer.testing import CliRunner

    from autointerp.cli import app

    result = CliRunner().invoke(app, ["visualize", str(run.root), "--features", "1-x"])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError) and "--features '1-x'" in str(result.exception)
    result = CliRunner().invoke(app, ["examples", str(run.root.parent / "missing")])
    assert isinstance(result.exception, UserError) and "not a run folder" in str(result.exception)
