"""Model adapters: registry, InceptionV1 (random init of the real architecture), torchvision/timm,
any nn.Module; head∘tail equals the full network; weights loading and offline errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from autointerp.errors import UserError, WeightsError
from autointerp.models import create_model, list_models
from autointerp.models.generic import ModuleAdapter


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return create_model("inceptionv1", pretrained=False)


def test_registry_lists_builtins_and_rejects_unknown() -> None:
    names = list_models()
    assert {"inceptionv1", "torchvision", "timm", "module"} <= set(names)
    with pytest.raises(UserError, match="unknown model 'nope'; valid: .*inceptionv1"):
        create_model("nope")


def test_inceptionv1_layers_outputs_and_preprocessing(inception) -> None:
    assert inception.layers()["mixed5a"] == 832
    assert inception.num_outputs == 1008
    valid = inception.valid_outputs
    assert not valid[0] and valid[1:1001].all() and not valid[1001:].any()
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(inception.preprocess(x), x * 255 - 117)
    with pytest.raises(UserError, match=r"unknown layer 'mixed9'.*mixed5a \(832\)"):
        inception.check_layer("mixed9")
    with pytest.raises(UserError, match="channel index 832 out of range"):
        inception.check_channels("mixed5a", [0, 832])


def test_inceptionv1_head_tail_equal_full_network(inception) -> None:
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        act = inception.head("mixed5a")(x)
        logits = inception.tail("mixed5a")(act)
        probs = inception.module(inception.preprocess(x))  # lucent returns softmax probabilities
    assert act.shape == (2, 832, 7, 7)
    assert logits.shape == (2, 1008)
    torch.testing.assert_close(torch.softmax(logits, dim=1), probs, rtol=1e-4, atol=1e-6)


def test_inceptionv1_head_keeps_gradients(inception) -> None:
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    inception.head("mixed4a")(x)[:, 3].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_inceptionv1_weights_local_file_corrupt_and_offline(tmp_path: Path, monkeypatch, inception) -> None:
    path = tmp_path / "inception5h.pth"
    torch.save(inception.module.state_dict(), path)
    again = create_model("inceptionv1", weights=str(path))
    torch.testing.assert_close(
        again.module.mixed5a_1x1_pre_relu_conv.weight, inception.module.mixed5a_1x1_pre_relu_conv.weight
    )
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a valid InceptionV1"):
        create_model("inceptionv1", weights=str(path))
    with pytest.raises(WeightsError, match="weights file not found"):
        create_model("inceptionv1", weights=str(tmp_path / "missing.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("AUTOINTERP_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        create_model("inceptionv1")
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "inception5h.pth" in msg and "model.weights" in msg and "\n" not in msg


def test_torchvision_and_timm_random_init_split(monkeypatch) -> None:
    tv = create_model("torchvision", pretrained=False, arch="resnet18")
    assert tv.layers()["layer3"] == 256
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(tv.tail("layer3")(tv.head("layer3")(x)), tv.forward(x))
    with pytest.raises(UserError, match="unknown layer 'layer3.0.conv1'"):
        tv.tail("layer3.0.conv1")
    with pytest.raises(UserError, match="unknown torchvision model 'resnet9000'"):
        create_model("torchvision", pretrained=False, arch="resnet9000")
    tm = create_model("timm", pretrained=False, arch="resnet18")
    with torch.no_grad():
        torch.testing.assert_close(tm.tail("layer2")(tm.head("layer2")(x)), tm.forward(x))
    monkeypatch.setenv("AUTOINTERP_OFFLINE", "1")
    with pytest.raises(WeightsError, match="offline"):
        create_model("timm", pretrained=True, arch="resnet18")


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = h + torch.relu(self.b(h))  # skip connection around b
        return self.fc(h.mean(dim=(2, 3)))


def test_any_module_clean_cut_and_skip_connection_error() -> None:
    adapter = ModuleAdapter(_Residual(), input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    assert adapter.num_outputs == 5
    assert adapter.layers() == {"a": 4, "b": 4}
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapter.tail("a")(adapter.head("a")(x)), adapter.forward(x))
    with pytest.raises(UserError, match="'b' is not a clean cut point"):
        adapter.tail("b")


def test_module_factory_from_config() -> None:
    adapter = create_model("module", factory="torchvision.models:resnet18", input_size=32)
    assert adapter.num_outputs == 1000 and "layer4" in adapter.layers()
    with pytest.raises(UserError, match="factory"):
        create_model("module")


def test_layer_module_by_name_or_unique_dotted_suffix() -> None:
    from torch import nn

    from autointerp.models.generic import ModuleAdapter

    inner = nn.Sequential()
    inner.add_module("conv", nn.Conv2d(3, 4, 1))
    net = nn.Sequential()
    net.add_module("body", inner)
    net.add_module("head", nn.Sequential(nn.Conv2d(4, 4, 1)))
    net.head.add_module("conv", nn.Conv2d(4, 4, 1))
    adapter = ModuleAdapter(net, input_size=8)
    assert adapter.layer_module("body") is inner
    assert adapter.layer_module("body.conv") is inner.conv
    assert adapter.layer_module("conv") is None  # body.conv and head.conv: ambiguous
    assert adapter.layer_module("0") is net.head[0]
    assert adapter.layer_module("missing") is None


def test_inceptionv1_with_lucids_lrn_pickles_into_a_fresh_process(tmp_path) -> None:
    """Worker processes get the module by pickle: the LRN-corrected class must be found by name there."""
    import pickle
    import subprocess
    import sys

    import torch

    from autointerp.models import create_model

    adapter = create_model("inceptionv1", pretrained=False)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        expected = adapter.module(adapter.preprocess(x))
    (tmp_path / "m.pkl").write_bytes(pickle.dumps((adapter.module, x)))
    code = (
        "import pickle, sys, torch; m, x = pickle.load(open(sys.argv[1], 'rb')); "
        "torch.save(m(x * 255 - 117).detach(), sys.argv[2]); print(type(m).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.pkl"), str(tmp_path / "y.pt")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-1000:]
    assert out.stdout.strip() == "LucidLRNInceptionV1"
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)
