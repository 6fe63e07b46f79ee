"""A tiny planted world for the visualisation and example tests (helpers imported by test_vis_*.py and
test_examples*.py), and checks that the world is what the other tests assume.

* ``planted_cnn()``: conv 5×5 → ReLU → avg-pool 2 (layer ``"2"``) → global pool → linear. Channel 0 is a
  red detector (R − (G+B)/2 averaged over the 5×5 window), channel 1 a green detector, channels 2–3 random.
* ``write_blobs()``: 32 px images: every third image has a red disc, every third a green disc (of varying
  strength and size), the rest are dim noise. The strongest red image scores (220−40)/255 ≈ 0.71 on
  channel 0; a pure red image would score 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from autointerp.config import config_from_dict
from autointerp.models.generic import ModuleAdapter
from autointerp.runfolder import RunContext

SIZE = 32
N_IMAGES = 24
RED, GREEN = 0, 1


def planted_cnn(seed: int = 0) -> nn.Sequential:
    """The planted classifier; layer ``"2"`` has 4 channels on a 16×16 grid."""
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 4, 5, padding=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[RED, 0] = 1 / 25
        conv.weight[RED, 1:] = -0.5 / 25
        conv.weight[GREEN, 1] = 1 / 25
        conv.weight[GREEN, [0, 2]] = -0.5 / 25
        conv.weight[2:] = torch.randn(2, 3, 5, 5, generator=gen) * 0.05
    head = nn.Linear(4, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 1.0, 0, 0], [1.0, -1.0, 0, 0]]))
        head.bias.zero_()
    return nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def planted_adapter(module: nn.Module | None = None) -> ModuleAdapter:
    """The planted model as an adapter (no normalisation: images in [0, 1] go straight in)."""
    return ModuleAdapter(
        module if module is not None else planted_cnn(),
        name="planted",
        input_size=SIZE,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
    )


def blob_images(n: int = N_IMAGES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 32, 32, 3)`` uint8 images and labels (1 = red disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = rng.integers(20, 90, size=(n, SIZE, SIZE, 3)).astype(np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        kind = i % 3
        if kind == 2:
            continue
        cy, cx = rng.integers(8, SIZE - 8, size=2)
        radius = rng.integers(4, 9)
        strength = 0.5 + 0.5 * (i % 5) / 4  # 0.5 .. 1.0
        lo, hi = 40, int(40 + 180 * strength)
        colour = (hi, lo, lo) if kind == 0 else (lo, hi, lo)
        images[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = colour
        labels[i] = 1 if kind == 0 else 0
    return images, labels


def write_blobs(path: Path, n: int = N_IMAGES) -> np.ndarray:
    """Save the images in the downsampled-ImageNet npz layout; returns them."""
    images, labels = blob_images(n)
    np.savez(path, data=images.transpose(0, 3, 1, 2).reshape(n, -1), labels=labels)
    return images


def make_run(
    root: Path,
    visualize: dict | None = None,
    activations: dict | None = None,
    module: nn.Module | None = None,
    seed: int = 0,
    layer: str = "2",
) -> RunContext:
    """A run folder on the planted world with the activation stage done."""
    from autointerp.stages.activations import run_activations

    data = root.parent / f"{root.name}_blobs.npz"
    write_blobs(data)
    cfg = config_from_dict(
        {
            "model": {"name": "module"},
            "layer": layer,
            "device": "cpu",
            "seed": seed,
            "dataset": {"type": "npz", "path": str(data)},
            "label_mapping": {"type": "identity"},
            "activations": {"batch_size": 8, "top_k": 8, "accuracy_k": [1], **(activations or {})},
            "visualize": {"steps": 48, "size": 32, "batch_features": 4, **(visualize or {})},
        }
    )
    ctx = RunContext.create(cfg, root)
    ctx.__dict__["model"] = planted_adapter(module)
    run_activations(ctx)
    return ctx


# -- the world is what the tests assume ------------------------------------------------------------


def test_red_channel_detects_red_discs(tmp_path: Path) -> None:
    ctx = make_run(tmp_path / "run")
    scores = np.load(ctx.paths.activations / "scores.npy")
    top = np.argsort(-scores[:, RED], kind="stable")[:8]
    assert set(top.tolist()) == set(range(0, N_IMAGES, 3))  # exactly the red-disc images
    assert 0.6 < scores[:, RED].max() < 0.72  # strongest red disc: (220 - 40) / 255
    top_green = np.argsort(-scores[:, GREEN], kind="stable")[:8]
    assert set(top_green.tolist()) == set(range(1, N_IMAGES, 3))
