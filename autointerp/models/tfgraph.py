"""Frozen TensorFlow graphs (Lucid's model zoo format) as torch models: the ``tf_graphdef`` adapter.

Lucid's model zoo ships every vision model as a frozen ``GraphDef`` (``.pb``): weights are ``Const`` nodes,
the image enters through a ``Placeholder``. This module reads such a file with TensorFlow (``tf.compat.v1``,
the ``[tensorflow]`` extra), rebuilds the part of the graph that computes the logits as a torch module, and
wraps it in a :class:`~autointerp.models.base.ModelAdapter` registered as ``tf_graphdef`` (alias ``lucid``)::

    adapter = create_model("lucid", weights="InceptionV1.pb")   # Lucid's InceptionV1 (inception5h)
    adapter.layers()            # {"conv2d0_pre_relu/conv": 64, ..., "mixed5a": 832, "mixed5b": 1024, ...}
    acts = adapter.head("mixed5a")(x01)      # (N, 832, 7, 7)
    logits = adapter.tail("mixed5a")(acts)   # (N, 1008): softmax2_pre_activation

**Names.** Every converted op is a child module named after its graph node, so layers are the graph's own
names (``mixed5a``, ``conv2d0``, ``softmax2_pre_activation``), as in Lucid. Layers are the 4-D node outputs
the logits depend on; :meth:`TFGraphAdapter.tail` needs a *cut layer* whose activation alone determines the
logits (a block output such as ``mixed5a``, not a branch inside it).

**Semantics.**

* NHWC → NCHW once: the torch module takes NCHW images and every 4-D tensor inside is NCHW; the axes of
  ``ConcatV2``, ``Mean``, ``Reshape``, ``Squeeze``, ``Pad``, ``BiasAdd`` and broadcast constants are mapped.
* ``SAME`` padding is TF's, asymmetric where TF pads more at the bottom/right, recomputed from the actual
  input size; ``AvgPool`` excludes padded cells; ``LRN`` sums squares over ``2·depth_radius+1`` channels.
* A pooling whose window covers the whole map at the native input size (InceptionV1's ``avgpool0``) is
  global pooling, so the network also runs at other resolutions.
* Sub-graphs that do not depend on the input (``w/read`` identities, shape arithmetic) are folded to
  constants by TensorFlow; a ``Reshape`` whose shape depends on the batch size uses TF's inferred shape.
* The logits node is the graph output with a trailing ``Softmax`` (and ``Identity``) dropped.
* An op outside :data:`SUPPORTED_OPS` is a one-line :class:`~autointerp.errors.UserError` naming the op and
  the node.

**Input conventions** (Lucid's ``image_value_range``, ``image_shape``, ``input_name``) are adapter options:
``value_range: [lo, hi]`` maps images in [0, 1] to ``x·(hi − lo) + lo``. Known graphs carry them in a
*preset*, detected from their node names: ``inceptionv1`` (Lucid's ``InceptionV1.pb`` / ``inception5h``:
input ``input``, values ``[-117, 138]`` = ``x·255 − 117``, 224 px, 1008 outputs of which 0 and 1001–1007
are dummies, logits ``softmax2_pre_activation``) — the same conventions as the ``inceptionv1`` adapter.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autointerp.errors import UserError, WeightsError
from autointerp.extras import installed, require
from autointerp.models.base import MODELS, ModelAdapter, register_model
from autointerp.models.nhwc import (
    NHWC_TO_NCHW_AXIS,
    Logits,
    binary,
    const_like_nchw,
    conv_same_padding,
    from_tf,
    last_tf_dim,
    needed_steps,
    pad,
    pool2d,
    reduce_tf_axes,
    to_tf,
    torch_pads,
)

__all__ = [
    "LUCID_GRAPHS",
    "PRESETS",
    "SUPPORTED_OPS",
    "TFGraphAdapter",
    "TFGraphNet",
    "convert_graphdef",
    "import_tensorflow",
    "read_graphdef",
    "run_graphdef",
]

#: Where Lucid's model-zoo graphs are published (for error messages and docs)
LUCID_GRAPHS = {
    "inceptionv1": "https://storage.googleapis.com/modelzoo/vision/other_models/InceptionV1.pb",
    "inception5h": "https://storage.googleapis.com/download.tensorflow.org/models/inception5h.zip",
}

#: Lucid's per-model input conventions for graphs recognised by their node names
PRESETS: dict[str, dict[str, Any]] = {
    "inceptionv1": {
        "signature": ("mixed5b", "softmax2_pre_activation"),
        "input": "input",
        "output": "softmax2_pre_activation",
        "value_range": (-117.0, 138.0),
        "input_size": 224,
        "valid_outputs": (1, 1001),  # 1008 outputs: 0 and 1001..1007 are dummies
    },
}

_PASSTHROUGH = ("Identity", "StopGradient", "Snapshot", "PreventGradient")
_ACTIVATIONS = ("Relu", "Relu6", "Elu", "Sigmoid", "Tanh", "LeakyRelu")
#: binary ops and reductions, each by its :data:`autointerp.models.nhwc.BINARY` / ``REDUCTIONS`` name
_ELEMENTWISE = {"Add": "add", "AddV2": "add", "Sub": "sub", "Mul": "mul", "RealDiv": "div", "Maximum": "max",
                "Minimum": "min"}  # fmt: skip
_REDUCTIONS = {"Mean": "mean", "Sum": "sum", "Max": "max"}

#: the graph ops the converter understands (``Const`` sub-graphs of any op are folded by TensorFlow)
SUPPORTED_OPS: tuple[str, ...] = (
    ("Placeholder", "Const", "Conv2D", "DepthwiseConv2dNative", "BiasAdd", "LRN", "MaxPool", "AvgPool")
    + ("ConcatV2", "Concat", "MatMul", "Reshape", "Squeeze", "ExpandDims", "Softmax", "Pad", "PadV2", "MirrorPad")
    + ("FusedBatchNorm", "FusedBatchNormV3")
    + _PASSTHROUGH
    + _ACTIVATIONS
    + tuple(_ELEMENTWISE)
    + tuple(_REDUCTIONS)
)


def import_tensorflow(what: str = "the tf_graphdef model adapter") -> Any:
    """TensorFlow (the ``[tensorflow]`` extra), imported quietly and safely beside torch.

    Importing Triton (which ``torch.compile`` and torchvision's ops load) *after* TensorFlow crashes the
    process (a segmentation fault in Triton's native library); the other order works. So Triton, when
    installed, is imported first.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and installed("triton"):
        import triton  # noqa: F401
    return require("tensorflow", "tensorflow", what)


_tf = import_tensorflow


# --------------------------------------------------------------------------------------------------
# Reading the graph
# --------------------------------------------------------------------------------------------------


def read_graphdef(path: str | Path) -> Any:
    """Parse a frozen ``GraphDef`` (``.pb``); a missing or unreadable file is a :class:`WeightsError`."""
    tf = _tf()
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: TensorFlow GraphDef file not found")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # a foreign file fails inside protobuf's decoder
        raise WeightsError(f"{path}: not a frozen TensorFlow GraphDef ({type(exc).__name__}: {exc})") from None
    if not graph_def.node:
        raise WeightsError(f"{path}: not a frozen TensorFlow GraphDef (no nodes)")
    return graph_def


def _source(ref: str) -> tuple[str, int]:
    """``"name:1"`` -> ("name", 1); ``"name"`` -> ("name", 0)."""
    name, _, index = ref.partition(":")
    return name, int(index) if index else 0


def _data_inputs(node: Any) -> list[str]:
    return [ref for ref in node.input if not ref.startswith("^")]


def _attr_ints(node: Any, key: str, default: Sequence[int]) -> list[int]:
    values = list(node.attr[key].list.i) if key in node.attr else []
    return [int(v) for v in values] or list(default)


def _attr_str(node: Any, key: str, default: str = "") -> str:
    return node.attr[key].s.decode() if key in node.attr and node.attr[key].s else default


def _attr_float(node: Any, key: str, default: float) -> float:
    return float(node.attr[key].f) if key in node.attr else default


def _ancestors(nodes: dict[str, Any], outputs: Sequence[str]) -> list[str]:
    """Names of the nodes ``outputs`` depend on (data inputs only), in topological order."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in outputs:
        stack: list[tuple[str, bool]] = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                order.append(name)
                continue
            if state.get(name):
                continue
            state[name] = 1
            stack.append((name, True))
            for ref in reversed(_data_inputs(nodes[name])):
                src = _source(ref)[0]
                if src not in nodes:
                    raise UserError(f"node {name!r} reads {src!r}, which is not in the graph")
                if not state.get(src):
                    stack.append((src, False))
    return order


# --------------------------------------------------------------------------------------------------
# Torch operators (4-D tensors are NCHW; the graph's axes refer to NHWC)
# --------------------------------------------------------------------------------------------------


class TFOp(nn.Module):
    """Base of the converted operators; ``op`` is the TensorFlow op type."""

    op: str = ""

    def extra_repr(self) -> str:
        return self.op


class Conv(TFOp):
    """Conv2D / DepthwiseConv2dNative with TF padding (``SAME``, ``VALID`` or explicit)."""

    def __init__(
        self,
        op: str,
        weight: torch.Tensor,
        *,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        padding: str,
        groups: int,
        explicit: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> None:
        super().__init__()
        self.op = op
        self.weight = nn.Parameter(weight.contiguous())
        self.stride = tuple(stride)
        self.dilation = tuple(dilation)
        self.padding = padding
        self.groups = groups
        self.explicit = tuple(explicit)  # (left, right, top, bottom) for EXPLICIT padding

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return (
            f"{self.op}, {i * self.groups}->{o}, kernel=({kh}, {kw}), stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: tuple[int, int] | int = 0
        if self.padding == "SAME":
            x, padding = conv_same_padding(x, self.weight.shape[-2:], self.stride, self.dilation)
        elif self.padding == "EXPLICIT" and any(self.explicit):
            x = F.pad(x, self.explicit)
        return F.conv2d(x, self.weight, None, self.stride, padding, self.dilation, self.groups)


class BiasAdd(TFOp):
    """BiasAdd: a per-channel constant (channel = NCHW dim 1 for 4-D tensors, else the last axis)."""

    op = "BiasAdd"

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x + self.bias.view(1, -1, 1, 1)
        return x + self.bias


class Activation(TFOp):
    """Relu, Relu6, Elu, Sigmoid, Tanh, LeakyRelu."""

    def __init__(self, op: str, alpha: float = 0.2) -> None:
        super().__init__()
        self.op = op
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "Relu":
            return F.relu(x)
        if self.op == "Relu6":
            return F.hardtanh(x, 0.0, 6.0)
        if self.op == "Elu":
            return F.elu(x)
        if self.op == "Sigmoid":
            return torch.sigmoid(x)
        if self.op == "Tanh":
            return torch.tanh(x)
        return F.leaky_relu(x, self.alpha)


class Passthrough(TFOp):
    """Identity-like ops (Identity, StopGradient, ...): the node keeps its name as a layer."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class LRN(TFOp):
    """Local response normalisation: ``x / (bias + alpha · Σ x²)^beta`` over ``2·depth_radius + 1`` channels."""

    op = "LRN"

    def __init__(self, depth_radius: int, bias: float, alpha: float, beta: float) -> None:
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def extra_repr(self) -> str:
        return f"LRN, depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = 2 * self.depth_radius + 1
        # torch divides alpha by the window size; TF does not
        return F.local_response_norm(x, size=size, alpha=self.alpha * size, beta=self.beta, k=self.bias)


class Pool(TFOp):
    """MaxPool / AvgPool with TF padding; averages exclude padded cells. ``global_pool``: the whole map."""

    def __init__(
        self, op: str, *, ksize: tuple[int, int], stride: tuple[int, int], padding: str, global_pool: bool
    ) -> None:
        super().__init__()
        self.op = op
        self.ksize = tuple(ksize)
        self.stride = tuple(stride)
        self.padding = padding
        self.global_pool = global_pool

    def extra_repr(self) -> str:
        if self.global_pool:
            return f"{self.op}, global"
        return f"{self.op}, ksize={self.ksize}, stride={self.stride}, padding={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool2d(
            x,
            is_max=self.op == "MaxPool",
            window=self.ksize,
            stride=self.stride,
            padding=self.padding,
            global_pool=self.global_pool,
        )


class Concat(TFOp):
    """ConcatV2 / Concat along a TF axis."""

    def __init__(self, op: str, dim: int) -> None:
        super().__init__()
        self.op = op
        self.dim = dim

    def extra_repr(self) -> str:
        return f"{self.op}, dim={self.dim}"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class MatMul(TFOp):
    """MatMul of a 2-D activation by a constant matrix: a linear layer without bias."""

    op = "MatMul"

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.contiguous())  # (out, in), as nn.Linear

    def extra_repr(self) -> str:
        return f"MatMul, {self.weight.shape[1]}->{self.weight.shape[0]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Elementwise(TFOp):
    """Add/AddV2/Sub/Mul/RealDiv/Maximum/Minimum with broadcasting; either operand may be a constant."""

    def __init__(self, op: str, constants: dict[int, torch.Tensor], mixed_layout: bool) -> None:
        super().__init__()
        self.op = op
        self.const_positions = sorted(constants)
        self.mixed_layout = mixed_layout  # a 4-D operand meets one of another rank: compute in TF layout
        for pos, value in constants.items():
            self.register_buffer(f"const{pos}", value)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        it = iter(xs)
        a, b = (getattr(self, f"const{i}") if i in self.const_positions else next(it) for i in range(2))
        return binary(_ELEMENTWISE[self.op], a, b, tf_layout=self.mixed_layout)


class Reshape(TFOp):
    """Reshape / Squeeze / ExpandDims in TF layout; a ``-1`` in the first place stands for the batch."""

    def __init__(self, op: str, shape: Sequence[int]) -> None:
        super().__init__()
        self.op = op
        self.shape = [int(v) for v in shape]

    def extra_repr(self) -> str:
        return f"{self.op}, shape={self.shape}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_tf(to_tf(x).reshape(self.shape))


class Squeeze(TFOp):
    """Squeeze of given TF axes."""

    op = "Squeeze"

    def __init__(self, axes: Sequence[int]) -> None:
        super().__init__()
        self.axes = sorted(axes, reverse=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = to_tf(x)
        for a in self.axes:
            y = y.squeeze(a)
        return from_tf(y)


class Reduce(TFOp):
    """Mean / Sum / Max over TF axes."""

    def __init__(self, op: str, axes: Sequence[int], keep_dims: bool) -> None:
        super().__init__()
        self.op = op
        self.axes = sorted(set(axes))
        self.keep_dims = keep_dims

    def extra_repr(self) -> str:
        return f"{self.op}, axes={self.axes}, keep_dims={self.keep_dims}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_tf_axes(x, _REDUCTIONS[self.op], self.axes, self.keep_dims)


class Softmax(TFOp):
    """Softmax over the last TF axis."""

    op = "Softmax"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=last_tf_dim(x))


class Pad(TFOp):
    """Pad / PadV2 / MirrorPad (REFLECT) with constant NHWC paddings."""

    def __init__(self, op: str, paddings: np.ndarray, value: float = 0.0, mode: str = "constant") -> None:
        super().__init__()
        self.op = op
        self.value = value
        self.mode = mode
        self.pads = torch_pads(paddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad(x, self.pads, self.value, self.mode)


class BatchNorm(TFOp):
    """FusedBatchNorm(V3) in inference mode: ``(x − mean) / sqrt(var + eps) · scale + offset``."""

    def __init__(self, op: str, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.op = op
        self.scale = nn.Parameter(scale)
        self.shift = nn.Parameter(shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


# --------------------------------------------------------------------------------------------------
# The graph executor
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    node: str  # graph node name (its output is this step's result)
    module: str  # child module name (the node name, with '.' replaced)
    inputs: tuple[str, ...]  # dynamic input nodes, in operand order


class TFGraphNet(nn.Module):
    """A converted graph: op modules named after their nodes, run in topological order.

    ``forward(x)`` takes the input node's tensor (4-D: NCHW) and returns the output node's tensor.
    """

    def __init__(self, ops: dict[str, nn.Module], steps: Sequence[_Step], input_node: str, output_node: str) -> None:
        super().__init__()
        for name, module in ops.items():
            self.add_module(name, module)
        self._steps = list(steps)
        self.input_node = input_node
        self.output_node = output_node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_node: x}
        for step in self._steps:
            env[step.node] = self._modules[step.module](*(env[t] for t in step.inputs))
        return env[self.output_node]

    def subgraph(self, input_node: str, output_node: str) -> TFGraphNet:
        """The part of this graph computing ``output_node`` from ``input_node`` alone (shares the modules).

        Raises ``ValueError`` naming a needed node that ``input_node`` does not determine.
        """
        producer = {s.node: i for i, s in enumerate(self._steps)}
        try:
            needed = needed_steps([s.inputs for s in self._steps], producer, [output_node], {input_node})
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        steps = [self._steps[i] for i in needed]
        return TFGraphNet({s.module: self._modules[s.module] for s in steps}, steps, input_node, output_node)

    def steps(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(node, module name, dynamic input nodes) per op, in execution order."""
        return [(s.node, s.module, s.inputs) for s in self._steps]


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


@dataclass
class ConvertedGraph:
    """The torch network plus what the adapter needs: static NHWC shapes at the native size, node order."""

    net: TFGraphNet
    shapes: dict[str, tuple[int | None, ...] | None]
    order: list[str]  # converted (dynamic) nodes, in execution order
    module_names: dict[str, str]


def _import(graph_def: Any, input_node: str, input_size: int) -> tuple[Any, Any]:
    """Import ``graph_def`` into a fresh ``tf.Graph`` with ``input_node`` fed by a (None, S, S, 3) float
    placeholder; returns (graph, placeholder)."""
    tf = _tf()
    graph = tf.Graph()
    with graph.as_default():
        ph = tf.compat.v1.placeholder(tf.float32, [None, input_size, input_size, 3], name="autointerp_input__")
        tf.graph_util.import_graph_def(graph_def, input_map={f"{input_node}:0": ph}, name="")
    return graph, ph


def _unsupported(source: str, node: Any, why: str = "") -> UserError:
    detail = f" ({why})" if why else ""
    return UserError(
        f"{source}: node {node.name!r} has op {node.op!r}{detail}, which the tf_graphdef adapter cannot convert; "
        f"supported ops: {', '.join(sorted(SUPPORTED_OPS))}"
    )


def convert_graphdef(
    graph_def: Any, input_node: str, output_node: str, input_size: int, *, source: str = "graph"
) -> ConvertedGraph:
    """Convert the nodes computing ``output_node`` from ``input_node`` into a :class:`TFGraphNet`.

    ``input_size``: the square image size at which static shapes are inferred (global pooling, reshapes).
    An op outside :data:`SUPPORTED_OPS` (or a supported op used in an unsupported way) raises a one-line
    :class:`UserError` naming the op and the node.
    """
    tf = _tf()
    nodes = {n.name: n for n in graph_def.node}
    for name in (input_node, output_node):
        if name not in nodes:
            raise UserError(f"{source}: no node named {name!r} in the graph")
    order = _ancestors(nodes, [output_node])
    if input_node not in order:
        raise UserError(f"{source}: output node {output_node!r} does not depend on input node {input_node!r}")
    # dynamic = depends on the input; everything else is a constant (folded below)
    # shape arithmetic on the input (Keras' Flatten: Shape -> StridedSlice -> Pack -> Reshape) is not
    # converted: a Reshape reading it uses TensorFlow's inferred static shape instead
    dynamic: set[str] = set()
    shape_only: set[str] = set()
    for name in order:
        node = nodes[name]
        reads = [_source(r)[0] for r in _data_inputs(node)]
        if name == input_node:
            dynamic.add(name)
        elif any(s in dynamic for s in reads) and node.op in ("Shape", "Size", "Rank"):
            shape_only.add(name)
        elif any(s in shape_only for s in reads) and not any(s in dynamic for s in reads):
            shape_only.add(name)
        elif any(s in dynamic for s in reads):
            dynamic.add(name)
        elif node.op == "Placeholder":
            raise UserError(f"{source}: node {name!r} is a second Placeholder the output depends on; set model.input")
    for name in order:
        node = nodes[name]
        if name in dynamic and name != input_node and node.op not in SUPPORTED_OPS:
            raise _unsupported(source, node)
    graph, _ = _import(graph_def, input_node, input_size)
    shapes: dict[str, tuple[int | None, ...] | None] = {}
    for name in dynamic:
        t = graph.get_tensor_by_name(f"{name}:0") if name != input_node else None
        if t is None:
            shapes[name] = (None, input_size, input_size, 3)
        else:
            shapes[name] = tuple(t.shape.as_list()) if t.shape.rank is not None else None
    # constants read by dynamic nodes: Const nodes directly, other constant sub-graphs evaluated by TF
    wanted = {_source(r)[0] for n in dynamic if n != input_node for r in _data_inputs(nodes[n])}
    wanted = sorted(wanted - dynamic - shape_only)
    const: dict[str, np.ndarray] = {}
    to_run = []
    for name in wanted:
        if nodes[name].op == "Const":
            const[name] = tf.make_ndarray(nodes[name].attr["value"].tensor)
        else:
            to_run.append(name)
    if to_run:
        with tf.compat.v1.Session(graph=graph) as sess:
            values = sess.run([graph.get_tensor_by_name(f"{n}:0") for n in to_run])
        const.update(zip(to_run, (np.asarray(v) for v in values), strict=True))

    modules: dict[str, nn.Module] = {}
    module_names: dict[str, str] = {}
    steps: list[_Step] = []
    converted: list[str] = []
    for name in order:
        if name not in dynamic or name == input_node:
            continue
        node = nodes[name]
        refs = [_source(r) for r in _data_inputs(node)]
        for src, index in refs:
            if index != 0 and src in dynamic:
                raise _unsupported(source, node, f"reads output {index} of {src!r}")
        srcs = [s for s, _ in refs]
        dyn = [s for s in srcs if s in dynamic]
        rank = len(shapes[name]) if shapes[name] is not None else None
        in_rank = len(shapes[dyn[0]]) if dyn and shapes[dyn[0]] is not None else None

        def need_const(i: int, what: str, node: Any = node, srcs: list[str] = srcs) -> np.ndarray:
            if i >= len(srcs) or srcs[i] not in const:
                raise _unsupported(source, node, f"its {what} must be a constant")
            return const[srcs[i]]

        fmt = _attr_str(node, "data_format", "NHWC")
        if fmt not in ("NHWC", "") and node.op in ("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "BiasAdd"):
            raise _unsupported(source, node, f"data_format {fmt}")
        op = node.op
        module: nn.Module
        if op in _PASSTHROUGH:
            module = Passthrough(op)
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            w = need_const(1, "filter").astype(np.float32)
            strides = _attr_ints(node, "strides", [1, 1, 1, 1])
            dil = _attr_ints(node, "dilations", [1, 1, 1, 1])
            padding = _attr_str(node, "padding", "VALID")
            explicit = _attr_ints(node, "explicit_paddings", [0] * 8)
            if op == "Conv2D":
                weight = torch.from_numpy(w.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
                groups = 1
            else:  # (H, W, C, M) -> (C*M, 1, H, W): output channel c*M + m, as TF orders them
                kh, kw, c, m = w.shape
                weight = torch.from_numpy(w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw).copy())
                groups = c
            module = Conv(
                op,
                weight,
                stride=(strides[1], strides[2]),
                dilation=(dil[1], dil[2]),
                padding=padding,
                groups=groups,
                explicit=(explicit[4], explicit[5], explicit[2], explicit[3]),
            )
        elif op == "BiasAdd":
            module = BiasAdd(torch.from_numpy(need_const(1, "bias").astype(np.float32).reshape(-1)))
        elif op in _ACTIVATIONS:
            module = Activation(op, _attr_float(node, "alpha", 0.2))
        elif op == "LRN":
            module = LRN(
                int(node.attr["depth_radius"].i) if "depth_radius" in node.attr else 5,
                _attr_float(node, "bias", 1.0),
                _attr_float(node, "alpha", 1.0),
                _attr_float(node, "beta", 0.5),
            )
        elif op in ("MaxPool", "AvgPool"):
            ksize = _attr_ints(node, "ksize", [1, 1, 1, 1])
            strides = _attr_ints(node, "strides", [1, 1, 1, 1])
            if ksize[0] != 1 or ksize[3] != 1:
                raise _unsupported(source, node, "pooling over the batch or channel axis")
            padding = _attr_str(node, "padding", "VALID")
            in_shape = shapes[dyn[0]]
            global_pool = (
                padding == "VALID"
                and in_shape is not None
                and tuple(in_shape[1:3]) == (ksize[1], ksize[2])
                and rank == 4
                and tuple(shapes[name][1:3]) == (1, 1)
            )
            module = Pool(
                op,
                ksize=(ksize[1], ksize[2]),
                stride=(strides[1], strides[2]),
                padding=padding,
                global_pool=global_pool,
            )
        elif op in ("ConcatV2", "Concat"):
            values = srcs[:-1] if op == "ConcatV2" else srcs[1:]
            axis = int(need_const(len(srcs) - 1 if op == "ConcatV2" else 0, "axis"))
            if any(v not in dynamic for v in values) or rank is None:
                raise _unsupported(source, node, "constant operands or unknown rank")
            axis %= rank
            module = Concat(op, NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis)
            dyn = values
        elif op == "MatMul":
            if node.attr["transpose_a"].b or len(dyn) != 1 or srcs[0] not in dynamic:
                raise _unsupported(source, node, "only activation × constant matrix")
            w = need_const(1, "matrix").astype(np.float32)
            weight = w if node.attr["transpose_b"].b else w.T
            module = MatMul(torch.from_numpy(np.ascontiguousarray(weight)))
        elif op in _ELEMENTWISE:
            if len(srcs) != 2:
                raise _unsupported(source, node, f"{len(srcs)} operands")
            ranks = [len(shapes[s]) if s in dynamic and shapes[s] is not None else None for s in srcs]
            dyn_rank = max((r for r in ranks if r is not None), default=0)
            constants = {i: const_like_nchw(const[s], dyn_rank) for i, s in enumerate(srcs) if s not in dynamic}
            mixed = len({r for r in ranks if r is not None}) > 1 and dyn_rank == 4
            module = Elementwise(op, constants, mixed)
        elif op in ("Reshape", "ExpandDims"):
            if op == "Reshape" and srcs[1] in const:
                shape = [int(v) for v in const[srcs[1]].reshape(-1)]
                if -1 not in shape and shapes[name] is not None and shapes[name][0] is None:
                    shape[0] = -1  # a literal batch size in a batch-agnostic graph
            else:
                shape = _static_shape(shapes[name], source, node)
            module = Reshape(op, shape)
            dyn = [srcs[0]]
        elif op == "Squeeze":
            dims = _attr_ints(node, "squeeze_dims", [])
            if dims and in_rank is not None:
                module = Squeeze([d % in_rank for d in dims])
            else:
                module = Reshape(op, _static_shape(shapes[name], source, node))
        elif op in _REDUCTIONS:
            axes = need_const(1, "axes").reshape(-1)
            if in_rank is None:
                raise _unsupported(source, node, "unknown input rank")
            keep = bool(node.attr["keep_dims"].b) if "keep_dims" in node.attr else False
            module = Reduce(op, [int(a) % in_rank for a in axes], keep)
            dyn = [srcs[0]]
        elif op == "Softmax":
            module = Softmax()
        elif op in ("Pad", "PadV2", "MirrorPad"):
            paddings = need_const(1, "paddings").astype(np.int64).reshape(-1, 2)
            value = float(need_const(2, "constant value").reshape(-1)[0]) if op == "PadV2" else 0.0
            mode = "constant"
            if op == "MirrorPad":
                if _attr_str(node, "mode") != "REFLECT":
                    raise _unsupported(source, node, f"mode {_attr_str(node, 'mode')}")
                mode = "reflect"
            module = Pad(op, paddings, value, mode)
            dyn = [srcs[0]]
        elif op in ("FusedBatchNorm", "FusedBatchNormV3"):
            if "is_training" in node.attr and node.attr["is_training"].b:
                raise _unsupported(source, node, "is_training=True")
            gamma, beta, mean, var = (need_const(i, "statistics").astype(np.float64) for i in (1, 2, 3, 4))
            eps = _attr_float(node, "epsilon", 1e-3)
            scale = gamma / np.sqrt(var + eps)
            shift = beta - mean * scale
            module = BatchNorm(
                op, torch.from_numpy(scale.astype(np.float32)), torch.from_numpy(shift.astype(np.float32))
            )
            dyn = [srcs[0]]
        else:  # pragma: no cover - SUPPORTED_OPS and the branches above are kept in sync
            raise _unsupported(source, node)
        if op in ("Conv2D", "DepthwiseConv2dNative", "BiasAdd", "MatMul") or op in _ACTIVATIONS:
            dyn = [srcs[0]]
        if any(s not in dynamic for s in dyn):
            raise _unsupported(source, node, "an operand that should be an activation is a constant")
        mname = name.replace(".", "_")
        if mname in modules:
            mname = f"{mname}_{len(modules)}"
        modules[mname] = module
        module_names[name] = mname
        steps.append(_Step(name, mname, tuple(dyn)))
        converted.append(name)
    net = TFGraphNet(modules, steps, input_node, output_node)
    net.requires_grad_(False)  # an inspection model: gradients flow to the input, not the weights
    return ConvertedGraph(net=net, shapes=shapes, order=converted, module_names=module_names)


def _static_shape(shape: tuple[int | None, ...] | None, source: str, node: Any) -> list[int]:
    """TF's inferred output shape with the batch as -1 (the node's shape input depends on the batch)."""
    if shape is None or any(s is None for s in shape[1:]):
        raise _unsupported(source, node, "a shape TensorFlow cannot infer statically")
    return [-1 if s is None else int(s) for s in shape]


# --------------------------------------------------------------------------------------------------
# Reference execution and the adapter
# --------------------------------------------------------------------------------------------------


def run_graphdef(
    graph_def: Any, inputs: np.ndarray, input_node: str, outputs: Sequence[str], batch_size: int = 16
) -> list[np.ndarray]:
    """Run the graph with TensorFlow: ``inputs`` (N, H, W, 3) float32 as the graph expects them (already
    preprocessed, NHWC); returns the values of the ``outputs`` nodes (4-D ones NHWC), batch by batch."""
    tf = _tf()
    inputs = np.asarray(inputs, dtype=np.float32)
    graph, ph = _import(graph_def, input_node, int(inputs.shape[1]))
    tensors = [graph.get_tensor_by_name(f"{n}:0") for n in outputs]
    parts: list[list[np.ndarray]] = [[] for _ in outputs]
    with tf.compat.v1.Session(graph=graph) as sess:
        for start in range(0, len(inputs), batch_size):
            values = sess.run(tensors, {ph: inputs[start : start + batch_size]})
            for part, v in zip(parts, values, strict=True):
                part.append(np.asarray(v))
    return [np.concatenate(p) for p in parts]


class _Affine(nn.Module):
    """Images in [0, 1] -> the graph's pixel range (and RGB -> BGR when asked)."""

    def __init__(self, lo: float, hi: float, bgr: bool) -> None:
        super().__init__()
        self.lo, self.hi, self.bgr = lo, hi, bgr

    def extra_repr(self) -> str:
        return f"x * {self.hi - self.lo:g} + {self.lo:g}" + (", RGB->BGR" if self.bgr else "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        return x * (self.hi - self.lo) + self.lo


def detect_preset(graph_def: Any) -> str | None:
    """The name of the :data:`PRESETS` entry whose signature nodes are all in the graph, else None."""
    names = {n.name for n in graph_def.node}
    for key, preset in PRESETS.items():
        if all(s in names for s in preset["signature"]):
            return key
    return None


class TFGraphAdapter(ModelAdapter):
    """A frozen TensorFlow image classifier converted to torch (see the module docstring).

    Options: ``input``/``output`` (node names; default: the only Placeholder, and the graph's only sink
    with a trailing Softmax/Identity dropped), ``value_range`` (the pixel range the graph expects, Lucid's
    ``image_value_range``), ``input_size`` (default: the placeholder's, else 224), ``bgr`` (channels in
    BGR order), ``background`` (output 0 is a background class; default: when there are 1001 outputs),
    ``preset`` (``"auto"``: detect a known graph, see :data:`PRESETS`; ``"none"``; or a preset name).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        input: str | None = None,
        output: str | None = None,
        value_range: Sequence[float] | None = None,
        input_size: int | None = None,
        bgr: bool = False,
        background: bool | None = None,
        preset: str | None = "auto",
        graph_def: Any = None,
    ) -> None:
        self.path = Path(path)
        graph_def = read_graphdef(self.path) if graph_def is None else graph_def
        self.graph_def = graph_def
        src = str(self.path)
        if preset in (None, "auto"):
            preset = detect_preset(graph_def)
        elif preset == "none":
            preset = None
        elif preset not in PRESETS:
            raise UserError(f"unknown tf_graphdef preset {preset!r}; valid: auto, none, {', '.join(PRESETS)}")
        self.preset = preset
        conv = PRESETS[preset] if preset else {}
        nodes = {n.name: n for n in graph_def.node}
        input = input or conv.get("input") or self._only_placeholder(graph_def, src)
        if input not in nodes or nodes[input].op != "Placeholder":
            raise UserError(f"{src}: model.input {input!r} is not a Placeholder node of the graph")
        dtype = nodes[input].attr["dtype"].type if "dtype" in nodes[input].attr else 1
        if dtype != 1:  # DT_FLOAT
            raise UserError(f"{src}: input {input!r} is not a float32 Placeholder (TensorFlow dtype enum {dtype})")
        output = output or conv.get("output") or self._only_sink(graph_def, src)
        output = self._drop_softmax(nodes, output)
        value_range = value_range if value_range is not None else conv.get("value_range")
        if value_range is None:
            raise UserError(
                f"{src}: set model.value_range to the pixel range the graph expects (Lucid's image_value_range, "
                "e.g. [0, 1], [-1, 1] or [0, 255])"
            )
        lo, hi = (float(v) for v in value_range)
        if not math.isfinite(lo) or not math.isfinite(hi) or hi == lo:
            raise UserError(f"{src}: model.value_range must be two different finite numbers, got {list(value_range)}")
        size = input_size or conv.get("input_size") or self._placeholder_size(nodes[input]) or 224
        converted = convert_graphdef(graph_def, input, output, int(size), source=src)
        self.input_node, self.logits_node = input, output
        self.net = converted.net
        self.shapes = converted.shapes
        self._module_names = converted.module_names
        self._affine = _Affine(lo, hi, bool(bgr))
        super().__init__(Logits(self.net), name=name or self.path.stem)
        self.input_size = int(size)
        out_shape = converted.shapes[output]
        if out_shape is None or any(s is None for s in out_shape[1:]):
            raise UserError(f"{src}: the shape of output node {output!r} is unknown at {size}x{size}")
        self.num_outputs = int(np.prod(out_shape[1:]))
        mask = None
        if "valid_outputs" in conv and self.num_outputs == 1008:
            lo_i, hi_i = conv["valid_outputs"]
            mask = torch.zeros(self.num_outputs, dtype=torch.bool)
            mask[lo_i:hi_i] = True
        elif background or (background is None and self.num_outputs == 1001):
            mask = torch.ones(self.num_outputs, dtype=torch.bool)
            mask[0] = False
        self._valid_outputs = mask
        self._layers = {
            n: int(s[3])
            for n in converted.order
            if (s := converted.shapes[n]) is not None and len(s) == 4 and s[3] is not None
        }
        self._nodes = {n: n for n in self._layers}  # layer name -> graph node
        self._cut_layers: list[str] | None = None

    def rename_layers(self, names: dict[str, str]) -> None:
        """Expose the layers as ``names`` (public name -> graph node, in order), e.g. a Keras model's layer names;
        nodes not named there are no longer listed."""
        missing = [node for node in names.values() if node not in self._nodes.values()]
        if missing:
            raise ValueError(f"not 4-D layer nodes of the graph: {missing}")
        channels = {node: c for node, c in zip(self._nodes.values(), self._layers.values(), strict=True)}
        self._layers = {name: channels[node] for name, node in names.items()}
        self._nodes = dict(names)
        self._cut_layers = None

    # -- defaults for input and output --------------------------------------------------------
    @staticmethod
    def _only_placeholder(graph_def: Any, src: str) -> str:
        found = [n.name for n in graph_def.node if n.op == "Placeholder"]
        if len(found) != 1:
            raise UserError(f"{src}: set model.input to the image Placeholder; placeholders: {', '.join(found)}")
        return found[0]

    @staticmethod
    def _only_sink(graph_def: Any, src: str) -> str:
        used = {_source(r)[0] for n in graph_def.node for r in _data_inputs(n)}
        skip = {"Const", "Placeholder", "NoOp", "Assert"}
        sinks = [n.name for n in graph_def.node if n.name not in used and n.op not in skip]
        if len(sinks) != 1:
            raise UserError(f"{src}: set model.output to the logits node; the graph's outputs: {', '.join(sinks)}")
        return sinks[0]

    @staticmethod
    def _drop_softmax(nodes: dict[str, Any], output: str) -> str:
        if output not in nodes:
            raise UserError(f"model.output {output!r} is not a node of the graph")
        seen_softmax = False
        name = output
        while nodes[name].op in ("Softmax", *_PASSTHROUGH) and _data_inputs(nodes[name]):
            seen_softmax = seen_softmax or nodes[name].op == "Softmax"
            name = _source(_data_inputs(nodes[name])[0])[0]
        return name if seen_softmax else output

    @staticmethod
    def _placeholder_size(node: Any) -> int | None:
        dims = [d.size for d in node.attr["shape"].shape.dim] if "shape" in node.attr else []
        return int(dims[1]) if len(dims) == 4 and dims[1] > 0 and dims[1] == dims[2] else None

    # -- contract ------------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the graph's value range (``x·(hi − lo) + lo``)."""
        return self._affine(x)

    def layers(self) -> dict[str, int]:
        return dict(self._layers)

    def layer_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) of every layer at the native input size."""
        shapes = {n: self.shapes[self._nodes[n]] for n in self._layers}
        return {n: (c, int(shapes[n][1]), int(shapes[n][2])) for n, c in self._layers.items()}

    def cut_layers(self) -> list[str]:
        """Layers at which the graph splits cleanly: the tail needs nothing but this activation."""
        if self._cut_layers is None:
            cuts = []
            for layer in self._layers:
                try:
                    self.net.subgraph(self._nodes[layer], self.logits_node)
                except ValueError:
                    continue
                cuts.append(layer)
            self._cut_layers = cuts
        return list(self._cut_layers)

    def layer_module(self, layer: str) -> nn.Module | None:
        mname = self._module_names.get(self._nodes.get(layer, layer))
        return None if mname is None else getattr(self.net, mname)

    def head(self, layer: str) -> nn.Module:
        """Module: images in [0, 1] -> activation of ``layer`` (N, C, H, W)."""
        self.check_layer(layer)
        return nn.Sequential(self._affine, self.net.subgraph(self.input_node, self._nodes[layer])).eval()

    def tail(self, layer: str) -> nn.Module:
        """Module: activation of ``layer`` -> logits (N, num_outputs); ``layer`` must be a cut layer."""
        self.check_layer(layer)
        try:
            body = self.net.subgraph(self._nodes[layer], self.logits_node)
        except ValueError:
            raise UserError(
                f"layer {layer!r} of {self.path.name} is not a clean cut point (later ops also need "
                f"{self._crossing_node(self._nodes[layer])!r}); cut layers: {', '.join(self.cut_layers())}"
            ) from None
        return Logits(body).eval()

    def _crossing_node(self, cut: str) -> str:
        """The first node outside ``cut``'s downstream part that an op downstream of ``cut`` reads."""
        downstream = {cut}
        for node, _, inputs in self.net.steps():
            if any(t in downstream for t in inputs):
                downstream.add(node)
                for t in inputs:
                    if t not in downstream:
                        return t
        return self.input_node

    def run_tensorflow(self, x: torch.Tensor | np.ndarray, layer: str | None = None) -> np.ndarray:
        """TensorFlow's own result for images ``x`` (N, 3, S, S) in [0, 1]: the logits (N, num_outputs), or
        the activation of ``layer`` (N, C, H, W) — the reference for this torch model."""
        if layer is not None:
            self.check_layer(layer)
        with torch.no_grad():
            pre = self.preprocess(torch.as_tensor(np.asarray(x), dtype=torch.float32))
        out = run_graphdef(
            self.graph_def,
            pre.permute(0, 2, 3, 1).numpy(),
            self.input_node,
            [self._nodes[layer] if layer is not None else self.logits_node],
        )
        y = out[0]
        if layer is not None:
            return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y
        return y.reshape(len(y), -1)


def randomize_weights(net: nn.Module) -> None:
    """Re-initialise the converted weights in place like ``nn.Conv2d``/``nn.Linear`` do (random init)."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (Conv, MatMul)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            elif isinstance(module, BiasAdd):
                nn.init.uniform_(module.bias, -0.05, 0.05)


@register_model("tf_graphdef")
def create_tf_graphdef(
    weights: str | Path | None = None,
    pretrained: bool = True,
    *,
    name: str | None = None,
    input: str | None = None,
    output: str | None = None,
    value_range: Sequence[float] | None = None,
    input_size: int | None = None,
    bgr: bool = False,
    background: bool | None = None,
    preset: str | None = "auto",
) -> TFGraphAdapter:
    """A frozen TensorFlow GraphDef (``.pb``, Lucid's model zoo) converted to torch; alias ``lucid``.

    ``model: {name: tf_graphdef, weights: PATH.pb, options: {...}}``; options as :class:`TFGraphAdapter`.
    ``pretrained=False`` keeps the graph's architecture with random weights."""
    if weights is None:
        raise WeightsError(
            "model 'tf_graphdef' needs model.weights: the path of a frozen GraphDef .pb (Lucid's InceptionV1: "
            f"{LUCID_GRAPHS['inceptionv1']})"
        )
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"{path}: TensorFlow GraphDef file not found (model.weights); Lucid's model-zoo graphs are published "
            f"under https://storage.googleapis.com/modelzoo/vision/, InceptionV1 at {LUCID_GRAPHS['inceptionv1']}"
        )
    adapter = TFGraphAdapter(
        path,
        name=name,
        input=input,
        output=output,
        value_range=value_range,
        input_size=input_size,
        bgr=bgr,
        background=background,
        preset=preset,
    )
    if not pretrained:
        randomize_weights(adapter.net)
    return adapter


MODELS.register("lucid", create_tf_graphdef)
