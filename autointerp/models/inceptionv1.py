"""InceptionV1 as in Lucid (``inception5h``), defined by torch-lucent.

* 1008 outputs: index 0 and 1001–1007 are dummies and never count in top-k; output ``i`` (1..1000)
  is ILSVRC devkit id ``i`` (``map_clsloc.txt`` order).
* Preprocessing: ``x * 255 - 117`` for images in [0, 1].
* Local response normalisation (``lrn``): ``"lucid"`` (default) computes the two LRN layers as Lucid's graph
  does (``depth_radius=5, bias=2, alpha=1e-4, beta=0.5``, the file the study ran); ``"lucent"`` keeps
  torch-lucent's port as it is (``size=9, k=1, alpha=1e-4`` in torch's terms: radius 4, bias 1, alpha/9), which
  differs from the graph from ``conv2d1`` on (see docs/models.md).
* Weights: a local file (``weights: path``), the torch hub cache, or the published URL when online.
  Offline, a missing file is a clear error within seconds saying where to put it.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from autointerp.errors import UserError, WeightsError
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


#: the LRN of Lucid's InceptionV1.pb in torch's terms: window 2*5+1, k = bias, alpha per element = alpha * window
LUCID_LRN = {"size": 11, "alpha": float(np.float32(1e-4)) * 11, "beta": 0.5, "k": 2.0}
LRN_CHOICES = ("lucid", "lucent")
_LRN: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar("inceptionv1_lrn", default=None)


class _LRNSelector:
    """Stands in for ``torch.nn.functional`` inside lucent's InceptionV1 module: every function passes through,
    except that ``local_response_norm`` takes the parameters of the model being run (:data:`_LRN`) when set."""

    def __init__(self, functional) -> None:
        self._functional = functional

    def __getattr__(self, name: str):
        return getattr(self._functional, name)

    def local_response_norm(self, x, size, alpha=1e-4, beta=0.75, k=1.0):
        params = _LRN.get()
        if params is None:
            return self._functional.local_response_norm(x, size, alpha=alpha, beta=beta, k=k)
        return self._functional.local_response_norm(x, **params)


def _lucid_lrn_class():
    """lucent's InceptionV1 with Lucid's LRN (same parameters, names and state dict; only forward differs)."""
    import importlib

    # the package re-exports the class under the module's own name, so ask for the module explicitly
    lucent_module = importlib.import_module("lucent.modelzoo.inceptionv1.InceptionV1")

    if not isinstance(lucent_module.F, _LRNSelector):
        lucent_module.F = _LRNSelector(lucent_module.F)

    global _LUCID_LRN_CLASS
    if _LUCID_LRN_CLASS is None:

        class LucidLRNInceptionV1(lucent_module.InceptionV1):
            """torch-lucent's InceptionV1 whose two LRN layers compute what Lucid's graph computes."""

            def forward(self, x):
                token = _LRN.set(LUCID_LRN)
                try:
                    return super().forward(x)
                finally:
                    _LRN.reset(token)

        # picklable by name (worker processes): found through this module's __getattr__
        LucidLRNInceptionV1.__module__, LucidLRNInceptionV1.__qualname__ = __name__, "LucidLRNInceptionV1"
        _LUCID_LRN_CLASS = LucidLRNInceptionV1
    return _LUCID_LRN_CLASS


_LUCID_LRN_CLASS = None


def __getattr__(name: str):
    if name == "LucidLRNInceptionV1":  # built on first use: importing lucent here would slow the CLI
        return _lucid_lrn_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def load_inceptionv1(
    weights: str | None = None, pretrained: bool = True, lrn: Literal["lucid", "lucent"] = "lucid"
) -> nn.Module:
    """The lucent InceptionV1 module with weights from ``weights``, the hub cache or the published URL, and the
    LRN of Lucid's graph (``lrn="lucid"``) or lucent's port (``"lucent"``)."""
    from lucent.modelzoo.inceptionv1 import InceptionV1

    if lrn not in LRN_CHOICES:
        raise UserError(f"model option 'lrn' = {lrn!r}: expected one of {', '.join(LRN_CHOICES)}")
    model = (_lucid_lrn_class() if lrn == "lucid" else InceptionV1)(pretrained=False)
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
def create_inceptionv1(
    weights: str | None = None, pretrained: bool = True, lrn: Literal["lucid", "lucent"] = "lucid"
) -> InceptionV1Adapter:
    """InceptionV1 (Lucid's inception5h weights, through torch-lucent's port). ``pretrained=False`` gives random
    init (tests, benchmarks); ``lrn`` as in the module docstring."""
    adapter = InceptionV1Adapter(load_inceptionv1(weights, pretrained, lrn))
    adapter.fingerprint_extra = f"lrn={lrn}"  # same weights, other computation: caches must not mix
    return adapter
