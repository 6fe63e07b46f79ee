"""Vision transformers: a block's output (N, T, D) is a layer of D features (autointerp.models.tokens).

Checked against references computed here, independently of the head/tail split: a unit's score is its max over
the patch tokens (CLS only with ``tokens: all``); mean ablation replaces the unit by its dataset mean at every token
inside the *original* module (a forward hook), and the importance stage's counts equal those; exact equals naive;
the whole pipeline runs on a tiny ViT and on torchvision's real ``vit_b_16`` architecture (random init) over the
shared ImageNet images.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.cli.core import DEMO_CONFIG
from autointerp.config import load_config
from autointerp.errors import UserError
from autointerp.models.generic import ModuleAdapter
from autointerp.pipeline import run_pipeline
from autointerp.runfolder import RunContext, feature_dirname
from tests.skips import skip_unless_available

TINY_LAYER = "encoder.layers.encoder_layer_1"


def tiny_vit() -> nn.Module:
    """A torchvision VisionTransformer for the demo world (64 px, 16 classes): 16 patches + CLS, 32 units; the
    head re-initialised (torchvision zero-initialises it: every logit 0, nothing to ablate)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=64, patch_size=16, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                            num_classes=16)  # fmt: skip
    nn.init.normal_(vit.heads.head.weight, std=0.5)
    return vit.eval()


def tiny_timm_vit() -> nn.Module:
    if importlib.util.find_spec("timm") is None:
        skip_unless_available("timm is not installed (pip install 'autointerp[timm]')")
    import timm

    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=10
    ).eval()


def demo_timm_vit() -> nn.Module:
    """A timm VisionTransformer for the demo world (64 px, 16 classes, 16 patches + CLS, 32 units)."""
    if importlib.util.find_spec("timm") is None:
        skip_unless_available("timm is not installed (pip install 'autointerp[timm]')")
    import timm

    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(
        img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=16
    )
    nn.init.normal_(vit.head.weight, std=0.5)
    return vit.eval()


def _tiny_config(tmp_path: Path, *extra: str):
    overrides = [
        "model.name=module", "model.pretrained=false", "model.options.factory=tests.test_vit:tiny_vit",
        "model.options.input_size=64", "model.options.mean=[0.5,0.5,0.5]", "model.options.std=[0.5,0.5,0.5]",
        f"layer={TINY_LAYER}", "dataset.options.n_images=120", "activations.batch_size=40",
        "visualize.steps=4", "visualize.n_images=2", "visualize.features=[0,1]", "visualize.bottom_examples=false",
        "rate.raters=[random]", "report.top_n=4", "report.middle_n=4", *extra,
    ]  # fmt: skip
    return load_config(DEMO_CONFIG, overrides)


def test_token_layers_are_listed_split_exactly_and_scored_over_patch_tokens() -> None:
    x = torch.rand(3, 3, 64, 64)
    for module, layer, tokens in ((tiny_vit(), TINY_LAYER, 17), (tiny_timm_vit(), "blocks.1", 17)):
        size = x.shape[-1] if layer == TINY_LAYER else 32
        images = torch.nn.functional.interpolate(x, size=(size, size)) if size != 64 else x
        patch = ModuleAdapter(module, input_size=size)
        assert patch.layers()[layer] == (32 if layer == TINY_LAYER else 16)
        assert patch.layer_kind(layer) == "tokens" and patch.scored_positions(layer) == slice(1, None)
        with torch.no_grad():
            grid = patch.head(layer)(images)
            assert grid.shape == (3, patch.layers()[layer], tokens, 1)
            torch.testing.assert_close(patch.tail(layer)(grid), patch.forward(images), rtol=0, atol=0)
            assert torch.equal(patch.scored_head(layer)(images), grid[:, :, 1:])  # CLS left out
        every = ModuleAdapter(module, input_size=size, tokens="all")
        assert every.scored_positions(layer) == slice(None) and every.fingerprint_extra != patch.fingerprint_extra
        conv = "conv_proj" if layer == TINY_LAYER else "patch_embed.proj"
        assert patch.layer_kind(conv) == "channels" and patch.scored_positions(conv) == slice(None)
    with pytest.raises(UserError, match="model option 'tokens' = 'cls'; expected one of patch, all"):
        ModuleAdapter(tiny_vit(), input_size=64, tokens="cls")
    listing = CliRunner().invoke(app, ["models", "module", "--option", "factory=tests.test_vit:tiny_vit",
                                       "--option", "input_size=64"])  # fmt: skip
    lines = dict(line.split("\t", 1) for line in listing.output.strip().splitlines())
    assert lines[TINY_LAYER] == "32\ttokens" and lines["conv_proj"] == "32"


def _hooked_counts(module: nn.Module, images: torch.Tensor, labels: np.ndarray, means: np.ndarray, k: int,
                   layer: str = TINY_LAYER, units: list[int] | None = None):  # fmt: skip
    """Per unit: (#true class in top-k) − (#same with the unit replaced by ``means[d]`` at every token of the block's
    output inside the original module) — the study's importance, with no head/tail split involved. ``images`` are
    what ``module`` takes (normalised)."""
    block = dict(module.named_modules())[layer]

    def correct(logits: torch.Tensor) -> int:
        top = logits.topk(k, dim=1).indices.numpy()
        return int(sum(labels[i] in top[i] for i in range(len(labels))))

    with torch.no_grad():
        base = correct(module(images))
        counts = []
        for d in range(len(means)) if units is None else units:

            def ablate(_m, _i, out, d=d):
                out = out.clone()
                out[:, :, d] = float(means[d])
                return out

            handle = block.register_forward_hook(ablate)
            try:
                counts.append(base - correct(module(images)))
            finally:
                handle.remove()
    return np.array(counts)


def test_tiny_vit_pipeline_end_to_end_with_importance_equal_to_a_hooked_reference(tmp_path: Path) -> None:
    cfg = _tiny_config(tmp_path)
    ctx = RunContext.create(cfg, tmp_path / "run")
    done = run_pipeline(ctx)
    assert done == ["activations", "importance", "examples", "visualize", "rate", "report"]
    run = tmp_path / "run"
    meta = json.loads((run / "activations" / "meta.json").read_text())
    assert meta["layer_kind"] == "tokens" and meta["spatial"] == [17, 1] and meta["scored_rows"] == [1, 17]
    # scores: max over the patch tokens of the block's output, from a hook on the original module
    ds = ctx.dataset
    images = ds.batch(range(len(ds)), 64)
    captured: list[torch.Tensor] = []
    block = dict(ctx.model.module.named_modules())[TINY_LAYER]
    handle = block.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        ctx.model.module((images - 0.5) / 0.5)
    handle.remove()
    tokens = captured[0]  # (N, 17, 32)
    scores = np.load(run / "activations" / "scores.npy")
    np.testing.assert_allclose(scores, tokens[:, 1:].amax(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(scores, tokens.amax(dim=1).numpy())  # the CLS token would change some scores
    # importance: the hooked reference, with the dataset mean over images and every token
    means = tokens.double().mean(dim=(0, 1)).numpy()
    np.testing.assert_allclose(np.load(run / "activations" / "mean.npy"), means, rtol=1e-5)
    labels = np.load(run / "activations" / "labels.npy")
    norm = (images - 0.5) / 0.5
    expected = _hooked_counts(ctx.model.module, norm, labels, means.astype(np.float32), cfg.importance.k)
    with open(run / "importance" / "importance.csv") as f:
        got = np.array([int(r["importance"]) for r in csv.DictReader(f)])
    assert np.abs(expected).sum() > 0  # ablations do flip images: the comparison has teeth
    np.testing.assert_array_equal(got, expected)
    visualized = sorted(p.name for p in (run / "visualizations").iterdir() if p.is_dir())
    assert visualized == [feature_dirname(0), feature_dirname(1)]
    assert (run / "report" / "index.html").is_file()


def test_exact_equals_naive_and_cropping_a_token_layer_is_refused(tmp_path: Path) -> None:
    tables = {}
    for method in ("exact", "naive"):
        cfg = _tiny_config(tmp_path, f"importance.method={method}", "dataset.options.n_images=60")
        ctx = RunContext.create(cfg, tmp_path / method)
        run_pipeline(ctx, only=["activations", "importance"])
        with open(tmp_path / method / "importance" / "importance.csv") as f:
            tables[method] = [(r["feature_ind"], r["importance"], r["correct_to_wrong"]) for r in csv.DictReader(f)]
    assert tables["exact"] == tables["naive"] and len(tables["exact"]) == 32
    cfg = _tiny_config(tmp_path, "dataset.options.n_images=60", "visualize.crop_examples=true")
    crop = RunContext.create(cfg, tmp_path / "crop")
    run_pipeline(crop, only=["activations"])
    with pytest.raises(UserError, match="token layer: every token sees the whole image"):
        run_pipeline(crop, only=["examples"])


@pytest.mark.slow
def test_torchvision_vit_b_16_block_on_the_shared_images(tmp_path: Path, shared_dir: Path) -> None:
    """The real ViT-B/16 architecture (random init, head re-initialised) at encoder block 6 on 12 shared ImageNet
    images: every stage runs; 768 features with examples; importance of 4 units by the tail path (its counts are
    checked against the hooked reference on the tiny ViTs above, where the cache is float32)."""
    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs/vit_b_16_block6.yaml", [
        "model.pretrained=false", f"dataset.path={shared_dir / 'data/imagenet_sample_64.npz'}",
        "dataset.max_images=12", f"label_mapping.map_clsloc={shared_dir / 'reference/imagenet/map_clsloc.txt'}",
        "device=cpu", "activations.batch_size=6", "importance.features=[0,1,2,3]", "importance.k=500",
        "visualize.features=[0]", "visualize.steps=2", "visualize.n_images=1", "rate.raters=[random]",
        "report.top_n=2", "report.middle_n=2",
    ])  # fmt: skip
    ctx = RunContext.create(cfg, tmp_path / "run")
    torch.manual_seed(1)
    nn.init.normal_(ctx.model.module.heads.head.weight, std=0.05)  # torchvision zero-initialises the head
    run_pipeline(ctx)
    run = tmp_path / "run"
    meta = json.loads((run / "activations" / "meta.json").read_text())
    assert meta["channels"] == 768 and meta["spatial"] == [197, 1] and meta["scored_rows"] == [1, 197]
    assert len([p for p in (run / "examples").iterdir() if p.is_dir()]) == 768
    assert (run / "report" / "index.html").is_file()
    with open(run / "importance" / "importance.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["feature_ind"]) for r in rows] == [0, 1, 2, 3]
    summary = json.loads((run / "importance" / "summary.json").read_text())["exact"]
    assert summary["path"] == "tail"  # the second-difference probe: no Jacobian of 1000 x 151,296 built


def test_open_clip_image_tower_as_a_zero_shot_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_clip's ViT-B-32 (random init) with a zero-shot head over 16 class names: its blocks are token layers,
    the split is exact, the class embeddings are cached, and importance at block 6 equals the hooked reference."""
    if importlib.util.find_spec("open_clip") is None:
        skip_unless_available("open_clip is not installed (pip install 'autointerp[clip]')")
    monkeypatch.setenv("AUTOINTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"shape number {i}" for i in range(16)) + "\n")
    layer = "visual.transformer.resblocks.6"
    cfg = load_config(DEMO_CONFIG, [
        "model.name=open_clip", "model.pretrained=false", f"model.options.classes={names}", f"layer={layer}",
        "dataset.options.n_images=24", "dataset.image_size=224", "activations.batch_size=12",
        "importance.features=[0,1,2,3,4,5]", "importance.k=8",
    ])  # fmt: skip
    ctx = RunContext.create(cfg, tmp_path / "run")
    model = ctx.model
    assert model.num_outputs == 16 and model.layers()[layer] == 768 and model.layer_kind(layer) == "tokens"
    assert model.layer_kind("visual.conv1") == "channels"
    assert len(list((tmp_path / "cache" / "zero_shot").glob("*.npy"))) == 1
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.tail(layer)(model.head(layer)(x)), model.forward(x), rtol=0, atol=0)
    run_pipeline(ctx, only=["activations", "importance"])
    run = tmp_path / "run"
    images = ctx.dataset.batch(range(len(ctx.dataset)), 224)
    means = np.load(run / "activations" / "mean.npy")
    labels = np.load(run / "activations" / "labels.npy")
    expected = _hooked_counts(model.module, model.preprocess(images), labels, means, 8, layer, list(range(6)))
    with open(run / "importance" / "importance.csv") as f:
        rows = list(csv.DictReader(f))
    got = np.array([int(r["importance"]) for r in rows])
    np.testing.assert_array_equal(got, expected)
    assert sum(int(r["correct_to_wrong"]) + int(r["wrong_to_correct"]) for r in rows) > 0  # flips: it has teeth
    with pytest.raises(UserError, match="model option 'classes' = 'nope.txt'"):
        from autointerp.models.base import create_model

        create_model("open_clip", pretrained=False, classes="nope.txt")


def test_timm_vit_importance_equals_the_hooked_reference(tmp_path: Path) -> None:
    """A timm ViT's block (``blocks.1``) through activations and exact importance: every unit's count equals the
    hooked reference on the original module."""
    layer = "blocks.1"
    cfg = _tiny_config(tmp_path, "model.options.factory=tests.test_vit:demo_timm_vit", f"layer={layer}",
                       "dataset.options.n_images=80")  # fmt: skip
    ctx = RunContext.create(cfg, tmp_path / "run")
    run_pipeline(ctx, only=["activations", "importance"])
    run = tmp_path / "run"
    images = ctx.dataset.batch(range(len(ctx.dataset)), 64)
    means = np.load(run / "activations" / "mean.npy")
    labels = np.load(run / "activations" / "labels.npy")
    expected = _hooked_counts(ctx.model.module, (images - 0.5) / 0.5, labels, means, cfg.importance.k, layer)
    with open(run / "importance" / "importance.csv") as f:
        got = np.array([int(r["importance"]) for r in csv.DictReader(f)])
    assert np.abs(expected).sum() > 0
    np.testing.assert_array_equal(got, expected)
