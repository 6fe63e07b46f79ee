"""The examples stage on the planted world: the cached top/bottom images, saved losslessly at native
size, crops around the maximal position, resumability, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_vis_world import GREEN, N_IMAGES, RED, blob_images, make_run  # tests/ helper module

from autointerp.errors import UserError
from autointerp.stages.examples import run_examples

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_top_examples_are_the_most_activating_images_saved_losslessly(tmp_path: Path) -> None:
    ctx = make_run(tmp_path / "run")
    out = run_examples(ctx)
    index = json.loads((out / "index.json").read_text())
    scores = np.load(ctx.paths.activations / "scores.npy")
    images, _ = blob_images()
    assert sorted(index["features"], key=int) == ["0", "1", "2", "3"]
    for f in range(4):
        entry = index["features"][str(f)]
        assert entry["bottom"] == []
        expected = np.argsort(-scores[:, f], kind="stable")[:8]
        assert [e["dataset_index"] for e in entry["top"]] == expected.tolist()
        for r, item in enumerate(entry["top"]):
            assert item["path"] == f"examples/{f:04d}/top_{r}.png"
            assert item["activation"] == pytest.approx(float(scores[item["dataset_index"], f]))
            np.testing.assert_array_equal(_png(ctx.root / item["path"]), images[item["dataset_index"]])
    assert {e["dataset_index"] for e in index["features"][str(RED)]["top"]} == set(range(0, N_IMAGES, 3))
    assert {e["dataset_index"] for e in index["features"][str(GREEN)]["top"]} == set(range(1, N_IMAGES, 3))


def test_bottom_examples_and_feature_subset(tmp_path: Path) -> None:
    ctx = make_run(tmp_path / "run", visualize={"bottom_examples": True, "n_examples": 4}, activations={"bottom_k": 4})
    out = run_examples(ctx, features=[RED])
    index = json.loads((out / "index.json").read_text())
    assert list(index["features"]) == [str(RED)]
    scores = np.load(ctx.paths.activations / "scores.npy")[:, RED]
    entry = index["features"][str(RED)]
    assert [e["dataset_index"] for e in entry["bottom"]] == np.argsort(scores, kind="stable")[:4].tolist()
    assert len(entry["top"]) == 4 and all((ctx.root / e["path"]).exists() for e in entry["bottom"])
    assert not (out / "0001").exists()


def test_crop_to_receptive_field_around_the_maximum(tmp_path: Path) -> None:
    ctx = make_run(tmp_path / "run", visualize={"crop_examples": True})
    out = run_examples(ctx, features=[RED])
    index = json.loads((out / "index.json").read_text())
    # conv 5x5 then 2x2 average pooling: a unit sees 6x6 of the 32 px input
    assert index["settings"]["receptive_field"] == [6 / 32, 6 / 32]
    acts = np.load(ctx.paths.activations / "acts.npy")
    for item in index["features"][str(RED)]["top"]:
        top, left, bottom, right = item["crop"]
        crop = _png(ctx.root / item["path"])
        assert crop.shape == (bottom - top, right - left, 3) == (6, 6, 3)
        i, j = item["position"]
        assert acts[item["dataset_index"], RED, i, j] == acts[item["dataset_index"], RED].max()
        assert top <= 2 * i + 1 <= bottom and left <= 2 * j + 1 <= right  # the unit's centre is inside
        mean = crop.reshape(-1, 3).mean(axis=0)
        assert mean[0] > mean[1] + 50  # a crop of the red disc


def test_resumable_per_feature_and_overwrite(tmp_path: Path) -> None:
    ctx = make_run(tmp_path / "run")
    out = run_examples(ctx)
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*/top_0.png")}
    shutil.rmtree(out / "0002")
    run_examples(ctx)
    assert (out / "0002" / "top_0.png").exists()
    for p, t in stamp.items():
        if p.parent.name != "0002":
            assert p.stat().st_mtime_ns == t  # untouched
    run_examples(ctx, overwrite=True, features=[1])
    assert (out / "0001" / "top_0.png").stat().st_mtime_ns != stamp[out / "0001" / "top_0.png"]
    assert len(json.loads((out / "index.json").read_text())["features"]) == 4


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    ctx = make_run(tmp_path / "run")
    with pytest.raises(UserError, match=r"channel index 4 out of range for layer '2' \(valid: 0\.\.3\)"):
        run_examples(ctx, features=[0, 4])
    ctx.config.visualize.n_examples = 9
    with pytest.raises(UserError, match="n_examples.*exceeds the cached top-k"):
        run_examples(ctx)
    ctx.config.visualize.n_examples = 8
    ctx.config.visualize.bottom_examples = True
    with pytest.raises(UserError, match="bottom_k"):
        run_examples(ctx)
    shutil.rmtree(ctx.paths.activations)
    with pytest.raises(UserError, match="run `autointerp activations"):
        run_examples(ctx)
    assert not ctx.paths.examples.exists()  # nothing half-written
