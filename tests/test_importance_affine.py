"""Affine tails (global pool + linear): the Jacobian path gives exactly the counts of naive hooked
full forward passes, including planted exact ties that must fall back to the real tail."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autointerp.config import config_from_dict
from autointerp.importance.affine import affine_jacobian
from autointerp.models.generic import ModuleAdapter
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations
from autointerp.stages.importance import run_importance


def _net(tie: bool) -> nn.Module:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )
    with torch.no_grad():
        net[6].weight.mul_(8.0)
        if tie:  # outputs 1 and 2 identical: exact ties that only the real tail may decide
            net[6].weight[2] = net[6].weight[1]
            net[6].bias[2] = net[6].bias[1]
    return net.eval()


def _run(tmp: Path, method: str, tie: bool) -> tuple[dict[int, tuple[int, int, int]], dict]:
    rng = np.random.default_rng(0)
    # per-image colours and contrast, so pooled channel values vary between images and ablations flip some
    colour = rng.uniform(0, 255, size=(60, 1, 1, 3))
    noise = rng.uniform(-1, 1, size=(60, 10, 10, 3)) * rng.uniform(0, 120, size=(60, 1, 1, 1))
    images = np.clip(colour + noise, 0, 255).astype(np.uint8)
    labels = rng.integers(0, 5, size=60)
    data = tmp / "data.npz"
    if not data.exists():
        np.savez(data, data=images.transpose(0, 3, 1, 2).reshape(60, -1), labels=labels)
    cfg = config_from_dict(
        {
            "model": {"name": "module"},
            "layer": "3",
            "device": "cpu",
            "dataset": {"type": "npz", "path": str(data), "image_size": 12},
            "label_mapping": {"type": "identity"},
            "activations": {"batch_size": 16, "top_k": 2},
            "importance": {"method": method, "k": 2, "chunk_size": 4, "batch_size": 16},
        }
    )
    ctx = RunContext.create(cfg, tmp / f"run_{method}_{tie}")
    ctx.__dict__["model"] = ModuleAdapter(_net(tie), input_size=12, mean=(0.5,) * 3, std=(0.25,) * 3)
    run_activations(ctx)
    table = run_importance(ctx)
    with table.open() as fh:
        counts = {
            int(r["feature_ind"]): (int(r["importance"]), int(r["correct_to_wrong"]), int(r["wrong_to_correct"]))
            for r in csv.DictReader(fh)
        }
    return counts, json.loads((table.parent / "summary.json").read_text())[method]


def test_affine_path_matches_naive_full_forwards(tmp_path: Path) -> None:
    for tie in (False, True):
        exact, summary = _run(tmp_path, "exact", tie)
        naive, _ = _run(tmp_path, "naive", tie)
        assert exact == naive
        assert sum(v[1] + v[2] for v in naive.values()) > 0  # the planted world does flip some images
        assert summary["path"] == "affine"
        if tie:
            assert summary["boundary_fallbacks"] > 0  # the planted ties went to the real tail


def test_non_affine_tail_is_detected() -> None:
    torch.manual_seed(0)
    tail = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    assert affine_jacobian(tail, torch.rand(3, 4, 5, 5)) is None
    lin = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    jac = affine_jacobian(lin, torch.rand(3, 4, 5, 5))
    assert jac is not None and jac.shape == (4, 25, 3)
    torch.testing.assert_close(jac[:, 0, :], lin[2].weight.T / 25)


def test_a_non_affine_tail_is_rejected_before_any_jacobian_is_built(monkeypatch) -> None:
    """The second-difference probe (three tail passes) rejects a non-affine tail, so the Jacobian — outputs x C*H*W
    numbers, 10 GB for a ViT block's tail — is never built; an affine tail still gets it."""
    calls: list[int] = []
    real = torch.autograd.functional.jacobian

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.autograd.functional, "jacobian", counting)
    torch.manual_seed(0)
    x = torch.randn(4, 6, 3, 3)
    curved = nn.Sequential(nn.Conv2d(6, 6, 1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    assert affine_jacobian(curved.eval(), x) is None and calls == []
    linear = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()
    jac = affine_jacobian(linear, x)
    assert jac is not None and jac.shape == (6, 9, 5) and calls == [1]
