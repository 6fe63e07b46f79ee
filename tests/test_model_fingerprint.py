"""Same model, same numbers: random initialisation is seeded from the config, and no stage combines an
activation cache with a model whose weights differ from those that made it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.config import config_from_dict
from autointerp.errors import UserError
from autointerp.models.fingerprint import weights_fingerprint
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(data: Path, seed: int = 0):
    return config_from_dict(
        {
            "seed": seed,
            "model": {"name": "torchvision", "pretrained": False, "options": {"arch": "resnet18"}},
            "layer": "layer4",
            "device": "cpu",
            "dataset": {"type": "npz", "path": str(data), "image_size": 64},
            "label_mapping": {"type": "identity"},
            "activations": {"batch_size": 4, "top_k": 2, "bottom_k": 2, "accuracy_k": [1]},
        }
    )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, data=rng.integers(0, 256, (6, 3 * 32 * 32), dtype=np.uint8), labels=np.arange(6))
    return path


def test_fingerprint_sees_every_weight_and_buffer():
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    b = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b[1].running_mean[2] += 1e-6  # a buffer, not a parameter
    assert weights_fingerprint(a) != weights_fingerprint(b)


def test_random_init_is_seeded_by_the_config_and_leaves_the_global_rng_alone(data: Path, tmp_path: Path):
    prints = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        torch.manual_seed(1234)
        before = torch.rand(1)
        torch.manual_seed(1234)
        ctx = RunContext.create(_config(data, seed), tmp_path / name)
        prints.append(ctx.model_fingerprint)
        assert torch.rand(1) == before  # building the model did not move the caller's random stream
    assert prints[0] == prints[1], "two processes of one run must build the same random-init network"
    assert prints[0] != prints[2]


def test_a_cache_made_with_other_weights_is_refused(data: Path, tmp_path: Path):
    ctx = RunContext.create(_config(data), tmp_path / "run")
    run_activations(ctx)
    meta = json.loads((ctx.paths.activations / "meta.json").read_text())
    assert meta["model_fingerprint"] == ctx.model_fingerprint
    assert RunContext.open(tmp_path / "run").model is not None  # same weights: accepted
    other = RunContext.open(tmp_path / "run", ["seed=1"])  # same architecture, other random weights
    with pytest.raises(UserError, match=r"activation cache was made with other model weights.*--overwrite"):
        _ = other.model
    run_activations(other, overwrite=True)  # remaking the cache is how to switch weights
    assert other.model is not None


class _WithExtraState(torch.nn.Module):
    """A module whose state dict holds a non-tensor entry (``get_extra_state``), as e.g. TransformerEngine's."""

    def __init__(self, version: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)
        self.version = version

    def get_extra_state(self) -> dict:
        return {"version": self.version, "scale": torch.tensor([0.5])}

    def set_extra_state(self, state: dict) -> None:
        self.version = state["version"]


def _reference_fingerprint(module: torch.nn.Module) -> str:
    """The documented scheme written independently: SHA-256 over name|dtype|shape| and the values' bytes."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def test_fingerprints_of_ordinary_weights_are_unchanged():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    assert weights_fingerprint(model) == _reference_fingerprint(model)  # caches recorded earlier stay valid


def test_non_tensor_extra_state_is_fingerprinted_not_a_crash():
    a, b = _WithExtraState(1), _WithExtraState(2)
    b.lin.load_state_dict(a.lin.state_dict())
    fa = weights_fingerprint(a)
    assert fa == weights_fingerprint(a)
    assert fa != weights_fingerprint(b)  # the extra state's content counts


def test_dtypes_numpy_lacks_are_fingerprinted():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8 dtype")
    a = torch.nn.Linear(4, 4).to(torch.float8_e4m3fn)
    b = torch.nn.Linear(4, 4).to(torch.float8_e4m3fn)
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b.weight.view(torch.uint8)[0, 0] ^= 1  # one bit of one weight
    assert weights_fingerprint(a) != weights_fingerprint(b)


def test_lazy_modules_before_their_first_forward():
    assert weights_fingerprint(torch.nn.LazyLinear(3)) == weights_fingerprint(torch.nn.LazyLinear(3))


def test_building_the_model_leaves_the_cuda_generators_alone(data: Path, tmp_path: Path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    ctx = RunContext.create(_config(data, seed=3), tmp_path / "run")
    _ = ctx.model_fingerprint
    assert calls == []  # fork_rng(devices=[]) restores the CPU generator only: the CUDA ones must not be reseeded


def test_a_computation_choice_the_weights_do_not_show_changes_the_fingerprint() -> None:
    from autointerp.models import create_model
    from autointerp.models.fingerprint import weights_fingerprint

    lucid = create_model("inceptionv1", pretrained=False, lrn="lucid")
    lucent = create_model("inceptionv1", pretrained=False, lrn="lucent")
    lucent.module.load_state_dict(lucid.module.state_dict())  # the same weights
    assert weights_fingerprint(lucid.module) == weights_fingerprint(lucent.module)
    assert weights_fingerprint(lucid.module, lucid.fingerprint_extra) != weights_fingerprint(
        lucent.module, lucent.fingerprint_extra
    )
    assert weights_fingerprint(lucid.module, "") == weights_fingerprint(lucid.module)  # other models: unchanged
