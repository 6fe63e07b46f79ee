"""The ``tf_graphdef`` (``lucid``) adapter against TensorFlow's own execution of the same frozen graph.

Every graph is built here with TensorFlow and frozen to a ``.pb`` (no download): small graphs covering each
supported op, and an InceptionV1 with Lucid's architecture, node names and LRN attributes (random weights,
:mod:`tf_graphs`). The InceptionV1 checks run on real images from ``../shared``; the same weights loaded into
torch-lucent's InceptionV1 (the ``inceptionv1`` adapter) show where lucent's port computes Lucid's graph and
where it does not (its LRN).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tf_graphs import LUCENT_LRN, LUCID_LRN, lucent_state_dict, with_lrn, write_inceptionv1_pb

from autointerp.errors import UserError, WeightsError
from autointerp.extras import MissingExtraError
from autointerp.models import create_model, list_models
from autointerp.models.tfgraph import SUPPORTED_OPS, TFGraphAdapter, import_tensorflow

tf = import_tensorflow()  # Triton first: importing it after TensorFlow crashes the process

tf1 = tf.compat.v1
RNG = np.random.default_rng(0)


def _const(shape: tuple[int, ...], name: str, scale: float = 0.5) -> tf.Tensor:
    return tf.constant((RNG.standard_normal(shape) * scale).astype(np.float32), name=name)


def _freeze(build, path: Path, batch: int | None = None) -> Path:
    """Build a graph with ``build(x)`` on an NHWC float placeholder named ``image`` and write it to ``path``."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [batch, None, None, 3], name="image")
        build(x)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def _every_op_graph(x: tf.Tensor) -> None:
    """Conv (asymmetric SAME: even kernel, stride 2), depthwise, BiasAdd, Relu/Relu6, LRN, both pools (SAME with
    padding), ConcatV2, Add/AddV2/Mul with constants, Identity, Mean, Squeeze, Reshape, MatMul, Softmax."""
    y = tf.nn.conv2d(x, _const((4, 4, 3, 8), "c1_w"), [1, 2, 2, 1], "SAME", name="c1/conv")
    y = tf.nn.bias_add(y, _const((8,), "c1_b"), name="c1/bias")
    y = tf.nn.relu(y, name="c1")
    y = tf.nn.local_response_normalization(y, depth_radius=2, bias=1.5, alpha=0.05, beta=0.75, name="lrn")
    a = tf.nn.max_pool2d(y, 3, 2, "SAME", name="pool_max")
    b = tf.nn.avg_pool2d(y, 2, 2, "SAME", name="pool_avg")
    d = tf.nn.depthwise_conv2d(a, _const((3, 3, 8, 2), "dw_w"), [1, 1, 1, 1], "SAME", name="dw")
    d = tf.nn.relu6(tf.add(d, _const((16,), "shift"), name="dw_shift"), name="dw_relu6")
    c = tf.concat([d, b], axis=-1, name="cat")  # ConcatV2 with a negative axis
    c = tf.math.multiply(c, _const((1, 1, 1, 24), "gain", 1.0), name="scaled")
    c = tf.raw_ops.AddV2(x=c, y=tf.identity(c, name="copy"), name="doubled")
    c = tf.identity(c, name="block")
    g = tf.reduce_mean(c, axis=[1, 2], keepdims=True, name="gap")
    g = tf.squeeze(g, axis=[1, 2], name="squeeze")
    g = tf.reshape(g, [-1, 24], name="flat")
    z = tf.matmul(g, _const((24, 10), "fc_w"), name="fc/matmul")
    z = tf.raw_ops.Add(x=z, y=_const((10,), "fc_b"), name="logits")
    tf.nn.softmax(z, name="prob")


@pytest.fixture(scope="module")
def every_op(tmp_path_factory) -> TFGraphAdapter:
    path = _freeze(_every_op_graph, tmp_path_factory.mktemp("tfg") / "every_op.pb")
    return create_model("tf_graphdef", weights=str(path), value_range=[-1, 1], input_size=30)


def test_listed_with_its_alias() -> None:
    names = list_models()
    assert "tf_graphdef" in names and "lucid" in names


def test_every_issue_op_is_supported() -> None:
    ops = "Placeholder Const Identity Conv2D DepthwiseConv2dNative BiasAdd Relu Relu6 LRN MaxPool AvgPool ConcatV2"
    ops += " MatMul Add AddV2 Mul Reshape Squeeze Mean Softmax"
    assert set(ops.split()) <= set(SUPPORTED_OPS)


def test_every_op_graph_matches_tensorflow(every_op: TFGraphAdapter) -> None:
    ops = {n.op for n in every_op.graph_def.node}
    assert {"Conv2D", "DepthwiseConv2dNative", "LRN", "ConcatV2", "AddV2", "Mul", "Squeeze", "Mean"} <= ops
    # the trailing Softmax is dropped: the adapter's outputs are the logits
    assert every_op.logits_node == "logits" and every_op.num_outputs == 10 and every_op.input_size == 30
    x = torch.rand(5, 3, 30, 30, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = every_op.forward(x).numpy()
    ref = every_op.run_tensorflow(x)
    assert ours.shape == ref.shape == (5, 10)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    for layer in ("c1/conv", "lrn", "pool_avg", "dw_relu6", "cat", "block"):
        with torch.no_grad():
            act = every_op.head(layer)(x).numpy()
        ref_act = every_op.run_tensorflow(x, layer)
        assert act.shape == ref_act.shape and act.shape[1] == every_op.layers()[layer], layer
        np.testing.assert_allclose(act, ref_act, rtol=1e-4, atol=1e-4 * max(np.abs(ref_act).max(), 1e-6))


def test_layers_are_graph_nodes_and_tails_compose(every_op: TFGraphAdapter) -> None:
    layers = every_op.layers()
    assert list(layers)[:3] == ["c1/conv", "c1/bias", "c1"] and layers["cat"] == 24 and layers["gap"] == 24
    assert "image" not in layers and "fc/matmul" not in layers  # the input and 2-D tensors are not layers
    x = torch.rand(3, 3, 30, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = every_op.forward(x)
        for layer in ("lrn", "block"):
            assert torch.allclose(every_op.tail(layer)(every_op.head(layer)(x)), full, atol=1e-5)
    assert every_op.layer_module("block") is every_op.net.block
    # 'dw' is inside the block: the concatenation also needs pool_avg, so it is no cut point
    assert "dw" not in every_op.cut_layers() and "block" in every_op.cut_layers()
    with pytest.raises(UserError, match=r"layer 'dw' of every_op.pb is not a clean cut point .*'pool_avg'"):
        every_op.tail("dw")


def test_other_resolutions_match_tensorflow(every_op: TFGraphAdapter) -> None:
    """SAME padding is recomputed from the actual size (feature visualisation renders other sizes)."""
    x = torch.rand(2, 3, 23, 23, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        act = every_op.head("cat")(x).numpy()
    # TensorFlow at 23x23: the graph is resolution-agnostic up to 'cat'
    from autointerp.models.tfgraph import run_graphdef

    pre = (x * 2 - 1).permute(0, 2, 3, 1).numpy()
    ref = run_graphdef(every_op.graph_def, pre, "image", ["cat"])[0].transpose(0, 3, 1, 2)
    np.testing.assert_allclose(act, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_gradients_reach_the_input(every_op: TFGraphAdapter) -> None:
    x = torch.rand(1, 3, 30, 30, requires_grad=True)
    every_op.head("block")(x)[:, 3].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in every_op.module.parameters())


def test_unsupported_op_is_one_line_naming_op_and_node(tmp_path) -> None:
    def build(x: tf.Tensor) -> None:
        y = tf.nn.conv2d(x, _const((3, 3, 3, 4), "w"), [1, 1, 1, 1], "SAME", name="conv")
        y = tf.math.cumsum(y, axis=3, name="running_total")
        tf.reduce_mean(y, axis=[1, 2], name="out")

    path = _freeze(build, tmp_path / "odd.pb")
    with pytest.raises(UserError) as info:
        create_model("lucid", weights=str(path), value_range=[0, 1], input_size=16)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: node 'running_total' has op 'Cumsum'") and "cannot convert" in msg


def test_input_output_and_value_range_must_be_known(tmp_path) -> None:
    def two_heads(x: tf.Tensor) -> None:
        y = tf.nn.conv2d(x, _const((1, 1, 3, 4), "w"), [1, 1, 1, 1], "VALID", name="conv")
        tf.reduce_mean(y, axis=[1, 2], name="head_a")
        tf.reduce_max(y, axis=[1, 2], name="head_b")

    path = _freeze(two_heads, tmp_path / "two.pb")
    with pytest.raises(UserError, match=r"set model.output to the logits node; the graph's outputs: head_a, head_b$"):
        create_model("lucid", weights=str(path), value_range=[0, 1])
    with pytest.raises(UserError, match=r"set model.value_range to the pixel range the graph expects"):
        create_model("lucid", weights=str(path), output="head_b")
    with pytest.raises(UserError, match=r"model.input 'conv' is not a Placeholder"):
        create_model("lucid", weights=str(path), output="head_b", input="conv", value_range=[0, 1])
    adapter = create_model("lucid", weights=str(path), output="head_b", value_range=[0, 255])
    graph = tf.Graph()
    with graph.as_default():
        pixels = tf1.placeholder(tf.uint8, [None, 8, 8, 3], name="pixels")
        tf.reduce_mean(tf.cast(pixels, tf.float32), axis=[1, 2], name="out")
    (tmp_path / "uint8.pb").write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(UserError, match=r"input 'pixels' is not a float32 Placeholder"):
        create_model("lucid", weights=str(tmp_path / "uint8.pb"), value_range=[0, 255])
    assert adapter.input_size == 224 and adapter.num_outputs == 4  # unknown placeholder size: 224
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        np.testing.assert_allclose(adapter.forward(x).numpy(), adapter.run_tensorflow(x), rtol=1e-5, atol=1e-4)


def test_missing_or_foreign_file(tmp_path) -> None:
    with pytest.raises(WeightsError, match=r"InceptionV1.pb: TensorFlow GraphDef file not found .*other_models/Incep"):
        create_model("lucid", weights=str(tmp_path / "InceptionV1.pb"))
    with pytest.raises(WeightsError, match=r"needs model.weights"):
        create_model("tf_graphdef")
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xfe not a protobuf at all \x00\x01")
    with pytest.raises(WeightsError, match=r"bad.pb: not a frozen TensorFlow GraphDef"):
        create_model("lucid", weights=str(bad), value_range=[0, 1])


def test_missing_tensorflow_names_the_extra(monkeypatch, tmp_path) -> None:
    for key in [k for k in sys.modules if k == "tensorflow" or k.startswith("tensorflow.")]:
        monkeypatch.delitem(sys.modules, key)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    (tmp_path / "g.pb").write_bytes(b"")
    with pytest.raises(MissingExtraError) as info:
        create_model("lucid", weights=str(tmp_path / "g.pb"))
    assert str(info.value) == (
        "the tf_graphdef model adapter needs the [tensorflow] extra: pip install 'autointerp[tensorflow]' "
        "(tensorflow is not installed)"
    )


def test_random_init_keeps_the_architecture(tmp_path) -> None:
    path = _freeze(_every_op_graph, tmp_path / "g.pb")
    torch.manual_seed(0)
    a = create_model("lucid", weights=str(path), value_range=[-1, 1], input_size=30)
    b = create_model("lucid", weights=str(path), value_range=[-1, 1], input_size=30, pretrained=False)
    assert a.layers() == b.layers()
    assert not torch.equal(a.net.get_submodule("c1/conv").weight, b.net.get_submodule("c1/conv").weight)


# -- InceptionV1 with Lucid's graph layout ---------------------------------------------------------------------


def _shared_images(shared_dir: Path, n: int = 12) -> torch.Tensor:
    from PIL import Image

    folders = sorted((shared_dir / "data" / "imagenet_sample_224").iterdir())
    step = len(folders) // n
    imgs = []
    for folder in folders[::step][:n]:
        file = sorted(folder.iterdir())[0]
        imgs.append(np.asarray(Image.open(file).convert("RGB").resize((224, 224)), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def images(shared_dir) -> torch.Tensor:
    return _shared_images(shared_dir)


@pytest.fixture(scope="module")
def lucid_graph(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("lucid") / "InceptionV1.pb"
    return path, write_inceptionv1_pb(path, seed=0, lrn=LUCID_LRN)


def _lucent(weights: dict, lrn: str):
    """The project's ``inceptionv1`` adapter (lucent's port) with the graph's weights and LRN ``lrn``."""
    from autointerp.models.inceptionv1 import InceptionV1Adapter, load_inceptionv1

    module = load_inceptionv1(pretrained=False, lrn=lrn)
    module.load_state_dict(lucent_state_dict(weights))
    return InceptionV1Adapter(module)


def test_inceptionv1_graph_matches_tensorflow_on_real_images(lucid_graph, images) -> None:
    path, _ = lucid_graph
    adapter = create_model("lucid", weights=str(path))
    # Lucid's conventions come from the detected preset
    assert adapter.preset == "inceptionv1" and adapter.input_size == 224 and adapter.num_outputs == 1008
    assert adapter.logits_node == "softmax2_pre_activation" and adapter.input_node == "input"
    assert adapter.valid_outputs.sum() == 1000 and not adapter.valid_outputs[[0, 1001, 1007]].any()
    layers = adapter.layers()
    assert layers["mixed5a"] == 832 and layers["mixed5b"] == 1024 and layers["mixed4a"] == 508
    assert not any(name.startswith(("head0", "head1", "nn0", "softmax0")) for name in layers)  # aux heads pruned
    assert {"mixed3a", "mixed4e", "mixed5a", "maxpool10"} <= set(adapter.cut_layers())
    torch.manual_seed(0)
    with torch.no_grad():
        acts = adapter.head("mixed5a")(images)
        logits = adapter.tail("mixed5a")(acts).numpy()
    ref_logits = adapter.run_tensorflow(images)
    ref_acts = adapter.run_tensorflow(images, "mixed5a")
    assert acts.shape == (len(images), 832, 7, 7)
    scale = np.abs(ref_logits).max()
    assert np.abs(logits - ref_logits).max() <= 1e-4 * scale, (np.abs(logits - ref_logits).max(), scale)
    assert np.abs(acts.numpy() - ref_acts).max() <= 1e-4 * np.abs(ref_acts).max()
    valid = adapter.valid_outputs.numpy()
    ours, theirs = logits[:, valid].argmax(1), ref_logits[:, valid].argmax(1)
    assert (ours == theirs).all()
    assert len(set(theirs)) > 1  # the random network does not answer one class for every image


def _outputs(module: torch.nn.Module, modules: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs of ``modules`` (name -> submodule of ``module``) in one forward pass of ``module``."""
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, n=n: seen.setdefault(n, out)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _same_layer_by_layer(graph, lucent, images) -> None:
    """``graph`` (tf_graphdef) and ``lucent`` (inceptionv1) agree at every block and the logits, in one pass each."""
    layers = ["conv2d0", "conv2d2", "mixed3b", "mixed4a", "mixed4e", "mixed5a", "mixed5b"]
    x = images[:4]
    ours = {n: graph.layer_module(n) for n in layers} | {"logits": graph.layer_module("softmax2_pre_activation")}
    ours = _outputs(graph.module, ours, graph.preprocess(x))
    lucent_modules = dict(lucent.module.named_modules())
    theirs = {n: lucent_modules[n] for n in layers} | {"logits": lucent_modules["softmax2_pre_activation_matmul"]}
    theirs = _outputs(lucent.module, theirs, lucent.preprocess(x))
    assert set(ours) == set(theirs) == {*layers, "logits"}
    for layer, value in theirs.items():
        assert ours[layer].shape == value.shape, layer
        assert (ours[layer] - value).abs().max() <= 1e-4 * value.abs().max(), layer
    assert torch.equal(graph.valid_outputs, lucent.valid_outputs)


@pytest.mark.slow
def test_inceptionv1_adapter_computes_lucids_graph(lucid_graph, images) -> None:
    """The ``inceptionv1`` adapter's default (``lrn: lucid``) is the study's graph, layer by layer, LRN included."""
    path, weights = lucid_graph
    _same_layer_by_layer(create_model("lucid", weights=str(path)), _lucent(weights, "lucid"), images)


@pytest.mark.slow
def test_lucent_computes_the_graph_given_lucents_lrn(lucid_graph, tmp_path, images) -> None:
    """Everything but LRN: lucent's port as it is (padding, pools, branch order, head) is the graph with lucent's
    LRN, layer by layer."""
    lucid_path, weights = lucid_graph
    path = tmp_path / "InceptionV1_lucent_lrn.pb"
    path.write_bytes(with_lrn(lucid_path.read_bytes(), LUCENT_LRN))
    _same_layer_by_layer(create_model("lucid", weights=str(path)), _lucent(weights, "lucent"), images)


def test_lucents_lrn_is_not_lucids(lucid_graph, images) -> None:
    """torch-lucent's InceptionV1 normalises with size 9, k=1 and alpha/9 where Lucid's graph has depth_radius 5,
    bias 2 and alpha: the first layer after LRN already differs, which is why the ``inceptionv1`` adapter
    computes Lucid's LRN by default and keeps lucent's only as ``lrn: lucent``."""
    path, weights = lucid_graph
    graph, lucent = create_model("lucid", weights=str(path)), _lucent(weights, "lucent")
    x = images[:4]
    with torch.no_grad():
        same = (graph.head("conv2d0")(x) - lucent.head("conv2d0")(x)).abs().max()
        after = graph.head("conv2d1")(x), lucent.head("conv2d1")(x)
    assert same <= 1e-5 * lucent.head("conv2d0")(x).abs().max()
    assert (after[0] - after[1]).abs().max() > 0.05 * after[1].abs().max()


# -- the study's config on a Lucid-format graph ------------------------------------------------------------------


@pytest.mark.slow
def test_lucid_config_runs_end_to_end(lucid_graph, shared_dir, tmp_path) -> None:
    """configs/inceptionv1_mixed5a_lucid.yaml at reduced sizes on the InceptionV1-shaped graph and the shared
    images: every stage runs, mixed5a's 832 features through the converted graph. Importance is the naive
    method here (full forward passes with the ablation hooked at the graph's mixed5a node): the exact method's
    affine-tail check costs minutes on this tail on 2 cores."""
    import csv
    import json

    import yaml
    from typer.testing import CliRunner

    from autointerp.cli import app

    repo = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((repo / "configs" / "inceptionv1_mixed5a_lucid.yaml").read_text())
    assert cfg["model"]["name"] == "lucid" and cfg["layer"] == "mixed5a"
    cfg["model"]["weights"] = str(lucid_graph[0])
    cfg["output_dir"] = str(tmp_path / "run")
    cfg["device"] = "cpu"
    cfg["dataset"].update(path=str(shared_dir / "data/imagenet_sample_64.npz"), max_images=16)
    cfg["label_mapping"]["map_clsloc"] = str(shared_dir / "reference/imagenet/map_clsloc.txt")
    cfg["activations"].update(batch_size=8, dtype="float32")
    cfg["importance"] = {"method": "naive", "k": 10, "features": [0, 1, 2, 3], "workers": 1}
    cfg["visualize"].update(features=[0, 1], steps=2, size=48, n_images=1, example_features="visualized")
    cfg["rate"] = {"raters": ["random"], "embedder": {"type": "handcrafted"}}
    cfg["report"].update(top_n=1, middle_n=1, bootstrap=20, permutations=20)
    path = tmp_path / "lucid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    meta = json.loads((run / "activations/meta.json").read_text())
    assert meta["n_images"] == 16 and meta["channels"] == 832 and meta["layer"] == "mixed5a"
    with (run / "importance/importance.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["feature_ind"]) for r in rows] == [0, 1, 2, 3]
    assert (run / "report/index.html").stat().st_size > 1000
