"""The activation pass on a small real model and planted data: statistics equal a direct
computation, crash + resume gives identical files, bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autointerp.config import config_from_dict
from autointerp.errors import UserError
from autointerp.models.generic import ModuleAdapter
from autointerp.runfolder import RunContext
from autointerp.stages import activations as act_stage


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 4),
    ).eval()


@pytest.fixture()
def world(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(37, 12, 12, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=37)
    np.savez(tmp_path / "data.npz", data=images.transpose(0, 3, 1, 2).reshape(37, -1), labels=labels)
    return tmp_path, images, labels


def _ctx(root: Path, data: Path, **acts: object) -> RunContext:
    cfg = config_from_dict(
        {
            "model": {"name": "module"},
            "layer": "2",
            "device": "cpu",
            "dataset": {"type": "npz", "path": str(data), "image_size": 16},
            "label_mapping": {"type": "identity"},
            "activations": {"batch_size": 4, "top_k": 3, "bottom_k": 2, "accuracy_k": [1, 2], **acts},
        }
    )
    ctx = RunContext.create(cfg, root)
    ctx.__dict__["model"] = ModuleAdapter(_tiny_cnn(), input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    return ctx


def test_statistics_match_direct_computation(world) -> None:
    tmp, images, labels = world
    ctx = _ctx(tmp / "run", tmp / "data.npz")
    out = act_stage.run_activations(ctx)
    model = ctx.model
    x = ctx.dataset.batch(range(37), 16)
    with torch.no_grad():
        ref = model.head("2")(x).numpy()
        logits = model.forward(x)
    acts = np.load(out / "acts.npy", mmap_mode="r")
    np.testing.assert_allclose(acts, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(out / "mean.npy"), ref.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(np.load(out / "mean_position.npy"), ref.mean(axis=0), rtol=1e-5, atol=1e-7)
    scores = ref.max(axis=(2, 3))
    np.testing.assert_allclose(np.load(out / "scores.npy"), scores, rtol=1e-6)
    topk = np.load(out / "topk.npz")
    for c in range(5):
        np.testing.assert_array_equal(topk["top_idx"][c], np.argsort(-scores[:, c], kind="stable")[:3])
        np.testing.assert_array_equal(topk["bottom_idx"][c], np.argsort(scores[:, c], kind="stable")[:2])
    assert (np.diff(topk["top_val"], axis=1) <= 0).all()
    meta = json.loads((out / "meta.json").read_text())
    rank = (-logits.numpy()).argsort(axis=1)
    assert meta["correct"]["top1"] == int((rank[:, 0] == labels).sum())
    assert meta["correct"]["top2"] == int((rank[:, :2] == labels[:, None]).any(axis=1).sum())
    assert meta["channels"] == 5 and meta["spatial"] == [8, 8] and meta["n_images"] == 37
    np.testing.assert_array_equal(np.load(out / "labels.npy"), labels)


def test_skip_when_done_and_overwrite(world) -> None:
    tmp, _, _ = world
    ctx = _ctx(tmp / "run", tmp / "data.npz")
    out = act_stage.run_activations(ctx)
    stamp = (out / "meta.json").stat().st_mtime_ns
    act_stage.run_activations(ctx)
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    act_stage.run_activations(ctx, overwrite=True)
    assert (out / "meta.json").stat().st_mtime_ns != stamp


def test_crash_then_resume_gives_identical_files(world, monkeypatch) -> None:
    tmp, _, _ = world
    shards = {"dtype": "float16", "shard_images": 8}  # 2 batches a shard: a checkpoint every 2 batches
    clean = act_stage.run_activations(_ctx(tmp / "clean", tmp / "data.npz", **shards))

    ctx = _ctx(tmp / "crashy", tmp / "data.npz", **shards)
    real_batch = type(ctx.dataset).batch
    calls = {"n": 0}

    def flaky(self, indices, size):
        calls["n"] += 1
        if calls["n"] == 7:  # after the checkpoints at batches 2, 4 and 6 (the probe is call 1)
            raise RuntimeError("simulated crash")
        return real_batch(self, indices, size)

    monkeypatch.setattr(type(ctx.dataset), "batch", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        act_stage.run_activations(ctx)
    assert not (ctx.paths.activations / "meta.json").exists()  # nothing that looks complete
    done = int(np.load(tmp / "crashy/activations.partial/checkpoint.npz")["done"])
    assert 0 < done < 37
    monkeypatch.setattr(type(ctx.dataset), "batch", real_batch)
    resumed = act_stage.run_activations(ctx)
    for name in ("acts.npy", "scores.npy", "mean.npy", "mean_position.npy", "topk.npz", "labels.npy"):
        assert (clean / name).read_bytes() == (resumed / name).read_bytes(), name
    assert not (tmp / "crashy/activations.partial").exists()


def test_k_larger_than_dataset_and_bad_layer(world) -> None:
    tmp, _, _ = world
    ctx = _ctx(tmp / "run", tmp / "data.npz", top_k=50)
    with pytest.raises(UserError, match="'activations.top_k' = 50 is larger than the dataset \\(37 images\\)"):
        act_stage.run_activations(ctx)
    with pytest.raises(UserError, match="unknown layer 'nope'"):
        ctx.model.head("nope")


def test_run_folder_refuses_a_different_model(world) -> None:
    tmp, _, _ = world
    _ctx(tmp / "run", tmp / "data.npz")
    cfg = config_from_dict({"model": {"name": "inceptionv1"}, "dataset": {"type": "npz", "path": "x.npz"}})
    with pytest.raises(UserError, match="different model/layer/dataset"):
        RunContext.create(cfg, tmp / "run")


def test_real_inceptionv1_on_shared_images(shared_dir: Path, tmp_path: Path) -> None:
    """The real target config with random-init weights on a few real images (64 -> 224)."""
    from autointerp.config import load_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(
        repo / "configs/inceptionv1_mixed5a.yaml",
        [
            "model.pretrained=false",
            f"dataset.path={shared_dir / 'data/imagenet_sample_64.npz'}",
            "dataset.max_images=10",
            f"label_mapping.map_clsloc={shared_dir / 'reference/imagenet/map_clsloc.txt'}",
            "activations.batch_size=3",
            "activations.bottom_k=2",
            "device=cpu",
        ],
    )
    torch.manual_seed(0)
    ctx = RunContext.create(cfg, tmp_path / "run")
    out = act_stage.run_activations(ctx)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["channels"] == 832 and meta["spatial"] == [7, 7] and meta["image_size"] == 224
    acts = np.load(out / "acts.npy", mmap_mode="r")
    assert acts.dtype == np.float16 and acts.shape == (10, 832, 7, 7)
    np.testing.assert_array_equal(np.load(out / "labels.npy"), ctx.dataset.labels)  # devkit id i = output i
    x = ctx.dataset.batch([4], 224)
    with torch.no_grad():
        ref = ctx.model.head("mixed5a")(x).numpy()
    np.testing.assert_allclose(acts[4].astype(np.float32), ref[0], rtol=2e-3, atol=2e-3)


def test_real_inceptionv1_config_importance_stage_uses_rank1_path_and_equals_naive(
    shared_dir: Path, tmp_path: Path
) -> None:
    """The study config end to end through the importance stage (rank-1 path, compiled core) = naive."""
    import csv

    from autointerp.config import load_config
    from autointerp.stages.importance import run_importance

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs/inceptionv1_mixed5a.yaml", [
        "model.pretrained=false", f"dataset.path={shared_dir / 'data/imagenet_sample_64.npz'}",
        "dataset.max_images=8", f"label_mapping.map_clsloc={shared_dir / 'reference/imagenet/map_clsloc.txt'}",
        "activations.batch_size=3", "device=cpu",
    ])  # fmt: skip
    from autointerp.importance.fastpaths.inceptionv1.synthetic import rescaled_inceptionv1

    torch.manual_seed(0)
    ctx = RunContext.create(cfg, tmp_path / "run")
    # trained-like activation and logit scales (default init gives near-constant logits: nothing flips)
    ctx.model.module.load_state_dict(rescaled_inceptionv1(seed=0).state_dict())
    act_stage.run_activations(ctx)
    # plant known answers: pick an image and a k that put it at its top-k boundary (k = its true class's
    # rank, or rank + 1) such that some channels' mean ablations flip it (found with the reference tail)
    from autointerp.importance.fastpaths.inceptionv1.path import reference_tail
    from autointerp.importance.topk import topk_correct

    module, valid = ctx.model.module, ctx.model.valid_outputs.bool()
    all_acts = torch.from_numpy(np.load(ctx.paths.activations / "acts.npy").astype(np.float32))
    mean = torch.from_numpy(np.load(ctx.paths.activations / "mean.npy").astype(np.float32))
    labels = torch.as_tensor(np.load(ctx.paths.activations / "labels.npy").astype(np.int64))
    flips = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        for i in range(len(all_acts)):
            z = reference_tail(module, all_acts[i : i + 1])[0].masked_fill(~valid, float("-inf"))
            rank = int((z > z[labels[i]]).sum())
            ablated = all_acts[i : i + 1].repeat(832, 1, 1, 1)
            ablated[torch.arange(832), torch.arange(832)] = mean[:, None, None]
            za = reference_tail(module, ablated)
            for k in (rank, rank + 1):
                if k >= 1:
                    flips = torch.nonzero(topk_correct(za, labels[i].expand(832), k, valid) != (rank < k))[:, 0]
                if len(flips):
                    break
            if len(flips):
                break
    assert len(flips) > 0, "no image/k with a flipping channel: the planted case needs another seed"
    planted = sorted({*flips[:3].tolist(), 0, 411, 831})
    ctx.config.importance.k = k
    ctx.config.importance.features = planted
    run_importance(ctx)
    run_importance(ctx, method="naive")
    summary = json.loads((ctx.paths.importance / "summary.json").read_text())
    assert summary["exact"]["path"] == "inception_mixed5a_rank1"
    tiers = summary["exact"]["pairs_by_tier"]
    assert set(tiers) >= {"tier2", "int8", "sparse", "exact"} and all(v >= 0 for v in tiers.values())
    assert sum(tiers[t] for t in ("tier2", "int8", "sparse", "exact")) > 0
    # which of the int8 / sparse tiers ran here, and why, is in the summary (by default the int8
    # tier where it is faster, the sparse tier elsewhere)
    assert summary["exact"]["int8_tier"].startswith(("on", "off"))
    assert summary["exact"]["sparse_tier"] == ("off" if summary["exact"]["int8_tier"].startswith("on") else "on")
    assert "folded_tier" not in summary["exact"]
    # whether the C loops ran: on wherever a C compiler builds them (fastpaths.inceptionv1.native)
    from autointerp.importance.fastpaths.inceptionv1.native import kernels

    assert summary["exact"]["native_loops"] == ("on" if kernels() is not None else "off")

    def counts(name: str) -> list[tuple[str, str, str]]:
        with open(ctx.paths.importance / name, newline="") as fh:
            return [(r["feature_ind"], r["correct_to_wrong"], r["wrong_to_correct"]) for r in csv.DictReader(fh)]

    assert counts("importance_exact.csv") == counts("importance_naive.csv")
    assert [int(f) for f, _, _ in counts("importance_exact.csv")] == planted
    flipped = {int(f) for f, c2w, w2c in counts("importance_naive.csv") if int(c2w) + int(w2c) > 0}
    assert set(flips[:3].tolist()) <= flipped


def test_an_image_size_the_model_cannot_take_is_a_one_line_error(world) -> None:
    tmp, _, _ = world
    ctx = _ctx(tmp / "run", tmp / "data.npz")
    torch.manual_seed(0)
    fixed = nn.Sequential(
        nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1), nn.Flatten(), nn.Linear(2048, 4)
    ).eval()  # the classifier takes 32x32 maps only
    adapter = ModuleAdapter(fixed, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    ctx.__dict__["model"] = ctx.__dict__["unchecked_model"] = adapter
    with pytest.raises(UserError, match=r"'dataset.image_size' = 16: .* built for 32x32") as info:
        act_stage.run_activations(ctx)
    assert "\n" not in str(info.value)
    assert not ctx.paths.activations.exists()
