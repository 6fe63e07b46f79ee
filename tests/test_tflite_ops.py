"""The TFLite converter, op by op, on tiny synthetic graphs checked against LiteRT's interpreter.

The graphs are written with the flatbuffer builders of the ``tflite`` package (no TensorFlow needed), so
every operator, padding mode and quantisation scheme is compared with the reference implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest
import tflite
import torch

from autointerp.errors import UserError, WeightsError
from autointerp.models.base import create_model
from autointerp.models.nhwc import same_pads
from autointerp.models.tflite import (
    TFLiteAdapter,
    _layer_names,
    _layer_path,
    convert_tflite,
    read_tflite,
    run_tflite_interpreter,
)

_TYPES = {np.dtype(np.float32): 0, np.dtype(np.int32): 2, np.dtype(np.uint8): 3, np.dtype(np.int8): 9}
_OPTION_TYPES = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "SOFTMAX": "SoftmaxOptions",
    "CONCATENATION": "ConcatenationOptions",
    "ADD": "AddOptions",
    "MUL": "MulOptions",
    "SUB": "SubOptions",
    "RESHAPE": "ReshapeOptions",
    "MEAN": "ReducerOptions",
    "PAD": "PadOptions",
    "SQUEEZE": "SqueezeOptions",
}
_VERSIONS = {"DEPTHWISE_CONV_2D": 2}


class GraphBuilder:
    """Writes a one-subgraph .tflite file: tensors (optionally constant/quantised) and builtin ops."""

    def __init__(self) -> None:
        self.tensors: list[dict[str, Any]] = []
        self.buffers: list[bytes] = [b""]
        self.ops: list[tuple[str, list[int], list[int], dict[str, Any]]] = []

    def tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: Any = np.float32,
        data: np.ndarray | None = None,
        quant: tuple[Any, Any, int] | None = None,
    ) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype=dtype).tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append({"name": name, "shape": shape, "dtype": np.dtype(dtype), "buffer": buffer, "quant": quant})
        return len(self.tensors) - 1

    def const(self, name: str, data: np.ndarray, dtype: Any = np.float32, quant: Any = None) -> int:
        return self.tensor(name, tuple(np.shape(data)), dtype, np.asarray(data), quant)

    def op(self, kind: str, inputs: list[int], outputs: list[int], **options: Any) -> None:
        self.ops.append((kind, inputs, outputs, options))

    # -- serialisation -------------------------------------------------------------------------
    @staticmethod
    def _vector(b: flatbuffers.Builder, start: Any, values: Any, kind: str) -> int:
        values = list(values)
        start(b, len(values))
        prepend = {"i32": b.PrependInt32, "f32": b.PrependFloat32, "i64": b.PrependInt64, "u8": b.PrependUint8}[kind]
        for v in reversed(values):
            prepend(v)
        return b.EndVector()

    def _options(self, b: flatbuffers.Builder, kind: str, options: dict[str, Any]) -> tuple[int, int]:
        name = _OPTION_TYPES.get(kind)
        if name is None:
            return 0, 0
        vectors = {}
        if kind == "RESHAPE" and "new_shape" in options:
            vectors["NewShape"] = self._vector(
                b, tflite.ReshapeOptionsStartNewShapeVector, options.pop("new_shape"), "i32"
            )
        if kind == "SQUEEZE" and "squeeze_dims" in options:
            vectors["SqueezeDims"] = self._vector(
                b, tflite.SqueezeOptionsStartSqueezeDimsVector, options.pop("squeeze_dims"), "i32"
            )
        getattr(tflite, f"{name}Start")(b)
        for field, value in options.items():
            getattr(tflite, f"{name}Add{field}")(b, value)
        for field, value in vectors.items():
            getattr(tflite, f"{name}Add{field}")(b, value)
        return getattr(tflite.BuiltinOptions, name), getattr(tflite, f"{name}End")(b)

    def build(self, inputs: list[int], outputs: list[int], path: Path) -> Path:
        b = flatbuffers.Builder(1024)
        codes = sorted({kind for kind, *_ in self.ops})
        code_index = {k: i for i, k in enumerate(codes)}
        buffer_offsets = []
        for data in self.buffers:
            vec = self._vector(b, tflite.BufferStartDataVector, data, "u8") if data else None
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            buffer_offsets.append(tflite.BufferEnd(b))
        tensor_offsets = []
        for t in self.tensors:
            name = b.CreateString(t["name"])
            shape = self._vector(b, tflite.TensorStartShapeVector, t["shape"], "i32")
            q = None
            if t["quant"] is not None:
                scale, zero, dim = t["quant"]
                sv = self._vector(b, tflite.QuantizationParametersStartScaleVector, np.ravel(scale), "f32")
                zv = self._vector(b, tflite.QuantizationParametersStartZeroPointVector, np.ravel(zero), "i64")
                tflite.QuantizationParametersStart(b)
                tflite.QuantizationParametersAddScale(b, sv)
                tflite.QuantizationParametersAddZeroPoint(b, zv)
                tflite.QuantizationParametersAddQuantizedDimension(b, dim)
                q = tflite.QuantizationParametersEnd(b)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape)
            tflite.TensorAddType(b, _TYPES[t["dtype"]])
            tflite.TensorAddBuffer(b, t["buffer"])
            tflite.TensorAddName(b, name)
            if q is not None:
                tflite.TensorAddQuantization(b, q)
            tensor_offsets.append(tflite.TensorEnd(b))
        op_offsets = []
        for kind, ins, outs, options in self.ops:
            iv = self._vector(b, tflite.OperatorStartInputsVector, ins, "i32")
            ov = self._vector(b, tflite.OperatorStartOutputsVector, outs, "i32")
            otype, opt = self._options(b, kind, dict(options))
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, code_index[kind])
            tflite.OperatorAddInputs(b, iv)
            tflite.OperatorAddOutputs(b, ov)
            if otype:
                tflite.OperatorAddBuiltinOptionsType(b, otype)
                tflite.OperatorAddBuiltinOptions(b, opt)
            op_offsets.append(tflite.OperatorEnd(b))
        code_offsets = []
        for kind in codes:
            code = getattr(tflite.BuiltinOperator, kind)
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, _VERSIONS.get(kind, 1))
            code_offsets.append(tflite.OperatorCodeEnd(b))

        def offsets(start: Any, items: list[int]) -> int:
            start(b, len(items))
            for o in reversed(items):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        tv = offsets(tflite.SubGraphStartTensorsVector, tensor_offsets)
        opv = offsets(tflite.SubGraphStartOperatorsVector, op_offsets)
        inv = self._vector(b, tflite.SubGraphStartInputsVector, inputs, "i32")
        outv = self._vector(b, tflite.SubGraphStartOutputsVector, outputs, "i32")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tv)
        tflite.SubGraphAddOperators(b, opv)
        tflite.SubGraphAddInputs(b, inv)
        tflite.SubGraphAddOutputs(b, outv)
        sub = tflite.SubGraphEnd(b)
        subv = offsets(tflite.ModelStartSubgraphsVector, [sub])
        codev = offsets(tflite.ModelStartOperatorCodesVector, code_offsets)
        bufv = offsets(tflite.ModelStartBuffersVector, buffer_offsets)
        desc = b.CreateString("autointerp test graph")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, codev)
        tflite.ModelAddSubgraphs(b, subv)
        tflite.ModelAddBuffers(b, bufv)
        tflite.ModelAddDescription(b, desc)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        path.write_bytes(b.Output())
        return path


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _torch_tensor(adapter: TFLiteAdapter, images: np.ndarray, tensor: int) -> np.ndarray:
    """The converted graph's value of ``tensor`` (NHWC, like the interpreter) for uint8 images."""
    net = adapter.net.subgraph([adapter.input_id], [tensor])
    x = adapter.preprocess(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    with torch.no_grad():
        y = net(x)
    return (y.permute(0, 2, 3, 1) if y.dim() == 4 else y).numpy()


def _check_all_tensors(path: Path, images: np.ndarray, atol: float = 1e-4) -> TFLiteAdapter:
    """Every op output of the converted graph equals the interpreter's (float graphs)."""
    adapter = TFLiteAdapter(path)
    for _, _, outs in adapter.net.steps():
        ref = run_tflite_interpreter(path, images, tensor=outs[0], show_progress=False)
        got = _torch_tensor(adapter, images, outs[0])
        name = adapter.net.tensor_names[outs[0]]
        assert got.shape == ref.shape, name
        np.testing.assert_allclose(got, ref, atol=atol, rtol=1e-4, err_msg=name)
    return adapter


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_same_padding_is_tf_asymmetric() -> None:
    # TF puts the extra pixel after: 224 -> 112 with a 3x3/2 kernel pads (0, 1); 7 with 3x3/1 pads (1, 1)
    assert same_pads(224, 3, 2, 1) == (0, 1)
    assert same_pads(225, 3, 2, 1) == (1, 1)
    assert same_pads(7, 3, 1, 1) == (1, 1)
    assert same_pads(8, 2, 1, 1) == (0, 1)
    assert same_pads(8, 3, 1, 2) == (2, 2)  # dilation 2: effective kernel 5
    assert same_pads(5, 1, 1, 1) == (0, 0)


def test_conv_graph_matches_interpreter(tmp_path: Path, rng: np.random.Generator) -> None:
    """CONV_2D / DEPTHWISE_CONV_2D with SAME (asymmetric) and VALID padding, strides, dilation, a depth
    multiplier, fused RELU/RELU6/RELU_N1_TO_1, residual ADD, pools, MEAN, FC, RESHAPE, SOFTMAX."""
    g = GraphBuilder()
    x = g.tensor("input", (1, 16, 16, 3))
    w = lambda *s: (rng.normal(size=s) * 0.4).astype(np.float32)  # noqa: E731
    t1 = g.tensor("net/conv1/Relu6", (1, 8, 8, 6))
    g.op(
        "CONV_2D",
        [x, g.const("w1", w(6, 3, 3, 3)), g.const("b1", w(6))],
        [t1],
        Padding=0,
        StrideH=2,
        StrideW=2,
        FusedActivationFunction=3,
    )
    t2 = g.tensor("net/dw/depthwise/Relu", (1, 4, 4, 12))
    g.op(
        "DEPTHWISE_CONV_2D",
        [t1, g.const("w2", w(1, 3, 3, 12)), g.const("b2", w(12))],
        [t2],
        Padding=0,
        StrideH=2,
        StrideW=2,
        DepthMultiplier=2,
        FusedActivationFunction=1,
    )
    t3 = g.tensor("net/even/BiasAdd", (1, 4, 4, 12))  # even kernel SAME: pads (0, 1)
    g.op(
        "CONV_2D",
        [t2, g.const("w3", w(12, 2, 2, 12)), g.const("b3", w(12))],
        [t3],
        Padding=0,
        StrideH=1,
        StrideW=1,
        FusedActivationFunction=0,
    )
    t4 = g.tensor("net/dilated/Relu", (1, 4, 4, 12))
    g.op(
        "CONV_2D",
        [t3, g.const("w4", w(12, 3, 3, 12)), g.const("b4", w(12))],
        [t4],
        Padding=0,
        StrideH=1,
        StrideW=1,
        DilationHFactor=2,
        DilationWFactor=2,
        FusedActivationFunction=2,
    )
    t5 = g.tensor("net/block/add", (1, 4, 4, 12))
    g.op("ADD", [t4, t2], [t5], FusedActivationFunction=0)
    t6 = g.tensor("net/valid/Conv2D", (1, 3, 3, 8))
    g.op("CONV_2D", [t5, g.const("w6", w(8, 2, 2, 12)), g.const("b6", w(8))], [t6], Padding=1, StrideH=1, StrideW=1)
    t7 = g.tensor("net/avgpool/AvgPool", (1, 2, 2, 8))  # SAME average: padded cells are not counted
    g.op("AVERAGE_POOL_2D", [t6], [t7], Padding=0, StrideH=2, StrideW=2, FilterHeight=2, FilterWidth=2)
    t8 = g.tensor("net/maxpool/MaxPool", (1, 2, 2, 8))
    g.op("MAX_POOL_2D", [t7], [t8], Padding=0, StrideH=1, StrideW=1, FilterHeight=2, FilterWidth=2)
    t9 = g.tensor("net/mean/Mean", (1, 8))
    g.op("MEAN", [t8, g.const("axes", np.array([1, 2], np.int32), np.int32)], [t9], KeepDims=False)
    t10 = g.tensor("net/fc/MatMul", (1, 5))
    g.op("FULLY_CONNECTED", [t9, g.const("wf", w(5, 8)), g.const("bf", w(5))], [t10])
    t11 = g.tensor("net/logits", (1, 5))
    g.op("RESHAPE", [t10, g.const("shape", np.array([1, 5], np.int32), np.int32)], [t11])
    t12 = g.tensor("net/prob", (1, 5))
    g.op("SOFTMAX", [t11], [t12], Beta=1.0)
    path = g.build([x], [t12], tmp_path / "convs.tflite")

    adapter = _check_all_tensors(path, _images(3, 16))
    # the trailing SOFTMAX is dropped: forward returns logits, and softmax(logits) is the graph's output
    images = _images(2, 16, seed=1)
    probs = run_tflite_interpreter(path, images, show_progress=False)
    with torch.no_grad():
        logits = adapter.forward(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    assert logits.shape == (2, 5)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probs, atol=1e-5)
    # layer names come from the tensor names; 'net' (common root) and op suffixes are dropped
    assert list(adapter.layers()) == [
        "conv1",
        "dw_depthwise",
        "even",
        "dilated",
        "block_add",
        "valid",
        "avgpool_AvgPool",
        "maxpool_MaxPool",
    ]
    assert adapter.layers()["dw_depthwise"] == 12
    # the residual ADD also reads the depthwise output, so the tensors in between are not cut points
    assert "dw_depthwise" in adapter.cut_layers() and "even" not in adapter.cut_layers()
    with pytest.raises(UserError, match=r"'even'.*not a clean cut point.*'dw_depthwise'.*cut layers: conv1"):
        adapter.tail("even")
    x01 = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(
            adapter.tail("block_add")(adapter.head("block_add")(x01)), adapter.forward(x01), atol=1e-5
        )


def test_elementwise_concat_pad_and_activations(tmp_path: Path, rng: np.random.Generator) -> None:
    """Constant operands in NHWC broadcast correctly against NCHW activations; axes are remapped."""
    g = GraphBuilder()
    x = g.tensor("input", (1, 6, 6, 3))
    t1 = g.tensor("m/mul", (1, 6, 6, 3))
    g.op("MUL", [x, g.const("scale", np.array([0.5, -1.0, 2.0], np.float32))], [t1])
    t2 = g.tensor("m/sub", (1, 6, 6, 3))
    g.op(
        "SUB", [g.const("grid", rng.normal(size=(1, 6, 6, 3)).astype(np.float32)), t1], [t2], FusedActivationFunction=1
    )
    t3 = g.tensor("m/cat", (1, 6, 6, 6))
    g.op("CONCATENATION", [t1, t2], [t3], Axis=3)
    t4 = g.tensor("m/pad", (1, 8, 7, 6))
    g.op("PAD", [t3, g.const("pads", np.array([[0, 0], [1, 1], [0, 1], [0, 0]], np.int32), np.int32)], [t4])
    t5 = g.tensor("m/hswish", (1, 8, 7, 6))
    g.op("HARD_SWISH", [t4], [t5])
    t6 = g.tensor("m/sigmoid", (1, 8, 7, 6))
    g.op("LOGISTIC", [t5], [t6])
    t7 = g.tensor("m/mean", (1, 1, 1, 6))
    g.op("MEAN", [t6, g.const("axes", np.array([1, 2], np.int32), np.int32)], [t7], KeepDims=True)
    t8 = g.tensor("m/squeeze", (1, 6))
    g.op("SQUEEZE", [t7], [t8], squeeze_dims=[1, 2])
    path = g.build([x], [t8], tmp_path / "elementwise.tflite")
    adapter = _check_all_tensors(path, _images(3, 6), atol=1e-5)
    assert adapter.num_outputs == 6 and bool(adapter.valid_outputs.all())  # 6 outputs: no background class


def _quantized_graph(tmp_path: Path, rng: np.random.Generator, signed: bool) -> Path:
    """uint8 per-tensor (as the Coral model) or int8 per-channel (as current converters) CONV + DW + ADD."""
    g = GraphBuilder()
    act = np.int8 if signed else np.uint8
    zp_in = -1 if signed else 128
    x = g.tensor("input", (1, 10, 10, 3), act, quant=([1 / 128], [zp_in], 0))
    w1 = rng.normal(size=(8, 3, 3, 3)) * 0.3
    if signed:  # symmetric per-output-channel weights, bias scale = input scale * weight scale
        s1 = np.abs(w1).reshape(8, -1).max(1) / 127
        q1 = np.round(w1 / s1[:, None, None, None]).astype(np.int8)
        wq = g.const("w1", q1, np.int8, (s1, np.zeros(8, np.int64), 0))
        b = rng.normal(size=8) * 0.2
        bs = s1 / 128
        bq = g.const("b1", np.round(b / bs).astype(np.int32), np.int32, (bs, np.zeros(8, np.int64), 0))
    else:
        s1 = float(np.ptp(w1) / 255)
        z1 = int(np.round(-w1.min() / s1))
        q1 = np.clip(np.round(w1 / s1 + z1), 0, 255).astype(np.uint8)
        wq = g.const("w1", q1, np.uint8, ([s1], [z1], 0))
        bs = s1 / 128
        bq = g.const("b1", np.round(rng.normal(size=8) * 0.2 / bs).astype(np.int32), np.int32, ([bs], [0], 0))
    out_q = ([6 / 255], [-128 if signed else 0], 0)
    t1 = g.tensor("q/conv/Relu6", (1, 5, 5, 8), act, quant=out_q)
    g.op("CONV_2D", [x, wq, bq], [t1], Padding=0, StrideH=2, StrideW=2, FusedActivationFunction=3)
    w2 = rng.normal(size=(1, 3, 3, 8)) * 0.5
    if signed:
        s2 = np.abs(w2).reshape(-1, 8).max(0) / 127
        wq2 = g.const("w2", np.round(w2 / s2).astype(np.int8), np.int8, (s2, np.zeros(8, np.int64), 3))
        bs2 = s2 * 6 / 255
        bq2 = g.const("b2", np.zeros(8, np.int32), np.int32, (bs2, np.zeros(8, np.int64), 0))
    else:
        s2 = float(np.ptp(w2) / 255)
        z2 = int(np.round(-w2.min() / s2))
        wq2 = g.const("w2", np.clip(np.round(w2 / s2 + z2), 0, 255).astype(np.uint8), np.uint8, ([s2], [z2], 0))
        bq2 = g.const("b2", np.zeros(8, np.int32), np.int32, ([s2 * 6 / 255], [0], 0))
    mid_q = ([0.05], [0 if signed else 128], 0)
    t2 = g.tensor("q/dw/BiasAdd", (1, 5, 5, 8), act, quant=mid_q)
    g.op("DEPTHWISE_CONV_2D", [t1, wq2, bq2], [t2], Padding=0, StrideH=1, StrideW=1, DepthMultiplier=1)
    t3 = g.tensor("q/add", (1, 5, 5, 8), act, quant=([0.06], [0 if signed else 128], 0))
    g.op("ADD", [t2, t1], [t3])
    return g.build([x], [t3], tmp_path / f"quant_{'int8' if signed else 'uint8'}.tflite")


@pytest.mark.parametrize("signed", [False, True], ids=["uint8_per_tensor", "int8_per_channel"])
def test_quantized_graph_dequantizes_weights(tmp_path: Path, rng: np.random.Generator, signed: bool) -> None:
    path = _quantized_graph(tmp_path, rng, signed)
    adapter = TFLiteAdapter(path)
    images = _images(4, 10)
    # the input is the dequantised uint8/int8 pixel: x01*255 maps onto the quantised grid exactly
    graph = read_tflite(path)
    spec = graph.tensors[graph.inputs[0]]
    x01 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    q = images.astype(np.float32) - 128 if signed else images.astype(np.float32)
    expected = (q - float(spec.zero_point[0])) * float(spec.scale[0])
    np.testing.assert_allclose(adapter.preprocess(x01).permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    simulated = TFLiteAdapter(path, simulate_quantization=True)
    for _, _, outs in adapter.net.steps():
        ref = run_tflite_interpreter(path, images, tensor=outs[0], show_progress=False)
        got = _torch_tensor(adapter, images, outs[0])
        step = float(graph.tensors[outs[0]].scale[0])
        name = adapter.net.tensor_names[outs[0]]
        # float vs integer arithmetic: within a couple of output quantisation steps (rounding of inputs too)
        assert np.abs(got - ref).max() <= 2.5 * step + 1e-6, name
        assert np.abs(got - ref).mean() <= 0.6 * step, name
        # simulating the activation grid: convolutions exact; ADD's fixed-point rescale rarely off by one step
        steps = np.abs(_torch_tensor(simulated, images, outs[0]) - ref) / step
        if name == "add":
            assert steps.max() <= 1.001 and (steps < 1e-3).mean() >= 0.9, name
        else:
            assert steps.max() < 1e-3, name


def test_dequantize_per_channel_axis(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _quantized_graph(tmp_path, rng, signed=True)
    graph = read_tflite(path)
    dw = next(t for t in graph.tensors if t.name == "w2")
    assert dw.quantized_dimension == 3 and dw.scale.shape == (8,)
    ref = dw.data.astype(np.float64) * dw.scale.astype(np.float64)[None, None, None, :]
    np.testing.assert_allclose(dw.dequantize(), ref, rtol=1e-6)
    conv = convert_tflite(graph)
    w_torch = conv.get_submodule("dw").weight.detach().numpy()  # (C, 1, kh, kw)
    np.testing.assert_allclose(w_torch, ref.transpose(3, 0, 1, 2), rtol=1e-6)


def test_gradients_flow_and_other_input_sizes(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _quantized_graph(tmp_path, rng, signed=False)
    adapter = TFLiteAdapter(path)
    x = torch.rand(2, 3, 10, 10, requires_grad=True)
    act = adapter.head("add")(x)
    act[:, 3].mean().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in adapter.module.parameters())
    # with simulated quantisation the gradient passes straight through the rounding
    sim = TFLiteAdapter(path, simulate_quantization=True)
    x2 = torch.rand(2, 3, 10, 10, requires_grad=True)
    sim.head("add")(x2)[:, 3].mean().backward()
    assert x2.grad is not None and float(x2.grad.abs().sum()) > 0
    # SAME padding is recomputed from the actual size: a 16x16 input gives 8x8 maps
    with torch.no_grad():
        assert adapter.head("add")(torch.rand(1, 3, 16, 16)).shape == (1, 8, 8, 8)


def test_random_init_keeps_architecture(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _quantized_graph(tmp_path, rng, signed=False)
    trained = create_model("tflite", weights=str(path))
    torch.manual_seed(0)
    rand = create_model("tflite", weights=str(path), pretrained=False)
    assert rand.layers() == trained.layers()
    w0, w1 = trained.net.get_submodule("conv").weight, rand.net.get_submodule("conv").weight
    assert w0.shape == w1.shape and not torch.allclose(w0, w1)
    with torch.no_grad():
        assert rand.forward(torch.rand(1, 3, 10, 10)).shape == (1, trained.num_outputs)


def test_layer_names_from_tensor_names() -> None:
    assert _layer_path("MobilenetV2/Conv_1/Relu6;MobilenetV2/Conv_1/add_fold;x") == ["MobilenetV2", "Conv_1"]
    assert _layer_path("MobilenetV2/expanded_conv_3/depthwise/Relu6;a") == [
        "MobilenetV2",
        "expanded_conv_3",
        "depthwise",
    ]
    assert _layer_path("m/block_1_depthwise/depthwise") == ["m", "block_1_depthwise"]
    assert _layer_path("MobilenetV2/expanded_conv/project/add_fold;b") == ["MobilenetV2", "expanded_conv", "project"]
    assert _layer_path("Relu6") == ["Relu6"]  # never empty


def test_duplicate_and_odd_tensor_names_are_made_unique(tmp_path: Path, rng: np.random.Generator) -> None:
    g = GraphBuilder()
    x = g.tensor("input", (1, 4, 4, 3))
    t1 = g.tensor("m/1x1 conv:0/Relu", (1, 4, 4, 3))
    t2 = g.tensor("m/1x1 conv:0/Relu6", (1, 4, 4, 3))
    for a, b in ((x, t1), (t1, t2)):
        g.op("CONV_2D", [a, g.const(f"w{b}", rng.normal(size=(3, 1, 1, 3)).astype(np.float32))], [b], Padding=1)
    path = g.build([x], [t2], tmp_path / "names.tflite")
    names = _layer_names(read_tflite(path))
    assert names[t1] == "t_1x1_conv_0" and names[t2] == "t_1x1_conv_0_2"


def test_bad_files_and_unsupported_ops(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="nope.tflite: TFLite model file not found"):
        create_model("tflite", weights=str(tmp_path / "nope.tflite"))
    with pytest.raises(WeightsError, match="needs model.weights"):
        create_model("tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="bad.tflite: not a readable TFLite model"):
        create_model("tflite", weights=str(bad))
    g = GraphBuilder()
    x = g.tensor("input", (1, 4, 4, 3))
    y = g.tensor("exp", (1, 4, 4, 3))
    g.op("EXP", [x], [y])
    path = g.build([x], [y], tmp_path / "exp.tflite")
    with pytest.raises(UserError, match=r"exp.tflite: operator 0 \(EXP\) is not supported.*CONV_2D"):
        create_model("tflite", weights=str(path))
