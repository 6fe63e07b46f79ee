"""The ``keras`` adapter against Keras itself, on small CNNs built and saved (``.keras``) in the test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autointerp.errors import UserError, WeightsError
from autointerp.extras import MissingExtraError
from autointerp.models import create_model, list_models
from autointerp.models.tfgraph import import_tensorflow

tf = import_tensorflow()  # Triton first: importing it after TensorFlow crashes the process
import keras  # noqa: E402  (after TensorFlow, the backend it uses)


def _functional_cnn(path: Path) -> keras.Model:
    """Conv + batch norm (non-trivial moving statistics), pooling, a depthwise residual, concatenation,
    global pooling, a dense layer and a Softmax layer."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.ReLU(6.0, name="relu6")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.Conv2D(16, 4, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.Activation("relu", name="act2")(x)
    x = keras.layers.Concatenate(name="cat")([x, keras.layers.AveragePooling2D(2, name="pool2")(y)])
    x = keras.layers.Dropout(0.5, name="drop")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(10, name="logits")(x)
    out = keras.layers.Softmax(name="prob")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn1")
    rng = np.random.default_rng(0)
    gamma, beta = rng.uniform(0.5, 2, 8), rng.normal(size=8)
    bn.set_weights([gamma, beta, rng.normal(size=8), rng.uniform(0.2, 3, 8)])
    model.save(path)
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, keras.Model]:
    path = tmp_path_factory.mktemp("keras") / "cnn.keras"
    return path, _functional_cnn(path)


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy() * 255.0


def test_listed() -> None:
    assert "keras" in list_models()


def test_functional_cnn_matches_keras(saved) -> None:
    path, model = saved
    adapter = create_model("keras", weights=str(path), value_range=[0, 255])
    assert adapter.input_size == 32 and adapter.num_outputs == 10
    layers = adapter.layers()
    # Keras layer names with 4-D outputs, in order (inference-mode dropout computes nothing: no layer)
    order = ["rescale", "conv1", "bn1", "pool1", "dw", "relu6", "residual", "conv2", "act2", "pool2", "cat"]
    assert list(layers) == order
    assert layers["conv1"] == 8 and layers["cat"] == 24 and "gap" not in layers and "logits" not in layers
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = adapter.forward(x).numpy()
    # Keras's logits: the model up to the Dense layer, in inference mode
    logits_model = keras.Model(model.inputs, model.get_layer("logits").output)
    ref = np.asarray(logits_model(_nhwc(x), training=False))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    probs = np.asarray(model(_nhwc(x), training=False))
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(ours), 1).numpy(), probs, atol=1e-5)
    for name in ("conv1", "bn1", "residual", "conv2", "cat"):
        sub = keras.Model(model.inputs, model.get_layer(name).output)
        ref_act = np.asarray(sub(_nhwc(x), training=False)).transpose(0, 3, 1, 2)
        with torch.no_grad():
            act = adapter.head(name)(x).numpy()
        assert act.shape == ref_act.shape, name
        np.testing.assert_allclose(act, ref_act, rtol=1e-4, atol=1e-5 * np.abs(ref_act).max())
    # and through the split: head then tail at a block output
    with torch.no_grad():
        assert torch.allclose(adapter.tail("cat")(adapter.head("cat")(x)), torch.from_numpy(ours), atol=1e-5)
    with pytest.raises(UserError, match=r"layer 'dw' of cnn.keras is not a clean cut point"):
        adapter.tail("dw")


def test_sequential_softmax_dense_returns_logits(tmp_path) -> None:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(6, 5, strides=2, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(3, strides=2, padding="same", name="p1"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(7, activation="softmax", name="out"),
        ]
    )
    path = tmp_path / "seq.keras"
    model.save(path)
    adapter = create_model("keras", weights=str(path), value_range=[0, 1])
    assert list(adapter.layers()) == ["c1", "p1"]
    x = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = adapter.forward(x)
    probs = np.asarray(model(x.permute(0, 2, 3, 1).numpy(), training=False))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probs, atol=1e-6)
    assert not np.allclose(logits.numpy(), probs)  # the softmax was dropped


def test_missing_or_foreign_file(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"nope.keras: Keras model file not found"):
        create_model("keras", weights=str(tmp_path / "nope.keras"))
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match=r"bad.keras: not a loadable Keras model"):
        create_model("keras", weights=str(bad), value_range=[0, 1])


def test_value_range_is_required(saved) -> None:
    with pytest.raises(UserError, match=r"set model.value_range"):
        create_model("keras", weights=str(saved[0]))


def test_missing_tensorflow_names_the_extra(monkeypatch, saved) -> None:
    for key in [k for k in sys.modules if k in ("tensorflow", "keras") or k.startswith(("tensorflow.", "keras."))]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(MissingExtraError, match=r"^the keras model adapter needs the \[tensorflow\] extra"):
        create_model("keras", weights=str(saved[0]), value_range=[0, 255])
