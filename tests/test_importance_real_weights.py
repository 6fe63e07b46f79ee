"""Exact importance equals the naive full-forward reference on real trained weights (issue 27, item 8).

The real Coral MobileNetV2 (TFLite → torch, ``configs/mobilenetv2_coral.yaml``) on 40 real ImageNet images,
every feature, at three layers: ``Conv_1`` (affine tail: the Jacobian path), ``expanded_conv_15_add`` (a residual
block output, non-affine tail) and ``expanded_conv_16_expand`` (960 channels, non-affine tail). The exact
method runs through the importance stage; the reference is :func:`~autointerp.importance.naive.naive_importance`:
the whole model's own forward (``adapter.forward``: preprocessing and the complete converted graph, not a
subgraph from the layer) per feature, with a forward hook on the layer's op module that substitutes the cached
activation (as ``--method naive`` does) and ablates the feature.

Cost: a 224-px forward of MobileNetV2 takes ~0.37 s for 40 images on 2 cores, so 2400 features would take
~15 minutes. Because the hook replaces the layer's whole output by the cached activation, what the model
computes *before* the layer never reaches the logits; the naive reference therefore runs on the same images
downsampled to 32 px (the head yields a 1×1 map, which the hook replaces by the cached 7×7 one; ~0.01 s per
feature). This is exact only at a cut layer, where nothing after the layer reads an earlier tensor; anywhere
else the shapes would clash and the forward would raise, not differ silently. A subset of 12 features is also
run at the full 224 px, which must give the same counts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.config import load_config
from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import read_cache
from autointerp.importance.naive import naive_importance
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations
from autointerp.stages.importance import ImportanceInputs, run_importance

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 40
#: layer -> (channels, the exact path the stage must choose for it)
LAYERS = {
    "Conv_1": (1280, "affine"),
    "expanded_conv_15_add": (160, "tail"),
    "expanded_conv_16_expand": (960, "tail"),
}
FULL_SIZE_FEATURES = list(range(12))  # also checked with 224-px images


def coral_run(shared: Path, root: Path, layer: str) -> RunContext:
    """A run folder of the study config pointed at ``shared``: 40 images, ``layer``, all features, exact method."""
    coral = shared / "models/coral"
    cfg = load_config(
        REPO / "configs/mobilenetv2_coral.yaml",
        [
            f"model.weights={coral / 'mobilenet_v2_1.0_224_quant.tflite'}",
            f"dataset.path={shared / 'data/imagenet_sample_64.npz'}",
            f"label_mapping.map_clsloc={shared / 'reference/imagenet/map_clsloc.txt'}",
            f"dataset.max_images={N_IMAGES}",
            f"layer={layer}",
        ],
    )
    ctx = RunContext.create(cfg, root)
    run_activations(ctx)
    run_importance(ctx)
    return ctx


def read_counts(path: Path) -> dict[int, tuple[int, int, int]]:
    """feature -> (importance, correct_to_wrong, wrong_to_correct) from an importance CSV."""
    with path.open(newline="", encoding="utf-8") as fh:
        return {
            int(r["feature_ind"]): (int(r["importance"]), int(r["correct_to_wrong"]), int(r["wrong_to_correct"]))
            for r in csv.DictReader(fh)
        }


def naive_counts(ctx: RunContext, features: list[int], size: int) -> dict[int, tuple[int, int, int]]:
    """The naive reference on the run's cache: the model's whole forward on its images at ``size`` px, one
    pass per feature, the layer's op module hooked (cached activation substituted, feature ablated)."""
    inputs = ImportanceInputs(ctx)
    cfg = ctx.config.importance
    ablation = Ablation.from_means(inputs.mean, inputs.mean_position, cfg.mean_scope, inputs.shape[1:])
    index_path = inputs.folder / "dataset_index.npy"
    index = np.load(index_path) if index_path.exists() else np.arange(inputs.shape[0])
    images = ctx.dataset.batch(index.tolist(), size)
    # the converted graph names each op module after its output tensor, under the adapter's `body`
    layer_module = dict(ctx.model.module.named_modules())[f"body.{ctx.config.layer}"]
    tally = naive_importance(
        ctx.model.forward, layer_module, images, torch.as_tensor(inputs.labels), features, ablation, cfg.k,
        ctx.model.valid_outputs.bool(), batch_size=N_IMAGES, cached=read_cache(inputs.acts, slice(None)),
    )  # fmt: skip
    return {
        f: (int(tally.importance[i]), int(tally.correct_to_wrong[i]), int(tally.wrong_to_correct[i]))
        for i, f in enumerate(features)
    }


@pytest.fixture(scope="module", params=list(LAYERS))
def run(request, shared_dir: Path, tmp_path_factory) -> RunContext:
    torch.set_num_threads(2)
    return coral_run(shared_dir, tmp_path_factory.mktemp("coral") / "run", request.param)


@pytest.mark.slow
def test_exact_equals_naive_on_every_feature(run: RunContext) -> None:
    layer = run.config.layer
    channels, path = LAYERS[layer]
    summary = json.loads((run.paths.importance / "summary.json").read_text())["exact"]
    assert summary["path"] == path and summary["n_images"] == N_IMAGES
    exact = read_counts(run.paths.importance / "importance_exact.csv")
    assert sorted(exact) == list(range(channels))  # all features
    naive = naive_counts(run, list(range(channels)), size=32)
    mismatch = {f: (exact[f], naive[f]) for f in exact if exact[f] != naive[f]}
    assert not mismatch, f"{layer}: feature -> (exact, naive) (importance, c->w, w->c): {mismatch}"
    assert sum(1 for v in naive.values() if v[1] + v[2] > 0) > 0  # some feature flips some image
    # the shortcut of the reference (small inputs, head output discarded) changes nothing at full size
    full = naive_counts(run, FULL_SIZE_FEATURES, size=run.image_size())
    assert full == {f: naive[f] for f in FULL_SIZE_FEATURES}


@pytest.mark.parametrize("run", ["Conv_1"], indirect=True)
def test_stage_naive_method_on_tflite(run: RunContext) -> None:
    """``run_importance(method="naive")`` through the stage on the TFLite graph, whose op modules are
    ``body.<layer>`` (found by ``ModelAdapter.layer_module``): the same counts as the exact method."""
    exact = read_counts(run.paths.importance / "importance_exact.csv")
    flipping = [f for f, v in sorted(exact.items()) if v[1] + v[2] > 0]
    feats = flipping[:3] + [f for f, v in sorted(exact.items()) if v == (0, 0, 0)][:1]
    path = run_importance(run, features=feats, method="naive")
    naive = read_counts(path)
    assert naive == {f: exact[f] for f in feats}
