"""The real Coral TFLite models converted to torch, checked against LiteRT's interpreter on real images.

Skipped without ``../shared``. The full 1000-image figures come from ``benchmarks/tflite_parity.py``;
here an evenly spaced subset keeps the file fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.models.base import create_model
from autointerp.models.tflite import TFLiteAdapter, run_tflite_interpreter

REPO = Path(__file__).resolve().parents[1]
N_PARITY = 100  # images, one every ~10 classes


@pytest.fixture(scope="module")
def coral(shared_dir: Path) -> dict:
    from autointerp.data.imagefolder import ImageFolderDataset

    model = shared_dir / "models/coral/mobilenet_v2_1.0_224_quant.tflite"
    adapter = create_model("tflite", weights=str(model))
    ds = ImageFolderDataset(shared_dir / "data/imagenet_sample_224")
    idx = np.linspace(0, len(ds) - 1, N_PARITY).round().astype(int)
    images = np.stack(ds.images(idx))
    x01 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        logits = torch.cat([adapter.forward(x01[i : i + 40]) for i in range(0, len(x01), 40)]).numpy()
    probs = run_tflite_interpreter(model, images, num_threads=2, show_progress=False)
    return {
        "adapter": adapter,
        "images": images,
        "x01": x01,
        "targets": ds.labels[idx] + 1,  # sorted-wnid position + 1; output 0 = background
        "logits": logits,
        "probs": probs,
        "model": model,
    }


def _top1(scores: np.ndarray) -> np.ndarray:
    s = scores.astype(np.float64).copy()
    s[:, 0] = -np.inf
    return s.argmax(1)


def test_coral_adapter_shape(coral: dict) -> None:
    adapter: TFLiteAdapter = coral["adapter"]
    assert isinstance(adapter, TFLiteAdapter)
    assert adapter.num_outputs == 1001 and adapter.input_size == 224
    assert not bool(adapter.valid_outputs[0]) and bool(adapter.valid_outputs[1:].all())
    layers = adapter.layers()
    assert layers["Conv_1"] == 1280 and layers["expanded_conv_16_project"] == 320 and layers["Conv"] == 32
    assert adapter.layer_shapes()["Conv_1"] == (1280, 7, 7)
    # residual blocks: the block output (…_add) is a cut point, the projection inside it is not
    cuts = adapter.cut_layers()
    assert {"Conv_1", "expanded_conv_15_add", "expanded_conv_16_expand"} <= set(cuts)
    assert "expanded_conv_15_project" not in cuts and "expanded_conv_15_expand" not in cuts
    # ops by TFLite kind: the graph the Coral README documents (36 CONV_2D incl. the classifier, 17 DW, 10 ADD)
    kinds = [m.kind for _, m in adapter.net.named_children()]
    assert (kinds.count("CONV_2D"), kinds.count("DEPTHWISE_CONV_2D"), kinds.count("ADD")) == (36, 17, 10)


def test_parity_with_interpreter(coral: dict) -> None:
    torch_pred, tfl_pred = _top1(coral["logits"]), _top1(coral["probs"])
    agreement = float((torch_pred == tfl_pred).mean())
    assert agreement >= 0.95, agreement
    # both are real ImageNet classifiers on these centre crops (README: 0.878 top-1 through LiteRT)
    targets = coral["targets"]
    assert float((tfl_pred == targets).mean()) >= 0.8
    assert float((torch_pred == targets).mean()) >= 0.8
    # the probabilities themselves agree closely, not only the argmax
    p_torch = torch.softmax(torch.from_numpy(coral["logits"]), 1).numpy()
    assert np.abs(p_torch - coral["probs"]).max(1).mean() < 0.03


def test_layer_activation_matches_interpreter(coral: dict) -> None:
    adapter: TFLiteAdapter = coral["adapter"]
    images = coral["images"][:6]
    for layer in ("expanded_conv_3_project", "Conv_1"):
        ref = adapter.run_interpreter(images, layer=layer, num_threads=2, show_progress=False)
        with torch.no_grad():
            got = adapter.head(layer)(coral["x01"][:6]).numpy()
        assert got.shape == ref.shape == (6, *adapter.layer_shapes()[layer])
        r = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
        assert r > 0.98, (layer, r)


def test_head_tail_split_equals_forward(coral: dict) -> None:
    adapter: TFLiteAdapter = coral["adapter"]
    x = coral["x01"][:2]
    with torch.no_grad():
        full = adapter.forward(x)
        for layer in ("Conv_1", "expanded_conv_12_add"):
            torch.testing.assert_close(adapter.tail(layer)(adapter.head(layer)(x)), full, atol=1e-4, rtol=1e-4)


def test_interpreter_input_is_the_adapters_preprocessing(coral: dict) -> None:
    """The float model's input is the dequantised uint8 input: (x*255 - 128) / 128 for this model."""
    adapter: TFLiteAdapter = coral["adapter"]
    x = coral["x01"][:1]
    torch.testing.assert_close(adapter.preprocess(x), (x * 255 - 128) / 128)


def test_embedder_model_converts_too(shared_dir: Path) -> None:
    """The Coral MobileNetV1 embedding extractor (no classifier head) converts: its 1024-d embedding
    matches the interpreter's in direction."""
    path = shared_dir / "models/coral/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
    adapter = TFLiteAdapter(path)
    assert adapter.num_outputs == 1024 and bool(adapter.valid_outputs.all())
    from PIL import Image

    photos = [shared_dir / "models/coral/parrot.jpg", shared_dir / "models/coral/grace_hopper.bmp"]
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in photos])
    ref = run_tflite_interpreter(path, images, show_progress=False).reshape(2, -1)
    with torch.no_grad():
        got = adapter.forward(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99, cos
    # and different photos give different embeddings (the check above is not trivially satisfied)
    cross = (got[0] @ ref[1]) / np.linalg.norm(got[0]) / np.linalg.norm(ref[1])
    assert cross < 0.9


def test_real_config_names_existing_model_layer_and_data(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autointerp.config import load_config
    from autointerp.data import load_dataset
    from autointerp.data.labels import model_targets

    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository root
    cfg = load_config(REPO / "configs/mobilenetv2_coral.yaml")
    assert cfg.model.name == "tflite" and Path(cfg.model.weights).is_file()
    assert Path(cfg.rate.embedder["path"]).is_file()
    adapter = create_model(cfg.model.name, weights=cfg.model.weights, pretrained=True, **cfg.model.options)
    assert cfg.layer in adapter.cut_layers()
    assert cfg.visualize.features == "groups"  # the report's top/middle groups, chosen from the run's importance
    ds = load_dataset(cfg.dataset)
    targets = model_targets(ds, cfg.label_mapping, adapter.num_outputs, adapter.valid_outputs.numpy())
    assert len(ds) == 1000 and len(set(targets.tolist())) == 1000 and targets.min() >= 1
