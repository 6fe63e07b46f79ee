"""TFLite embedding models (e.g. Coral's MobileNet embedding extractor) through LiteRT or TensorFlow.

The interpreter is ``ai_edge_litert`` (LiteRT), else ``tensorflow.lite``, else ``tflite_runtime``.
Quantised uint8 inputs receive raw pixels (their quantisation maps 0..255 onto the float range the
model was trained on); float inputs receive pixels scaled to ``input_range``. Quantised outputs are
dequantised.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.embedders import register_embedder
from autointerp.embedders.base import Embedder, file_fingerprint, resize_square
from autointerp.errors import ConfigError, WeightsError
from autointerp.extras import installed, require


def _interpreter_class() -> Any:
    """LiteRT's interpreter (the [tflite] extra), else an installed TensorFlow's or tflite_runtime's."""
    if not installed("ai_edge_litert"):
        if installed("tensorflow"):
            import tensorflow as tf  # type: ignore[import-not-found]

            return tf.lite.Interpreter
        if installed("tflite_runtime"):
            from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

            return Interpreter
    return require("ai_edge_litert.interpreter", "tflite", "the tflite embedder").Interpreter


@register_embedder
class TFLiteEmbedder(Embedder):
    """Runs a ``.tflite`` model whose output (flattened) is the embedding."""

    kind = "tflite"

    def __init__(
        self,
        path: str,
        num_threads: int | None = None,
        batch_size: int = 32,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            raise WeightsError(f"rate.embedder.path: TFLite model {path} not found")
        try:
            self._interp = _interpreter_class()(model_path=path, num_threads=num_threads or os.cpu_count())
        except (ValueError, RuntimeError) as exc:
            raise WeightsError(f"{path}: not a loadable TFLite model ({str(exc).splitlines()[0][:150]})") from None
        inp = self._interp.get_input_details()[0]
        if len(inp["shape"]) != 4 or inp["shape"][3] != 3:
            raise ConfigError(f"{path}: expected an image input (1, H, W, 3), got {list(inp['shape'])}")
        self._input = inp
        self._output = self._interp.get_output_details()[0]
        self.input_size = int(inp["shape"][1])
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.batch_size = int(batch_size)
        self._batch_ok = True
        self._allocated = 0
        self.path = path
        self.id = f"tflite:{os.path.basename(path)}:{file_fingerprint(path)}"

    def _prepare(self, arr: np.ndarray) -> np.ndarray:
        dtype = self._input["dtype"]
        if dtype == np.uint8:
            return arr
        if dtype == np.int8:
            return (arr.astype(np.int16) - 128).astype(np.int8)
        lo, hi = self.input_range
        return (arr.astype(np.float32) / 255.0 * (hi - lo) + lo).astype(dtype)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._allocated != len(x):
            self._interp.resize_tensor_input(self._input["index"], [len(x), *self._input["shape"][1:]])
            self._interp.allocate_tensors()
            self._allocated = len(x)
        self._interp.set_tensor(self._input["index"], x)
        self._interp.invoke()
        out = self._interp.get_tensor(self._output["index"]).reshape(len(x), -1)
        scale, zero = self._output.get("quantization", (0.0, 0))
        if out.dtype != np.float32 and scale:
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32)

    def _embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        x = self._prepare(np.stack([resize_square(img, self.input_size) for img in images]))
        if self._batch_ok:
            try:
                return self._run(x)
            except (ValueError, RuntimeError):
                self._batch_ok = False  # fixed-batch model: fall back to one image at a time
        return np.concatenate([self._run(x[i : i + 1]) for i in range(len(x))])
