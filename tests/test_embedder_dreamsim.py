"""The ``dreamsim`` embedder: offline errors, and the embedding contract with a fake DreamSim model
(the real package and its weights are not needed; nothing is downloaded).

The fake stands in for ``dreamsim.dreamsim``: like the package it points ``torch.hub`` at its cache
folder, returns a model whose ``embed`` centres and normalises its vectors and whose call gives the
DreamSim distance ``1 − cos``. The embedder must hand the model 224 × 224 images in [0, 1] and return
unit vectors whose cosine is ``1 −`` that distance.
"""

from __future__ import annotations

import sys
import time
import types
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from autointerp.embedders import create_embedder
from autointerp.embedders.dreamsim import CHECKPOINT_FILES, DreamSimEmbedder, required_files
from autointerp.errors import ConfigError, UserError, WeightsError


class FakeDreamSim(torch.nn.Module):
    """A tiny 'perceptual model': a fixed random projection of pooled colour statistics."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(12, 24, generator=g)
        self.seen: list[tuple[tuple[int, ...], float, float]] = []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((tuple(x.shape), float(x.min()), float(x.max())))
        stats = torch.cat(
            [x.mean((2, 3)), x.std((2, 3)), x[:, :, :112].mean((2, 3)), x[:, :, :, :112].mean((2, 3))], dim=1
        )
        e = stats @ self.proj
        e = e - e.mean(dim=1, keepdim=True)  # the package's normalize_embeds: centre, then unit length
        return e / e.norm(dim=1, keepdim=True)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - torch.nn.functional.cosine_similarity(self.embed(a), self.embed(b), dim=-1)


@pytest.fixture
def fake_package(monkeypatch):
    """Install a fake ``dreamsim`` module; returns the record of its calls."""
    record: dict = {"calls": [], "model": None}

    def dreamsim(
        pretrained=True,
        device="cuda",
        cache_dir="./models",
        normalize_embeds=True,
        dreamsim_type="ensemble",
        use_patch_model=False,
    ):
        torch.hub.set_dir(cache_dir)  # as the real package does
        record["calls"].append(
            {
                "pretrained": pretrained,
                "device": device,
                "cache_dir": cache_dir,
                "normalize_embeds": normalize_embeds,
                "dreamsim_type": dreamsim_type,
            }
        )
        if record.get("fail"):
            raise RuntimeError(record["fail"])
        record["model"] = FakeDreamSim()
        return record["model"], None

    module = types.ModuleType("dreamsim")
    module.dreamsim = dreamsim
    monkeypatch.setitem(sys.modules, "dreamsim", module)
    monkeypatch.delenv("AUTOINTERP_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TORCH_HUB_OFFLINE", raising=False)
    return record


def weights_folder(root, dreamsim_type="ensemble"):
    """A folder with every file loading needs (contents are the fake's business)."""
    for rel in required_files(dreamsim_type):
        path = root / rel
        if rel.endswith("_lora"):
            path.mkdir(parents=True, exist_ok=True)
            (path / "adapter_config.json").write_text("{}")
            (path / "adapter_model.bin").write_bytes(b"lora weights " + dreamsim_type.encode())
        elif "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        else:  # a torch hub repository
            path.mkdir(parents=True, exist_ok=True)
            (path / "hubconf.py").write_text("dependencies = []\n")
    return root


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (rng.integers(20, 90), rng.integers(20, 90), 3), dtype=np.uint8) for _ in range(n)]


def test_embeddings_are_unit_vectors_whose_cosine_is_one_minus_the_dreamsim_distance(fake_package, tmp_path):
    hub_before = torch.hub.get_dir()
    emb = create_embedder(
        {"type": "dreamsim", "weights": str(weights_folder(tmp_path / "w")), "device": "cpu", "batch_size": 3}
    )
    assert isinstance(emb, DreamSimEmbedder)
    assert torch.hub.get_dir() == hub_before  # the package's hub redirection is undone
    call = fake_package["calls"][0]
    assert call == {
        "pretrained": True,
        "device": "cpu",
        "cache_dir": str(tmp_path / "w"),
        "normalize_embeds": True,
        "dreamsim_type": "ensemble",
    }
    imgs = images(7)
    z = emb.embed(imgs)
    assert z.dtype == np.float32 and z.shape == (7, 24)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
    model = fake_package["model"]
    assert all(shape[1:] == (3, 224, 224) and lo >= 0.0 and hi <= 1.0 for shape, lo, hi in model.seen)
    assert [shape[0] for shape, _, _ in model.seen] == [3, 3, 1]  # batch_size honoured

    def package_tensor(img):  # the package's own preprocessing: PIL bicubic resize to 224, ToTensor
        pil = Image.fromarray(img).resize((224, 224), Image.BICUBIC)
        return torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

    for i, j in ((0, 1), (2, 5), (3, 3)):
        distance = float(model(package_tensor(imgs[i]), package_tensor(imgs[j])))
        assert 1.0 - float(z[i] @ z[j]) == pytest.approx(distance, abs=1e-5)
    assert emb.id.startswith("dreamsim:ensemble:") and emb.id.endswith(":224")


def test_the_id_changes_with_the_weights(fake_package, tmp_path):
    a = DreamSimEmbedder(weights=str(weights_folder(tmp_path / "a")), device="cpu")
    b_folder = weights_folder(tmp_path / "b")
    (b_folder / "ensemble_lora" / "adapter_model.bin").write_bytes(b"other lora weights")
    b = DreamSimEmbedder(weights=str(b_folder), device="cpu")
    c = DreamSimEmbedder(
        dreamsim_type="dino_vitb16", weights=str(weights_folder(tmp_path / "c", "dino_vitb16")), device="cpu"
    )
    assert len({a.id, b.id, c.id}) == 3 and c.id.startswith("dreamsim:dino_vitb16:")


@pytest.mark.parametrize("variable", ["AUTOINTERP_OFFLINE", "HF_HUB_OFFLINE", "TORCH_HUB_OFFLINE"])
def test_offline_without_weights_fails_at_once_in_one_line(fake_package, tmp_path, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        DreamSimEmbedder(weights=str(tmp_path / "empty"), device="cpu")
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert "\n" not in msg and f"{variable} is set" in msg and "dino_vitb16_pretrain.pth is missing" in msg
    assert "github.com/ssundaram21/dreamsim/releases" in msg and "rate.embedder.weights" in msg
    assert fake_package["calls"] == []  # the package was never asked to download


def test_unreachable_network_without_weights_fails_in_one_line(fake_package, tmp_path, monkeypatch):
    import autointerp.embedders.dreamsim as module

    probed: list[str] = []
    monkeypatch.setattr(module, "network_reachable", lambda host: probed.append(host) or False)
    with pytest.raises(WeightsError, match="is missing .* and github.com is unreachable; download"):
        DreamSimEmbedder(weights=str(tmp_path / "empty"), device="cpu")
    assert probed == ["github.com"] and fake_package["calls"] == []


def test_offline_with_weights_loads(fake_package, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_OFFLINE", "1")
    emb = DreamSimEmbedder(weights=str(weights_folder(tmp_path / "w")), device="cpu")
    assert emb.embed(images(2)).shape == (2, 24)


def test_a_release_zip_is_unpacked_into_the_cache(fake_package, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOINTERP_OFFLINE", "1")
    src = weights_folder(tmp_path / "src")
    archive = tmp_path / "dreamsim_ensemble_checkpoint.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src).as_posix())
    DreamSimEmbedder(weights=str(archive), device="cpu")
    target = tmp_path / "cache" / "dreamsim" / "ensemble"
    assert fake_package["calls"][0]["cache_dir"] == str(target)
    assert all((target / f).exists() for f in CHECKPOINT_FILES["ensemble"])
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    import shutil

    shutil.rmtree(target)
    with pytest.raises(WeightsError, match="bad.zip: not a zip archive"):
        DreamSimEmbedder(weights=str(tmp_path / "bad.zip"), device="cpu")


def test_loader_failures_and_bad_config_are_one_line_errors(fake_package, tmp_path, monkeypatch):
    fake_package["fail"] = "Error(s) in loading state_dict for PerceptualModel:\n\tMissing key(s) ..."
    with pytest.raises(WeightsError) as info:
        DreamSimEmbedder(weights=str(weights_folder(tmp_path / "w")), device="cpu")
    assert "\n" not in str(info.value) and "DreamSim ensemble" in str(info.value)
    with pytest.raises(ConfigError, match="dreamsim_type: 'vit_huge' is unknown; expected one of ensemble"):
        DreamSimEmbedder(dreamsim_type="vit_huge")
    with pytest.raises(ConfigError, match="unknown key 'model' for type 'dreamsim'"):
        create_embedder({"type": "dreamsim", "model": "x"})
    with pytest.raises(WeightsError, match="checkpoint archive .*missing.zip not found"):
        DreamSimEmbedder(weights=str(tmp_path / "missing.zip"))
    monkeypatch.setitem(sys.modules, "dreamsim", None)  # the package is not installed
    with pytest.raises(UserError, match=r"needs the \[dreamsim\] extra: pip install 'autointerp\[dreamsim\]'") as info:
        DreamSimEmbedder()
    assert "\n" not in str(info.value)


def test_mis_with_the_dreamsim_embedder_uses_the_published_alpha(fake_package, tmp_path):
    """End to end on a planted world: the rater reads the DreamSim embeddings (cosine = 1 − distance)."""
    from rater_harness import make_world

    from autointerp.rating import create_rater

    world = make_world(tmp_path / "world", n_features=3, n_images=120)
    emb = DreamSimEmbedder(weights=str(weights_folder(tmp_path / "w")), device="cpu")
    table = create_rater("mis", n_null=20).score(world.context(embedder=emb, cache=False), world.features)
    assert table.meta["alpha"] == 0.16 and "dreamsim:ensemble" in table.meta["similarity"]
    assert np.isfinite(table.I).all()
