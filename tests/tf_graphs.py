"""TensorFlow graphs built in the tests: an InceptionV1 with Lucid's architecture and node names, random weights.

Lucid's ``InceptionV1.pb`` (the deepdream tutorial's ``inception5h`` graph) stores every weight as a ``Const``
named ``<layer>_w`` (HWIO) / ``<layer>_b``; a convolution is ``<layer>_pre_relu/conv`` (Conv2D) →
``<layer>_pre_relu`` (BiasAdd) → ``<layer>`` (Relu); a block ends in ``mixedXX`` (the old ``Concat`` op with
its axis in ``mixedXX/concat_dim``); the auxiliary heads ``head0``/``head1`` (from ``mixed4a``/``mixed4d``)
end in ``softmax0``/``softmax1``; the main head is ``avgpool0`` → ``avgpool0/reshape`` →
``softmax2_pre_activation/matmul`` → ``softmax2_pre_activation`` → ``softmax2``; 1008 outputs.

Its two LRN nodes read (as published by people who inspected the file, e.g. torch-lucent pull request 51):
``depth_radius=5, bias=2, alpha=1e-4, beta=0.5`` (:data:`LUCID_LRN`). torch-lucent's port computes
``F.local_response_norm(size=9, alpha=1e-4, beta=0.5, k=1)``, i.e. in TensorFlow's terms :data:`LUCENT_LRN`
(torch divides alpha by the window size).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Lucid's InceptionV1.pb LRN attributes
LUCID_LRN = {"depth_radius": 5, "bias": 2.0, "alpha": 1e-4, "beta": 0.5}
#: what torch-lucent's InceptionV1 computes, written as TensorFlow LRN attributes
LUCENT_LRN = {"depth_radius": 4, "bias": 1.0, "alpha": 9.99999974738e-05 / 9, "beta": 0.5}

#: (block, input channels, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce)
BLOCKS = (
    ("mixed3a", 192, 64, 96, 128, 16, 32, 32),
    ("mixed3b", 256, 128, 128, 192, 32, 96, 64),
    ("mixed4a", 480, 192, 96, 204, 16, 48, 64),
    ("mixed4b", 508, 160, 112, 224, 24, 64, 64),
    ("mixed4c", 512, 128, 128, 256, 24, 64, 64),
    ("mixed4d", 512, 112, 144, 288, 32, 64, 64),
    ("mixed4e", 528, 256, 160, 320, 32, 128, 128),
    ("mixed5a", 832, 256, 160, 320, 48, 128, 128),
    ("mixed5b", 832, 384, 192, 384, 48, 128, 128),
)
#: max pools between blocks (after the named block)
POOL_AFTER = {"mixed3b": "maxpool4", "mixed4e": "maxpool10"}
HEADS = (("head0", "mixed4a", 508, "nn0", "softmax0"), ("head1", "mixed4d", 528, "nn1", "softmax1"))


def _conv_shapes() -> dict[str, tuple[int, int, int, int]]:
    """name -> HWIO filter shape of every convolution, in Lucid's naming."""
    shapes = {"conv2d0": (7, 7, 3, 64), "conv2d1": (1, 1, 64, 64), "conv2d2": (3, 3, 64, 192)}
    for name, cin, c1, c3r, c3, c5r, c5, cp in BLOCKS:
        shapes[f"{name}_1x1"] = (1, 1, cin, c1)
        shapes[f"{name}_3x3_bottleneck"] = (1, 1, cin, c3r)
        shapes[f"{name}_3x3"] = (3, 3, c3r, c3)
        shapes[f"{name}_5x5_bottleneck"] = (1, 1, cin, c5r)
        shapes[f"{name}_5x5"] = (5, 5, c5r, c5)
        shapes[f"{name}_pool_reduce"] = (1, 1, cin, cp)
    for head, _, cin, _, _ in HEADS:
        shapes[f"{head}_bottleneck"] = (1, 1, cin, 128)
    return shapes


def inceptionv1_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under Lucid's Const names: zero-mean He-scaled filters (the first one for pixels in
    [-117, 138]) and small biases, so activations stay in a sensible range through the 22 layers and the
    predicted class depends on the image."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in _conv_shapes().items():
        fan_in = shape[0] * shape[1] * shape[2]
        scale = np.sqrt(2.0 / fan_in) / (80.0 if name == "conv2d0" else 1.0)
        w = rng.standard_normal(shape)
        w -= w.mean(axis=(0, 1, 2), keepdims=True)  # zero-mean filters respond to the image, not its mean level
        out[f"{name}_w"] = (w * scale).astype(np.float32)
        out[f"{name}_b"] = (rng.standard_normal(shape[3]) * 0.05).astype(np.float32)
    for fc, n_in, n_out in (("nn0", 2048, 1024), ("nn1", 2048, 1024)):
        out[f"{fc}_w"] = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        out[f"{fc}_b"] = (rng.standard_normal(n_out) * 0.05).astype(np.float32)
    for sm in ("softmax0", "softmax1", "softmax2"):
        w = rng.standard_normal((1024, 1008))
        out[f"{sm}_w"] = ((w - w.mean(axis=0)) / np.sqrt(1024)).astype(np.float32)
        out[f"{sm}_b"] = (rng.standard_normal(1008) * 0.05).astype(np.float32)
    return out


def inceptionv1_graph(weights: dict[str, np.ndarray], lrn: dict[str, float] = LUCID_LRN):
    """The frozen InceptionV1 GraphDef with Lucid's node names and ops, holding ``weights``."""
    from autointerp.models.tfgraph import import_tensorflow

    tf = import_tensorflow()
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        const = {k: tf.constant(v, name=k) for k, v in weights.items()}

        def conv(x, name: str, stride: int = 1):
            y = tf.nn.conv2d(x, const[f"{name}_w"], [1, stride, stride, 1], "SAME", name=f"{name}_pre_relu/conv")
            y = tf.nn.bias_add(y, const[f"{name}_b"], name=f"{name}_pre_relu")
            return tf.nn.relu(y, name=name)

        def lrn_(x, name: str):
            return tf.nn.local_response_normalization(x, name=name, **lrn)

        x = tf1.placeholder(tf.float32, [None, None, None, 3], name="input")
        y = conv(x, "conv2d0", stride=2)
        y = tf.nn.max_pool2d(y, 3, 2, "SAME", name="maxpool0")
        y = lrn_(y, "localresponsenorm0")
        y = conv(y, "conv2d1")
        y = conv(y, "conv2d2")
        y = lrn_(y, "localresponsenorm1")
        y = tf.nn.max_pool2d(y, 3, 2, "SAME", name="maxpool1")
        blocks = {}
        for name, *_ in BLOCKS:
            b1 = conv(y, f"{name}_1x1")
            b3 = conv(conv(y, f"{name}_3x3_bottleneck"), f"{name}_3x3")
            b5 = conv(conv(y, f"{name}_5x5_bottleneck"), f"{name}_5x5")
            bp = conv(tf.nn.max_pool2d(y, 3, 1, "SAME", name=f"{name}_pool"), f"{name}_pool_reduce")
            axis = tf.constant(3, name=f"{name}/concat_dim")
            y = blocks[name] = tf.raw_ops.Concat(concat_dim=axis, values=[b1, b3, b5, bp], name=name)
            if name in POOL_AFTER:
                y = tf.nn.max_pool2d(y, 3, 2, "SAME", name=POOL_AFTER[name])
        for head, source, _, fc, sm in HEADS:
            h = tf.nn.avg_pool2d(blocks[source], 5, 3, "VALID", name=f"{head}_pool")
            h = conv(h, f"{head}_bottleneck")
            shape = tf.constant([-1, 2048], name=f"{head}_bottleneck/reshape/shape")
            h = tf.reshape(h, shape, name=f"{head}_bottleneck/reshape")
            h = tf.matmul(h, const[f"{fc}_w"], name=f"{fc}_pre_relu/matmul")
            h = tf.nn.relu(tf.nn.bias_add(h, const[f"{fc}_b"], name=f"{fc}_pre_relu"), name=fc)
            h = tf.reshape(h, tf.constant([-1, 1024], name=f"{fc}/reshape/shape"), name=f"{fc}/reshape")
            h = tf.matmul(h, const[f"{sm}_w"], name=f"{sm}_pre_activation/matmul")
            tf.nn.softmax(tf.nn.bias_add(h, const[f"{sm}_b"], name=f"{sm}_pre_activation"), name=sm)
        y = tf.nn.avg_pool2d(y, 7, 1, "VALID", name="avgpool0")
        y = tf.reshape(y, tf.constant([-1, 1024], name="avgpool0/reshape/shape"), name="avgpool0/reshape")
        y = tf.matmul(y, const["softmax2_w"], name="softmax2_pre_activation/matmul")
        y = tf.nn.bias_add(y, const["softmax2_b"], name="softmax2_pre_activation")
        tf.nn.softmax(y, name="softmax2")
    return graph.as_graph_def()


def write_inceptionv1_pb(path: Path, seed: int = 0, lrn: dict[str, float] = LUCID_LRN) -> dict[str, np.ndarray]:
    """Write the frozen graph to ``path``; returns its weights."""
    weights = inceptionv1_weights(seed)
    path.write_bytes(inceptionv1_graph(weights, lrn).SerializeToString())
    return weights


def with_lrn(pb: bytes, lrn: dict[str, float]) -> bytes:
    """The serialized graph ``pb`` with its LRN nodes' attributes replaced by ``lrn`` (same weights)."""
    from autointerp.models.tfgraph import import_tensorflow

    graph_def = import_tensorflow().compat.v1.GraphDef.FromString(pb)
    for node in graph_def.node:
        if node.op == "LRN":
            node.attr["depth_radius"].i = int(lrn["depth_radius"])
            for key in ("bias", "alpha", "beta"):
                node.attr[key].f = float(lrn[key])
    return graph_def.SerializeToString()


def lucent_state_dict(weights: dict[str, np.ndarray]) -> dict:
    """The same weights as a state dict for torch-lucent's InceptionV1 (OIHW filters, (out, in) matrix)."""
    import torch

    state = {}
    for name in _conv_shapes():
        if name.startswith("head"):
            continue  # lucent's port has no auxiliary heads
        state[f"{name}_pre_relu_conv.weight"] = torch.from_numpy(weights[f"{name}_w"].transpose(3, 2, 0, 1).copy())
        state[f"{name}_pre_relu_conv.bias"] = torch.from_numpy(weights[f"{name}_b"])
    state["softmax2_pre_activation_matmul.weight"] = torch.from_numpy(weights["softmax2_w"].T.copy())
    state["softmax2_pre_activation_matmul.bias"] = torch.from_numpy(weights["softmax2_b"])
    return state
