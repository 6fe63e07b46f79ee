"""InceptionV1 as in Lucid (``inception5h``), defined by torch-lucent.

* 1008 outputs: index 0 and 1001–1007 are dummies and never count in top-k; output ``i`` (1..1000)
  is ILSVRC devkit id ``i`` (``map_clsloc.txt`` order).
* Preprocessing: ``x * 255 - 117`` for images in [0, 1].
* Weights: a local file (``weights: path``), the torch hub cache, or the published URL when online.
  Offline, a missing file is a clear error within seconds saying where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from autointerp.errors import WeightsError
from autointerp.models.base import register_model
from autointerp.models.split import HookFxAdapter

WEIGHTS_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
WEIGHTS_FILE = "inception5h.pth"
LOGITS_NODE = "softmax2_pre_activation_matmul"

#: layers whose outputs are whole-block outputs (clean cut points for head/tail)
BLOCK_LAYERS = (
    "conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b",
    "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b",
)  # fmt: skip


def default_weights_path() -> Path:
    """Where a downloaded copy lives: the torch hub checkpoint cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def offline() -> bool:
    """True when the user asked for no network (AUTOINTERP_OFFLINE, HF_HUB_OFFLINE or TORCH_HUB_OFFLINE)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("AUTOINTERP_OFFLINE", "HF_HUB_OFFLINE"))


def fetch_weights(url: str, dest: Path, timeout: float = 10.0) -> Path:
    """Download ``url`` to ``dest`` (atomically) or raise :class:`WeightsError` within ``timeout`` seconds."""
    import urllib.request

    from autointerp.atomic import atomic_path

    hint = f"download {url} elsewhere and pass model.weights=/path/to/{dest.name} (or put it at {dest})"
    if offline():
        raise WeightsError(f"InceptionV1 weights not found at {dest} and offline mode is set; {hint}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
    except (TimeoutError, OSError) as exc:
        raise WeightsError(f"could not download InceptionV1 weights ({exc}); {hint}") from None
    return dest


class InceptionV1Adapter(HookFxAdapter):
    """Lucid's InceptionV1 (inception5h) via torch-lucent."""

    name = "inceptionv1"
    input_size = 224
    num_outputs = 1008
    tail_output = LOGITS_NODE

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module, name="inceptionv1")
        mask = torch.zeros(self.num_outputs, dtype=torch.bool)
        mask[1:1001] = True
        self._valid_outputs = mask
        self._layers: dict[str, int] | None = None

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Lucid's InceptionV1 takes pixel values in [-117, 138]."""
        return x * 255.0 - 117.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax logits (the lucent module itself returns softmax probabilities)."""
        return self.tail("mixed5b")(self.head("mixed5b")(x))

    def layers(self) -> dict[str, int]:
        if self._layers is None:
            from autointerp.models.fxsplit import layer_shapes

            p = next(self.module.parameters())
            example = torch.zeros(1, 3, self.input_size, self.input_size, device=p.device, dtype=p.dtype)
            shapes = layer_shapes(self.module, example, list(BLOCK_LAYERS))
            self._layers = {n: shapes[n][1] for n in BLOCK_LAYERS if n in shapes}
        return self._layers


def load_inceptionv1(weights: str | None = None, pretrained: bool = True) -> nn.Module:
    """The lucent InceptionV1 module with weights from ``weights``, the hub cache or the published URL."""
    from lucent.modelzoo.inceptionv1 import InceptionV1

    model = InceptionV1(pretrained=False)
    if not pretrained and weights is None:
        return model.eval()
    path = Path(weights) if weights else default_weights_path()
    if weights and not path.exists():
        raise WeightsError(f"{path}: InceptionV1 weights file not found (model.weights); expected {WEIGHTS_FILE}")
    if not path.exists():
        fetch_weights(WEIGHTS_URL, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"{path}: not a valid InceptionV1 (inception5h) state dict ({first})") from None
    return model.eval()


@register_model("inceptionv1")
def create_inceptionv1(weights: str | None = None, pretrained: bool = True) -> InceptionV1Adapter:
    """InceptionV1 adapter; ``pretrained=False`` gives random init (tests, benchmarks)."""
    return InceptionV1Adapter(load_inceptionv1(weights, pretrained))
