"""TFLite image classifiers as torch models: dequantised float weights, named layers, head/tail cuts.

Edge-deployed ``.tflite`` classifiers are a common thing to audit, and they are the only real pretrained
ImageNet CNNs available offline here. This module reads the flatbuffer, rebuilds the graph as a torch
module with float weights, and wraps it in a :class:`~autointerp.models.base.ModelAdapter` registered as
``tflite``::

    adapter = create_model("tflite", weights="mobilenet_v2_1.0_224_quant.tflite")
    adapter.layers()            # {"Conv": 32, "expanded_conv_depthwise": 32, ..., "Conv_1": 1280, ...}
    acts = adapter.head("Conv_1")(x01)       # (N, 1280, 7, 7)
    logits = adapter.tail("Conv_1")(acts)    # (N, 1001), output 0 = background

**Parser.** The graph is read with the ``tflite`` package: the flatbuffer classes generated from TFLite's
own ``schema.fbs`` (maintained with TensorFlow's releases, pure Python, no TensorFlow). It exposes what a
converter needs and an interpreter does not: the operator list with each operator's builtin options
(padding mode, strides, dilation, fused activation, depth multiplier), tensor names, and per-channel
quantisation parameters with their quantised dimension. LiteRT's interpreter (``ai-edge-litert``) only
exposes tensors and a private operator listing without options, so it is used here as the *reference*:
:func:`run_tflite_interpreter` runs the original model for parity checks.

**Semantics.**

* Quantised constants are dequantised as ``(q - zero_point) * scale`` along the tensor's quantised
  dimension (per-channel conv weights), int32 biases included (their scale is input scale × weight scale).
  Activations are computed in float32; by default the int8 interpreter's rounding of every intermediate
  tensor is not simulated (results agree closely, not bit-for-bit). ``simulate_quantization=True`` rounds
  each quantised activation to its integer grid and range (straight-through gradients): closer to the
  deployed model on low-margin inputs, at some speed cost.
* 4-D tensors live in NCHW inside torch; TFLite's NHWC axes (MEAN, CONCATENATION, PAD, RESHAPE, ...) are
  mapped. TF ``SAME`` padding is reproduced exactly, including its asymmetric form (extra row/column at the
  bottom/right for even kernels or strided convolutions), and recomputed from the actual input size, so the
  feature extractor works at any resolution (feature visualisation renders smaller images).
* A pooling whose window covers the whole feature map at the model's native resolution (MobileNet's final
  7×7 ``AVERAGE_POOL_2D``) is treated as global pooling, so the network also runs at other resolutions.
* A trailing ``SOFTMAX`` is dropped: :meth:`TFLiteAdapter.forward` returns logits, as the contract asks.
* Fused activations: ReLU, ReLU6 and ReLU_N1_TO_1 are clamps (a fused TANH, which TFLite's own kernels
  ignore, is rejected); gradients flow through all ops.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autointerp.errors import UserError, WeightsError
from autointerp.extras import require
from autointerp.models.base import ModelAdapter, register_model
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
    "SUPPORTED_OPS",
    "OpSpec",
    "TFLiteAdapter",
    "TFLiteGraph",
    "TFLiteNet",
    "TensorSpec",
    "convert_tflite",
    "randomize_weights",
    "read_tflite",
    "run_tflite_interpreter",
]

# --------------------------------------------------------------------------------------------------
# Reading the flatbuffer
# --------------------------------------------------------------------------------------------------

_NP_DTYPES: dict[int, Any] = {
    0: np.float32,  # FLOAT32
    1: np.float16,  # FLOAT16
    2: np.int32,  # INT32
    3: np.uint8,  # UINT8
    4: np.int64,  # INT64
    6: np.bool_,  # BOOL
    7: np.int16,  # INT16
    9: np.int8,  # INT8
    10: np.float64,  # FLOAT64
}

_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclass
class TensorSpec:
    """One tensor of a TFLite graph: static shape (NHWC for images), type, quantisation, constant data."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0
    data: np.ndarray | None = None  # raw stored values (constants only), reshaped to ``shape``

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def is_quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0 and np.dtype(self.dtype).kind in "iu"

    def dequantize(self, values: np.ndarray | None = None) -> np.ndarray:
        """Float32 values of ``values`` (default: the constant data): ``(q - zero_point) * scale``."""
        q = self.data if values is None else values
        if q is None:
            raise ValueError(f"tensor {self.name!r} has no constant data")
        if not self.is_quantized:
            return np.asarray(q, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float64)
        zero = np.asarray(self.zero_point if self.zero_point is not None else 0, dtype=np.float64)
        if scale.size > 1:  # per-channel: broadcast along the quantised dimension
            shape = [1] * q.ndim
            shape[self.quantized_dimension] = scale.size
            scale = scale.reshape(shape)
            zero = np.broadcast_to(zero, (scale.size,)).reshape(shape) if zero.size > 1 else zero.reshape(())
        elif zero.size:
            zero = zero.reshape(())
        return ((q.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class OpSpec:
    """One operator: builtin name (e.g. ``CONV_2D``), tensor indices (-1 = absent optional), options."""

    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The main subgraph of a ``.tflite`` file, in execution order."""

    path: Path
    tensors: list[TensorSpec]
    ops: list[OpSpec]
    inputs: list[int]
    outputs: list[int]
    description: str = ""

    def producer(self) -> dict[int, int]:
        """tensor index -> index (in :attr:`ops`) of the op that writes it."""
        return {t: i for i, op in enumerate(self.ops) for t in op.outputs}


def _builtin_names() -> dict[int, str]:
    tflite = require("tflite", "tflite", "the tflite model adapter")

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _options(op: Any, kind: str) -> dict[str, Any]:
    """The builtin options of ``op`` that the converter uses, as a plain dict."""
    tflite = require("tflite", "tflite", "the tflite model adapter")

    table = op.BuiltinOptions()

    def load(cls: Any) -> Any:
        obj = cls()
        if table is not None:
            obj.Init(table.Bytes, table.Pos)
            return obj
        return None

    if kind == "CONV_2D":
        o = load(tflite.Conv2DOptions)
        if o is None:
            return {"padding": "VALID", "stride": (1, 1), "dilation": (1, 1), "activation": None}
        return {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor() or 1, o.DilationWFactor() or 1),
            "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN"),
        }
    if kind == "DEPTHWISE_CONV_2D":
        o = load(tflite.DepthwiseConv2DOptions)
        return {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor() or 1, o.DilationWFactor() or 1),
            "depth_multiplier": o.DepthMultiplier(),
            "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN"),
        }
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = load(tflite.Pool2DOptions)
        return {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN"),
        }
    if kind in ("ADD", "SUB", "MUL", "DIV", "CONCATENATION", "FULLY_CONNECTED"):
        cls = {
            "ADD": tflite.AddOptions,
            "SUB": tflite.SubOptions,
            "MUL": tflite.MulOptions,
            "DIV": tflite.DivOptions,
            "CONCATENATION": tflite.ConcatenationOptions,
            "FULLY_CONNECTED": tflite.FullyConnectedOptions,
        }[kind]
        o = load(cls)
        out: dict[str, Any] = {"activation": None if o is None else _ACTIVATIONS.get(o.FusedActivationFunction())}
        if kind == "CONCATENATION":
            out["axis"] = o.Axis() if o is not None else 0
        if kind == "FULLY_CONNECTED":
            out["keep_num_dims"] = bool(o.KeepNumDims()) if o is not None else False
        return out
    if kind == "RESHAPE":
        o = load(tflite.ReshapeOptions)
        if o is not None and o.NewShapeLength() > 0:
            return {"new_shape": [int(v) for v in o.NewShapeAsNumpy()]}
        return {}
    if kind == "SOFTMAX":
        o = load(tflite.SoftmaxOptions)
        return {"beta": float(o.Beta()) if o is not None else 1.0}
    if kind in ("MEAN", "SUM", "REDUCE_MAX"):
        o = load(tflite.ReducerOptions)
        return {"keep_dims": bool(o.KeepDims()) if o is not None else False}
    if kind == "SQUEEZE":
        o = load(tflite.SqueezeOptions)
        dims = [int(v) for v in o.SqueezeDimsAsNumpy()] if o is not None and o.SqueezeDimsLength() else []
        return {"squeeze_dims": dims}
    if kind == "LEAKY_RELU":
        o = load(tflite.LeakyReluOptions)
        return {"alpha": float(o.Alpha()) if o is not None else 0.2}
    return {}


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse the main subgraph of a ``.tflite`` file (missing/corrupt file → :class:`WeightsError`)."""
    tflite = require("tflite", "tflite", "the tflite model adapter")

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: TFLite model file not found")
    buf = path.read_bytes()
    try:
        if len(buf) < 8 or buf[4:8] != b"TFL3":
            raise ValueError("missing the TFL3 file identifier")
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() < 1:
            raise ValueError("no subgraphs")
        graph = model.Subgraphs(0)
        names = _builtin_names()
        tensors: list[TensorSpec] = []
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            dtype = _NP_DTYPES.get(t.Type())
            q = t.Quantization()
            scale = zero = None
            qdim = 0
            if q is not None and q.ScaleLength() > 0:
                scale = np.asarray(q.ScaleAsNumpy(), dtype=np.float32)
                zero = (
                    np.asarray(q.ZeroPointAsNumpy(), dtype=np.int64) if q.ZeroPointLength() else np.zeros(1, np.int64)
                )
                qdim = int(q.QuantizedDimension())
            data = None
            b = model.Buffers(t.Buffer()) if t.Buffer() > 0 else None
            if b is not None:
                raw: np.ndarray | None = None
                if b.DataLength() > 0:
                    raw = b.DataAsNumpy()
                elif b.Offset() > 1 and b.Size() > 0:  # large models keep buffers after the flatbuffer
                    raw = np.frombuffer(buf, dtype=np.uint8, count=int(b.Size()), offset=int(b.Offset()))
                if raw is not None:
                    if dtype is None:
                        raise ValueError(f"tensor {i} has unsupported type {t.Type()}")
                    data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
            tensors.append(
                TensorSpec(
                    index=i,
                    name=(t.Name() or b"").decode("utf-8", "replace"),
                    shape=shape,
                    dtype=dtype,
                    scale=scale,
                    zero_point=zero,
                    quantized_dimension=qdim,
                    data=data,
                )
            )
        ops: list[OpSpec] = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            kind = names.get(builtin, f"BUILTIN_{builtin}")
            if kind == "CUSTOM":
                kind = f"CUSTOM:{(code.CustomCode() or b'').decode()}"
            ops.append(
                OpSpec(
                    index=i,
                    kind=kind,
                    inputs=[int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else [],
                    outputs=[int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else [],
                    options=_options(op, kind),
                )
            )
        inputs = [int(v) for v in graph.InputsAsNumpy()]
        outputs = [int(v) for v in graph.OutputsAsNumpy()]
        description = (model.Description() or b"").decode("utf-8", "replace")
    except UserError:
        raise
    except Exception as exc:  # a truncated or foreign file makes the generated accessors fail anywhere
        raise WeightsError(f"{path}: not a readable TFLite model ({type(exc).__name__}: {exc})") from None
    return TFLiteGraph(path=path, tensors=tensors, ops=ops, inputs=inputs, outputs=outputs, description=description)


# --------------------------------------------------------------------------------------------------
# Torch operators (4-D tensors are NCHW; TFLite's axes refer to NHWC)
# --------------------------------------------------------------------------------------------------


def _activate(x: torch.Tensor, activation: str | None, inplace: bool = False) -> torch.Tensor:
    """Apply a fused activation; ``inplace`` only for fresh op outputs (halves memory traffic on CPU)."""
    if activation is None:
        return x
    if activation == "RELU":
        return F.relu(x, inplace=inplace)
    if activation == "RELU6":
        return F.hardtanh(x, 0.0, 6.0, inplace=inplace)
    if activation == "RELU_N1_TO_1":
        return F.hardtanh(x, -1.0, 1.0, inplace=inplace)
    if activation == "TANH":
        return torch.tanh(x)
    raise AssertionError(activation)  # rejected when building


def _fake_quant(x: torch.Tensor, scale: float, zero: float, qmin: float, qmax: float) -> torch.Tensor:
    """Round ``x`` to the tensor's integer grid and clamp to its range, as the quantised interpreter stores
    it; the gradient passes straight through (so inputs can still be optimised)."""
    q = ((torch.round(x / scale) + zero).clamp(qmin, qmax) - zero) * scale
    return x + (q - x).detach()


class TFLiteOp(nn.Module):
    """Base of the converted operators; ``kind`` is the TFLite builtin name."""

    kind: str = ""

    def extra_repr(self) -> str:
        return self.kind


class Conv2d(TFLiteOp):
    """CONV_2D / DEPTHWISE_CONV_2D with TF padding semantics and a fused activation."""

    def __init__(
        self,
        kind: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        padding: str,
        groups: int,
        activation: str | None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.weight = nn.Parameter(weight.contiguous(memory_format=torch.channels_last))
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.stride = tuple(stride)
        self.dilation = tuple(dilation)
        self.padding = padding
        self.groups = groups
        self.activation = activation

    def extra_repr(self) -> str:
        o, i, kh, kw = self.weight.shape
        return (
            f"{self.kind}, {i * self.groups}->{o}, kernel=({kh}, {kw}), stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, activation={self.activation}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: tuple[int, int] | int = 0
        if self.padding == "SAME":
            x, padding = conv_same_padding(x, self.weight.shape[-2:], self.stride, self.dilation)
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return _activate(y, self.activation, inplace=True)


class Pool2d(TFLiteOp):
    """AVERAGE_POOL_2D / MAX_POOL_2D; TF averages exclude padded cells. ``global_pool``: window = whole map."""

    def __init__(
        self,
        kind: str,
        *,
        filter: tuple[int, int],
        stride: tuple[int, int],
        padding: str,
        activation: str | None,
        global_pool: bool,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.filter = tuple(filter)
        self.stride = tuple(stride)
        self.padding = padding
        self.activation = activation
        self.global_pool = global_pool

    def extra_repr(self) -> str:
        if self.global_pool:
            return f"{self.kind}, global"
        return f"{self.kind}, filter={self.filter}, stride={self.stride}, padding={self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = pool2d(
            x,
            is_max=self.kind == "MAX_POOL_2D",
            window=self.filter,
            stride=self.stride,
            padding=self.padding,
            global_pool=self.global_pool,
        )
        return _activate(y, self.activation)


class Elementwise(TFLiteOp):
    """ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM (broadcasting; either operand may be a constant)."""

    def __init__(
        self, kind: str, *, constants: dict[int, torch.Tensor], activation: str | None, n_inputs: int = 2
    ) -> None:
        super().__init__()
        self.kind = kind
        self.activation = activation
        self.n_inputs = n_inputs
        self.const_positions = sorted(constants)
        for pos, value in constants.items():
            self.register_buffer(f"const{pos}", value)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        it = iter(xs)
        operands = [getattr(self, f"const{i}") if i in self.const_positions else next(it) for i in range(self.n_inputs)]
        a, b = operands
        mixed = a.dim() != b.dim() and 4 in (a.dim(), b.dim())  # mixed layouts: compute in TF layout
        return _activate(binary(_BINARY[self.kind], a, b, tf_layout=mixed), self.activation)


#: TFLite's binary ops by :data:`autointerp.models.nhwc.BINARY` name
_BINARY = {"ADD": "add", "SUB": "sub", "MUL": "mul", "DIV": "div", "MAXIMUM": "max", "MINIMUM": "min"}


class Activation(TFLiteOp):
    """RELU, RELU6, RELU_N1_TO_1, TANH, LOGISTIC, HARD_SWISH, LEAKY_RELU as a standalone op."""

    def __init__(self, kind: str, alpha: float = 0.2) -> None:
        super().__init__()
        self.kind = kind
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "LOGISTIC":
            return torch.sigmoid(x)
        if self.kind == "HARD_SWISH":
            return x * (x + 3.0).clamp(0.0, 6.0) / 6.0
        if self.kind == "LEAKY_RELU":
            return F.leaky_relu(x, self.alpha)
        return _activate(x, self.kind)


class Identity(TFLiteOp):
    """QUANTIZE / DEQUANTIZE between activations: a no-op in float."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Reduce(TFLiteOp):
    """MEAN / SUM / REDUCE_MAX over NHWC ``axes``."""

    def __init__(self, kind: str, axes: Sequence[int], keep_dims: bool, in_rank: int) -> None:
        super().__init__()
        self.kind = kind
        self.axes = sorted({a % in_rank for a in axes}) if in_rank else []
        self.keep_dims = keep_dims
        self.in_rank = in_rank

    def extra_repr(self) -> str:
        return f"{self.kind}, axes={self.axes}, keep_dims={self.keep_dims}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reduce_tf_axes(x, _REDUCTIONS[self.kind], self.axes, self.keep_dims)


#: TFLite's reductions by :data:`autointerp.models.nhwc.REDUCTIONS` name
_REDUCTIONS = {"MEAN": "mean", "SUM": "sum", "REDUCE_MAX": "max"}


class Reshape(TFLiteOp):
    """RESHAPE / SQUEEZE / EXPAND_DIMS in TF layout; the batch dimension follows the input's batch size."""

    def __init__(self, kind: str, new_shape: Sequence[int], batch_size: int) -> None:
        super().__init__()
        self.kind = kind
        self.new_shape = [int(v) for v in new_shape]
        self.batch_size = batch_size

    def extra_repr(self) -> str:
        return f"{self.kind}, shape={self.new_shape}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = list(self.new_shape)
        if shape and shape[0] == self.batch_size:
            shape[0] = x.shape[0]
        return from_tf(to_tf(x).reshape(shape))


class Softmax(TFLiteOp):
    """SOFTMAX over the last (TF) axis, with ``beta``."""

    kind = "SOFTMAX"

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x * self.beta, dim=last_tf_dim(x))


class Concatenation(TFLiteOp):
    """CONCATENATION along a TF axis (constant operands allowed)."""

    kind = "CONCATENATION"

    def __init__(self, axis: int, rank: int, activation: str | None, constants: dict[int, torch.Tensor], n: int):
        super().__init__()
        axis %= rank
        self.dim = NHWC_TO_NCHW_AXIS[axis] if rank == 4 else axis
        self.activation = activation
        self.n = n
        self.const_positions = sorted(constants)
        for pos, value in constants.items():
            self.register_buffer(f"const{pos}", value)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        it = iter(xs)
        parts = [getattr(self, f"const{i}") if i in self.const_positions else next(it) for i in range(self.n)]
        n = xs[0].shape[0] if xs else 1
        parts = [p.expand(n, *p.shape[1:]) if p.dim() and p.shape[0] == 1 and n != 1 else p for p in parts]
        return _activate(torch.cat(parts, dim=self.dim), self.activation)


class Pad(TFLiteOp):
    """PAD / PADV2 / MIRROR_PAD with constant NHWC paddings."""

    def __init__(self, kind: str, paddings: np.ndarray, value: float = 0.0, mode: str = "constant") -> None:
        super().__init__()
        self.kind = kind
        self.value = value
        self.mode = mode
        self.pads = torch_pads(paddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad(x, self.pads, self.value, self.mode)


class FullyConnected(TFLiteOp):
    """FULLY_CONNECTED: flattens the input (TF layout) to (-1, in_features), then a linear layer."""

    kind = "FULLY_CONNECTED"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None, keep_dims: bool):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.activation = activation
        self.keep_dims = keep_dims

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.weight.shape[1]}->{self.weight.shape[0]}, activation={self.activation}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = to_tf(x)
        if self.keep_dims:
            y = F.linear(xt, self.weight, self.bias)
            return _activate(from_tf(y), self.activation)
        y = F.linear(xt.reshape(-1, self.weight.shape[1]), self.weight, self.bias)
        return _activate(y, self.activation)


# --------------------------------------------------------------------------------------------------
# The graph executor
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    name: str  # module name
    inputs: tuple[int, ...]  # dynamic (non-constant) input tensors, in operand order
    outputs: tuple[int, ...]


class TFLiteNet(nn.Module):
    """A converted TFLite (sub)graph: named op modules run in TFLite's execution order.

    ``forward(*inputs)`` takes the tensors listed in :attr:`input_ids` (4-D ones NCHW) and returns the
    tensor(s) of :attr:`output_ids`. Each op is a child module named after its output tensor
    (:attr:`tensor_names`), so hooks and ``named_modules()`` see the TFLite layers by name.
    """

    def __init__(
        self,
        ops: dict[str, nn.Module],
        steps: Sequence[_Step],
        input_ids: Sequence[int],
        output_ids: Sequence[int],
        tensor_names: dict[int, str],
        tensor_shapes: dict[int, tuple[int, ...]],
        activation_quant: dict[int, tuple[float, float, float, float]] | None = None,
        simulate_quantization: bool = False,
    ) -> None:
        super().__init__()
        for name, module in ops.items():
            self.add_module(name, module)
        self._steps = list(steps)
        self.input_ids = list(input_ids)
        self.output_ids = list(output_ids)
        self.tensor_names = dict(tensor_names)
        self.tensor_shapes = dict(tensor_shapes)
        #: tensor id -> (scale, zero_point, qmin, qmax) of the quantised activation tensors
        self.activation_quant = dict(activation_quant or {})
        #: round every quantised activation to its int grid, as the int8 interpreter does (see _fake_quant)
        self.simulate_quantization = simulate_quantization

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.input_ids):
            raise ValueError(f"expected {len(self.input_ids)} input tensor(s), got {len(inputs)}")
        # Inside, 4-D tensors are kept channels-last in memory (still indexed N, C, H, W): oneDNN's
        # depthwise and 1x1 convolutions are several times faster on CPU that way. Outputs are returned
        # in the standard contiguous layout.
        env: dict[int, torch.Tensor] = {
            t: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
            for t, x in zip(self.input_ids, inputs, strict=True)
        }
        quant = self.activation_quant if self.simulate_quantization else {}
        for t in self.input_ids:
            if t in quant:
                env[t] = _fake_quant(env[t], *quant[t])
        for step in self._steps:
            result = self._modules[step.name](*(env[t] for t in step.inputs))
            t = step.outputs[0]
            env[t] = _fake_quant(result, *quant[t]) if t in quant else result
        outs = tuple(env[t].contiguous() for t in self.output_ids)
        return outs[0] if len(outs) == 1 else outs

    def subgraph(self, input_ids: Sequence[int], output_ids: Sequence[int]) -> TFLiteNet:
        """The part of this graph computing ``output_ids`` from ``input_ids`` (shares the op modules).

        Raises ``ValueError`` naming a needed tensor that neither ``input_ids`` nor the graph provides.
        """
        producer = {t: i for i, s in enumerate(self._steps) for t in s.outputs}
        try:
            needed = needed_steps([s.inputs for s in self._steps], producer, output_ids, set(input_ids))
        except KeyError as exc:
            t = exc.args[0]
            raise ValueError(self.tensor_names.get(t, str(t))) from None
        steps = [self._steps[i] for i in needed]
        ops = {s.name: self._modules[s.name] for s in steps}
        return TFLiteNet(
            ops,
            steps,
            input_ids,
            output_ids,
            self.tensor_names,
            self.tensor_shapes,
            self.activation_quant,
            self.simulate_quantization,
        )

    def steps(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        """(module name, dynamic input tensor ids, output tensor ids) per op, in execution order."""
        return [(s.name, s.inputs, s.outputs) for s in self._steps]


SUPPORTED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "SUB",
    "MUL",
    "DIV",
    "MAXIMUM",
    "MINIMUM",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "MEAN",
    "SUM",
    "REDUCE_MAX",
    "RESHAPE",
    "SQUEEZE",
    "SOFTMAX",
    "CONCATENATION",
    "PAD",
    "PADV2",
    "MIRROR_PAD",
    "RELU",
    "RELU6",
    "RELU_N1_TO_1",
    "TANH",
    "LOGISTIC",
    "HARD_SWISH",
    "LEAKY_RELU",
    "QUANTIZE",
    "DEQUANTIZE",
)

_ACTIVATION_SUFFIXES = re.compile(
    r"^(Relu6?|Relu_?N1_?To_?1|Tanh|Sigmoid|BiasAdd|Conv2D(_Fold)?|depthwise_Fold|add_fold|mul_fold|"
    r"BatchNorm_Fold|FusedBatchNorm\w*|batchnorm|weights_quant|act_quant|FakeQuant\w*|MatMul|Identity\d*)$"
)


def _layer_path(tensor_name: str) -> list[str]:
    """Scope parts naming the layer that writes ``tensor_name``: the first of TFLite's ';'-joined fused
    names, without trailing op/fold suffixes (``MobilenetV2/Conv_1/Relu6;...`` -> ``MobilenetV2, Conv_1``)."""
    first = tensor_name.split(";")[0]
    parts = [p for p in first.split("/") if p]
    while len(parts) > 1 and (
        _ACTIVATION_SUFFIXES.match(parts[-1]) or (parts[-1] == "depthwise" and "depthwise" in parts[-2])
    ):  # a bare 'depthwise' is TF's op name only inside a depthwise scope ('.../depthwise/depthwise')
        parts.pop()
    return parts


def _sanitize(parts: Sequence[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]+", "_", "_".join(parts)).strip("_")
    if not name or name[0].isdigit():
        name = f"t_{name}"
    return name


def _layer_names(graph: TFLiteGraph) -> dict[int, str]:
    """Unique, identifier-like names for every op output tensor (common root scope removed)."""
    outs = [op.outputs[0] for op in graph.ops if op.outputs]
    paths = {t: _layer_path(graph.tensors[t].name) for t in outs}
    prefix: list[str] = []
    if paths:
        lists = list(paths.values())
        for parts in zip(*lists, strict=False):
            if all(p == parts[0] for p in parts):
                prefix.append(parts[0])
            else:
                break
        shortest = min(len(p) for p in lists)
        prefix = prefix[: max(shortest - 1, 0)]  # every name keeps at least one part
    names: dict[int, str] = {}
    used: set[str] = set()
    for t in outs:
        base = _sanitize(paths[t][len(prefix) :]) if paths[t] else f"op_{t}"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names[t] = name
    return names


def convert_tflite(graph: TFLiteGraph | str | Path) -> TFLiteNet:
    """Convert a TFLite graph (or file) to a :class:`TFLiteNet` with dequantised float32 weights.

    Unsupported operators raise a :class:`UserError` naming the op and listing :data:`SUPPORTED_OPS`.
    """
    if not isinstance(graph, TFLiteGraph):
        graph = read_tflite(graph)
    tensors = graph.tensors
    source = graph.path

    const: dict[int, np.ndarray] = {t.index: t.dequantize() for t in tensors if t.is_constant}
    names = _layer_names(graph)
    batch = tensors[graph.inputs[0]].shape[0] if tensors[graph.inputs[0]].shape else 1
    modules: dict[str, nn.Module] = {}
    steps: list[_Step] = []

    def fail(op: OpSpec, why: str) -> UserError:
        return UserError(f"{source}: operator {op.index} ({op.kind}) {why}")

    def need_const(op: OpSpec, pos: int, what: str) -> np.ndarray:
        t = op.inputs[pos] if pos < len(op.inputs) else -1
        if t < 0 or t not in const:
            raise fail(op, f"needs a constant {what} (input {pos}); computed {what}s are not supported")
        return const[t]

    def check_activation(op: OpSpec) -> str | None:
        act = op.options.get("activation")
        if act in ("TANH", "SIGN_BIT", "UNKNOWN"):  # TFLite's own kernels ignore fused TANH/SIGN_BIT
            raise fail(op, f"has an unsupported fused activation {act}")
        return act

    for op in graph.ops:
        kind = op.kind
        if kind == "DEQUANTIZE" and op.inputs[0] in const:  # e.g. float16 weights: fold into a constant
            const[op.outputs[0]] = const[op.inputs[0]].astype(np.float32)
            continue
        if kind not in SUPPORTED_OPS:
            raise UserError(
                f"{source}: operator {op.index} ({kind}) is not supported by the TFLite converter; "
                f"supported: {', '.join(SUPPORTED_OPS)}"
            )
        in_shapes = [tensors[t].shape if t >= 0 else () for t in op.inputs]
        rank = len(in_shapes[0]) if in_shapes else 0
        module: nn.Module
        dyn = [t for t in op.inputs if t >= 0 and t not in const]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = need_const(op, 1, "weight")
            b = const.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            if kind == "CONV_2D":  # OHWI -> OIHW
                weight = torch.from_numpy(np.array(w.transpose(0, 3, 1, 2)))
                groups = max(in_shapes[0][3] // w.shape[3], 1) if len(in_shapes[0]) == 4 else 1
            else:  # 1HW(C*m) -> (C*m)1HW, one group per input channel
                weight = torch.from_numpy(np.array(w.transpose(3, 0, 1, 2)))
                groups = in_shapes[0][3]
            bias = torch.from_numpy(np.array(b)) if b is not None else None
            module = Conv2d(
                kind,
                weight,
                bias,
                stride=op.options["stride"],
                dilation=op.options["dilation"],
                padding=op.options["padding"],
                groups=groups,
                activation=check_activation(op),
            )
            dyn = [op.inputs[0]]
        elif kind == "FULLY_CONNECTED":
            w = need_const(op, 1, "weight")
            b = const.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            module = FullyConnected(
                torch.from_numpy(np.array(w)),
                torch.from_numpy(np.array(b)) if b is not None else None,
                check_activation(op),
                op.options.get("keep_num_dims", False),
            )
            dyn = [op.inputs[0]]
        elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            h, w_ = in_shapes[0][1:3]
            fh, fw = op.options["filter"]
            out_hw = tensors[op.outputs[0]].shape[1:3]
            global_pool = (fh, fw) == (h, w_) and tuple(out_hw) == (1, 1)
            module = Pool2d(
                kind,
                filter=(fh, fw),
                stride=op.options["stride"],
                padding=op.options["padding"],
                activation=check_activation(op),
                global_pool=global_pool,
            )
        elif kind in ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM"):
            ranks = [len(s) for s in in_shapes]
            other_rank = max(r for t, r in zip(op.inputs, ranks, strict=True) if t not in const) if dyn else 0
            constants = {i: const_like_nchw(const[t], other_rank) for i, t in enumerate(op.inputs) if t in const}
            if not dyn:
                raise fail(op, "has only constant inputs (constant folding is not supported)")
            module = Elementwise(kind, constants=constants, activation=check_activation(op), n_inputs=2)
        elif kind in ("RELU", "RELU6", "RELU_N1_TO_1", "TANH", "LOGISTIC", "HARD_SWISH", "LEAKY_RELU"):
            module = Activation(kind, alpha=op.options.get("alpha", 0.2))
            dyn = [op.inputs[0]]
        elif kind in ("QUANTIZE", "DEQUANTIZE"):
            module = Identity(kind)
            dyn = [op.inputs[0]]
        elif kind in ("MEAN", "SUM", "REDUCE_MAX"):
            axes = need_const(op, 1, "axis list").astype(np.int64).reshape(-1).tolist()
            module = Reduce(kind, axes, op.options["keep_dims"], rank)
            dyn = [op.inputs[0]]
        elif kind in ("RESHAPE", "SQUEEZE"):
            out_shape = list(tensors[op.outputs[0]].shape)
            if kind == "RESHAPE":
                if len(op.inputs) > 1 and op.inputs[1] >= 0 and op.inputs[1] in const:
                    out_shape = const[op.inputs[1]].astype(np.int64).reshape(-1).tolist()
                elif op.options.get("new_shape"):
                    out_shape = list(op.options["new_shape"])
            module = Reshape(kind, out_shape, batch)
            dyn = [op.inputs[0]]
        elif kind == "SOFTMAX":
            module = Softmax(op.options.get("beta", 1.0))
        elif kind == "CONCATENATION":
            out_rank = len(tensors[op.outputs[0]].shape)
            constants = {i: const_like_nchw(const[t], out_rank) for i, t in enumerate(op.inputs) if t in const}
            module = Concatenation(op.options["axis"], out_rank, check_activation(op), constants, n=len(op.inputs))
        elif kind in ("PAD", "PADV2", "MIRROR_PAD"):
            paddings = need_const(op, 1, "padding list").astype(np.int64).reshape(rank, 2)
            value = 0.0
            if kind == "PADV2" and len(op.inputs) > 2 and op.inputs[2] in const:
                value = float(const[op.inputs[2]].reshape(-1)[0])
            mode = "constant"
            if kind == "MIRROR_PAD":
                raise fail(op, "is not supported yet (mirror padding)")
            module = Pad(kind, paddings, value, mode)
            dyn = [op.inputs[0]]
        else:  # pragma: no cover - SUPPORTED_OPS and the branches above are kept in sync
            raise fail(op, "has no converter")
        name = names[op.outputs[0]]
        modules[name] = module
        steps.append(_Step(name, tuple(dyn), tuple(op.outputs)))

    tensor_names = {t: n for t, n in names.items()}
    shapes = {t.index: t.shape for t in tensors}
    missing = [t for t in graph.outputs if t not in tensor_names and t not in graph.inputs]
    if missing:
        raise UserError(f"{source}: graph output {tensors[missing[0]].name!r} is not computed by any operator")
    act_quant = {}
    for t in tensors:
        if t.is_quantized and not t.is_constant and t.scale.size == 1:
            info = np.iinfo(t.dtype)
            zero = float(t.zero_point.reshape(-1)[0]) if t.zero_point is not None else 0.0
            act_quant[t.index] = (float(t.scale[0]), zero, float(info.min), float(info.max))
    return TFLiteNet(modules, steps, graph.inputs[:1], graph.outputs, tensor_names, shapes, act_quant)


# --------------------------------------------------------------------------------------------------
# The interpreter (reference) and the adapter
# --------------------------------------------------------------------------------------------------


def _input_affine(spec: TensorSpec, input_mean: float | None, input_std: float | None) -> tuple[float, float]:
    """(mul, add) such that the model's float input = x01 * mul + add.

    Quantised inputs: the pixel is the quantised value (uint8: x·255; int8: x·255 - 128), dequantised:
    ``(q - zero_point) * scale``. Float inputs: ``(x·255 - mean) / std`` with TFLite's image-classifier
    convention mean = std = 127.5 unless given.
    """
    if input_mean is not None or input_std is not None or not spec.is_quantized:
        mean = 127.5 if input_mean is None else float(input_mean)
        std = 127.5 if input_std is None else float(input_std)
        if std == 0:
            raise UserError("tflite model option 'input_std' must be non-zero")
        return 255.0 / std, -mean / std
    scale = float(spec.scale.reshape(-1)[0])
    zero = float(spec.zero_point.reshape(-1)[0]) if spec.zero_point is not None else 0.0
    shift = 128.0 if np.dtype(spec.dtype) == np.int8 else 0.0
    return 255.0 * scale, -(zero + shift) * scale


class _Affine(nn.Module):
    def __init__(self, mul: float, add: float) -> None:
        super().__init__()
        self.mul = mul
        self.add = add

    def extra_repr(self) -> str:
        return f"x * {self.mul:g} + {self.add:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mul + self.add


def run_tflite_interpreter(
    path: str | Path,
    images: np.ndarray,
    *,
    tensor: int | None = None,
    input_mean: float | None = None,
    input_std: float | None = None,
    num_threads: int | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """Run the original model with LiteRT's interpreter on ``images`` and return dequantised float32 outputs.

    ``images``: uint8 (N, H, W, 3) RGB at the model's input size. They are fed exactly as the adapter's
    :meth:`TFLiteAdapter.preprocess` maps them (uint8 pixels as-is for a uint8-quantised input). ``tensor``:
    index of an intermediate tensor to read instead of the graph output (4-D results stay NHWC).
    Returns an array (N, ...) without the interpreter's batch-1 dimension.
    """
    from autointerp.progress import Progress

    Interpreter = require("ai_edge_litert.interpreter", "tflite", "the TFLite interpreter").Interpreter

    path = Path(path)
    graph = read_tflite(path)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(
            f"run_tflite_interpreter: expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    with warnings.catch_warnings():  # keeping intermediate tensors is deliberate here (reading one of them)
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        interp = Interpreter(
            model_path=str(path), num_threads=num_threads, experimental_preserve_all_tensors=tensor is not None
        )
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    if tuple(inp["shape"][1:3]) != images.shape[1:3]:
        raise UserError(f"{path}: model input is {tuple(inp['shape'][1:3])}, images are {images.shape[1:3]}")
    spec = graph.tensors[graph.inputs[0]]
    mul, add = _input_affine(spec, input_mean, input_std)
    out_index = interp.get_output_details()[0]["index"] if tensor is None else int(tensor)
    out_spec = graph.tensors[out_index]
    results = []
    with Progress("tflite interpreter", len(images), "images") if show_progress else _nullcontext() as bar:
        for img in images:
            x = img[None].astype(np.float32) / 255.0 * mul + add
            if spec.is_quantized and np.dtype(inp["dtype"]).kind in "iu":
                s, z = inp["quantization"]
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / s + z), info.min, info.max)
            interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
            interp.invoke()
            raw = interp.get_tensor(out_index)
            results.append(out_spec.dequantize(raw)[0] if out_spec.is_quantized else raw[0].astype(np.float32))
            if bar is not None:
                bar.advance()
    return np.stack(results) if results else np.zeros((0,), np.float32)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class TFLiteAdapter(ModelAdapter):
    """A TFLite image classifier converted to torch (see the module docstring for the semantics).

    Layers are the 4-D op outputs, named after their TFLite tensors (``Conv_1``,
    ``expanded_conv_16_project``, ...). :meth:`head` works for every layer; :meth:`tail` needs a *cut
    layer* (:meth:`cut_layers`): one whose activation alone determines the logits (e.g. a MobileNetV2
    block output, not the projection inside a residual block).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        input_mean: float | None = None,
        input_std: float | None = None,
        background: bool | None = None,
        simulate_quantization: bool = False,
    ) -> None:
        graph = read_tflite(path)
        net = convert_tflite(graph)
        net.simulate_quantization = bool(simulate_quantization)
        self.graph = graph
        self.path = Path(path)
        self.net = net
        self.net.requires_grad_(False)  # an inspection model: gradients flow to inputs, not weights
        input_id = graph.inputs[0]
        in_shape = graph.tensors[input_id].shape
        if len(in_shape) != 4 or in_shape[3] != 3:
            raise UserError(f"{path}: expected an image classifier with an (1, H, W, 3) input, got {in_shape}")
        producer = graph.producer()
        logits_id = graph.outputs[0]
        # A trailing SOFTMAX (possibly followed by QUANTIZE/DEQUANTIZE) is dropped: the contract wants logits.
        while logits_id in producer and graph.ops[producer[logits_id]].kind in ("SOFTMAX", "QUANTIZE", "DEQUANTIZE"):
            logits_id = next(t for t in graph.ops[producer[logits_id]].inputs if t >= 0)
        self.input_id = input_id
        self.logits_id = logits_id
        self._mul, self._add = _input_affine(graph.tensors[input_id], input_mean, input_std)
        module = Logits(net.subgraph([input_id], [logits_id]))
        super().__init__(module, name=name or self.path.stem)
        self.input_size = int(in_shape[1])
        self.num_outputs = int(np.prod(graph.tensors[logits_id].shape[1:]))
        if background is None:
            background = self.num_outputs == 1001
        if background:
            mask = torch.ones(self.num_outputs, dtype=torch.bool)
            mask[0] = False
            self._valid_outputs = mask
        # layers: 4-D tensors the logits depend on (and the logits themselves), in execution order
        ancestors = {s[2][0] for s in self.module.body.steps()}
        self._layers: dict[str, int] = {}
        self._layer_ids: dict[str, int] = {}
        for _, _, outs in net.steps():
            t = outs[0]
            shape = graph.tensors[t].shape
            if t in ancestors and len(shape) == 4:
                self._layers[net.tensor_names[t]] = int(shape[3])
                self._layer_ids[net.tensor_names[t]] = t
        self._cut_layers: list[str] | None = None

    # -- contract ------------------------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the model's float input (for uint8 inputs: ``(x·255 - zero_point) · scale``)."""
        return x * self._mul + self._add

    def layers(self) -> dict[str, int]:
        return dict(self._layers)

    def layer_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) of every layer at the model's native input size."""
        out = {}
        for name, t in self._layer_ids.items():
            _, h, w, c = self.graph.tensors[t].shape
            out[name] = (int(c), int(h), int(w))
        return out

    def tensor_index(self, layer: str) -> int:
        """The TFLite tensor index of ``layer`` (e.g. for :func:`run_tflite_interpreter`)."""
        self.check_layer(layer)
        return self._layer_ids[layer]

    def cut_layers(self) -> list[str]:
        """Layers at which the graph splits cleanly: the tail needs nothing but this activation."""
        if self._cut_layers is None:
            cuts = []
            for name, t in self._layer_ids.items():
                try:
                    self.net.subgraph([t], [self.logits_id])
                except ValueError:
                    continue
                cuts.append(name)
            self._cut_layers = cuts
        return list(self._cut_layers)

    def head(self, layer: str) -> nn.Module:
        """Module: images in [0, 1] -> activation of ``layer`` (N, C, H, W)."""
        self.check_layer(layer)
        body = self.net.subgraph([self.input_id], [self._layer_ids[layer]])
        return nn.Sequential(_Affine(self._mul, self._add), body).eval()

    def tail(self, layer: str) -> nn.Module:
        """Module: activation of ``layer`` -> logits (N, num_outputs); ``layer`` must be a cut layer."""
        self.check_layer(layer)
        try:
            body = self.net.subgraph([self._layer_ids[layer]], [self.logits_id])
        except ValueError:
            raise UserError(
                f"layer {layer!r} of {self.path.name} is not a clean cut point (later ops also need "
                f"{self._crossing_tensor(self._layer_ids[layer])!r}); cut layers: {', '.join(self.cut_layers())}"
            ) from None
        return Logits(body).eval()

    def _crossing_tensor(self, cut: int) -> str:
        """Name of the first tensor computed before ``cut`` that an op after ``cut`` still reads."""
        downstream = {cut}
        for _, ins, outs in self.net.steps():
            if any(t in downstream for t in ins):
                downstream.update(outs)
                for t in ins:
                    if t not in downstream:
                        return self.net.tensor_names.get(t, self.graph.tensors[t].name)
        return self.graph.tensors[self.input_id].name

    def run_interpreter(self, images: np.ndarray, *, layer: str | None = None, **kwargs: Any) -> np.ndarray:
        """LiteRT's outputs for uint8 (N, H, W, 3) images: the logits (dequantised, pre-softmax), or the
        activation of ``layer`` (N, C, H, W), as a reference for this torch model."""
        tensor = self.logits_id if layer is None else self.tensor_index(layer)
        out = run_tflite_interpreter(self.path, images, tensor=tensor, **kwargs)
        if out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)
        return out.reshape(len(out), -1) if layer is None else out


@register_model("tflite")
def create_tflite(
    weights: str | Path | None = None,
    pretrained: bool = True,
    *,
    name: str | None = None,
    input_mean: float | None = None,
    input_std: float | None = None,
    background: bool | None = None,
    simulate_quantization: bool = False,
) -> TFLiteAdapter:
    """A TFLite image classifier (``.tflite``, float or int8) converted to torch.

    ``model: {name: tflite, weights: PATH.tflite}``.

    ``pretrained=False`` keeps the file's architecture but re-initialises every weight randomly (torch's
    default convolution/linear initialisation, from torch's global RNG), as for the other adapters.
    Options: ``input_mean``/``input_std`` (float-input models, default 127.5/127.5), ``background``
    (output 0 is a background class; default: when there are 1001 outputs), ``simulate_quantization``
    (round every activation to its int8/uint8 grid like the interpreter; gradients pass straight through).
    """
    if weights is None:
        raise WeightsError("model 'tflite' needs model.weights: the path of a .tflite file")
    adapter = TFLiteAdapter(
        weights,
        name=name,
        input_mean=input_mean,
        input_std=input_std,
        background=background,
        simulate_quantization=simulate_quantization,
    )
    if not pretrained:
        randomize_weights(adapter.net)
    return adapter


def randomize_weights(net: nn.Module) -> None:
    """Re-initialise the converted weights in place like ``nn.Conv2d``/``nn.Linear`` do (random init)."""
    import math

    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (Conv2d, FullyConnected)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
                if module.bias is not None:
                    fan_in = module.weight[0].numel()
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(module.bias, -bound, bound)
