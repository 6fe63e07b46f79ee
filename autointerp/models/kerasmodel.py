"""Saved Keras image classifiers (``.keras``) as torch models: the ``keras`` adapter.

The model is loaded with Keras (TensorFlow backend, the ``[tensorflow]`` extra), traced once into a
TensorFlow function at its input size, frozen (variables become constants) and converted by the
``tf_graphdef`` converter (:mod:`autointerp.models.tfgraph`), so the same op semantics, NHWC → NCHW
handling and parity check (:meth:`~autointerp.models.tfgraph.TFGraphAdapter.run_tensorflow`) apply.
Layers are the Keras layer names (``conv1``, ``block2_pool``, ...) whose outputs are 4-D, in the model's
order; each maps to the last graph node its layer computes (inference mode: batch normalisation uses its
moving statistics, dropout is off)::

    adapter = create_model("keras", weights="cnn.keras", value_range=[0, 255])
    adapter.layers()                       # {"conv1": 32, "pool1": 32, "conv2": 64, ...}
    acts = adapter.head("conv2")(x01)      # (N, 64, H, W)

Functional and sequential models with one image input are supported; a trailing softmax (a ``Softmax``
layer or ``activation="softmax"`` on the last ``Dense``) is dropped, so the adapter returns logits.
``value_range`` is the pixel range the model expects (e.g. ``[0, 255]`` when it starts with a
``Rescaling`` layer, ``[-1, 1]`` for MobileNet-style preprocessing).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autointerp.errors import UserError, WeightsError
from autointerp.models.base import register_model
from autointerp.models.tfgraph import TFGraphAdapter, import_tensorflow, randomize_weights

WHAT = "the keras model adapter"


def freeze_keras(model: Any, input_size: int) -> tuple[Any, str, str]:
    """Trace ``model`` at (None, S, S, 3) in inference mode and freeze it: (GraphDef, input node, output node)."""
    tf = import_tensorflow(WHAT)
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([None, input_size, input_size, 3], tf.float32, name="image"))
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    return graph_def, frozen.inputs[0].name.split(":")[0], frozen.outputs[0].name.split(":")[0]


def _layer_nodes(graph_def: Any, layer_names: Sequence[str], candidates: Sequence[str]) -> dict[str, str]:
    """Keras layer name -> the last of ``candidates`` (converted 4-D nodes, in execution order) inside the
    layer's name scope (``<model>/<layer>/...`` or ``<model>/<layer>_<n>/...``)."""
    out: dict[str, str] = {}
    for layer in layer_names:
        scope = re.compile(rf"(^|/){re.escape(layer)}(_\d+)?/")
        inside = [node for node in candidates if scope.search(node)]
        if inside:
            out[layer] = inside[-1]
    return out


class KerasAdapter(TFGraphAdapter):
    """A Keras image classifier (``.keras``) converted to torch through its frozen TensorFlow graph."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        value_range: Sequence[float] | None = None,
        background: bool | None = None,
    ) -> None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import_tensorflow(WHAT)
        from autointerp.extras import require

        keras = require("keras", "tensorflow", WHAT)
        path = Path(path)
        if keras.backend.backend() != "tensorflow":
            raise UserError(
                f"{path}: the keras adapter needs KERAS_BACKEND=tensorflow (it is {keras.backend.backend()})"
            )
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a foreign or truncated file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise WeightsError(f"{path}: not a loadable Keras model ({type(exc).__name__}: {first})") from None
        inputs = model.inputs if isinstance(model.inputs, list) else [model.inputs]
        shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
        if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
            raise UserError(f"{path}: expected a Keras image classifier with one (None, S, S, 3) input, got {shape}")
        self.keras_model = model
        graph_def, input_node, output = freeze_keras(model, int(shape[1]))
        super().__init__(
            path,
            name=name or path.stem,
            input=input_node,
            output=output,
            value_range=value_range,
            input_size=int(shape[1]),
            background=background,
            preset="none",
            graph_def=graph_def,
        )
        order = list(self._nodes)  # 4-D converted nodes, in execution order
        names = _layer_nodes(graph_def, [layer.name for layer in model.layers], order)
        if not names:
            raise UserError(f"{path}: no Keras layer of the model has a 4-D output")
        self.rename_layers(names)


@register_model("keras")
def create_keras(
    weights: str | Path | None = None,
    pretrained: bool = True,
    *,
    name: str | None = None,
    value_range: Sequence[float] | None = None,
    background: bool | None = None,
) -> KerasAdapter:
    """A saved Keras image classifier (``.keras``) converted to torch through its frozen TensorFlow graph.

    ``model: {name: keras, weights: PATH.keras, options: {value_range: [lo, hi]}}``; ``pretrained=False``
    keeps the architecture with random weights. ``background``: output 0 is a background class."""
    if weights is None:
        raise WeightsError("model 'keras' needs model.weights: the path of a saved .keras model")
    if not Path(weights).is_file():
        raise WeightsError(f"{weights}: Keras model file not found (model.weights)")
    adapter = KerasAdapter(weights, name=name, value_range=value_range, background=background)
    if not pretrained:
        randomize_weights(adapter.net)
    return adapter
