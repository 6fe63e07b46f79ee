"""The model-adapter contract.

A :class:`ModelAdapter` wraps an image classifier so every stage can use it the same way:

* every callable takes images ``x`` as float tensors ``(N, 3, S, S)`` in ``[0, 1]`` at
  ``input_size`` — the adapter applies its own normalisation (e.g. InceptionV1's ``x*255-117``);
* :meth:`forward` returns logits ``(N, num_outputs)`` (pre-softmax);
* :meth:`head` returns a module ``x -> activation (N, C, H, W)`` of a layer, stopping there (a transformer's
  token layer is presented as ``(N, D, T, 1)``: :mod:`autointerp.models.tokens`);
* :meth:`tail` returns a module ``activation -> logits``: the rest of the network, so that ablating
  a channel needs no second pass through the head;
* :attr:`valid_outputs` marks real classes: dummy outputs (InceptionV1's 0 and 1001–1007) never count
  in top-k.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autointerp.errors import UserError
from autointerp.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


class ModelAdapter:
    """Base class: a classifier with named layers, split into head and tail at any listed layer."""

    name: str = "model"
    input_size: int = 224
    num_outputs: int = 1000
    #: what the weights do not say about the computation (e.g. a choice of normalisation); part of the
    #: model fingerprint, so caches made with another choice are refused like caches of other weights
    fingerprint_extra: str = ""

    def __init__(self, module: nn.Module, *, name: str | None = None) -> None:
        self.module = module.eval()
        if name is not None:
            self.name = name
        self._valid_outputs: torch.Tensor | None = None

    # -- required by subclasses ------------------------------------------------------------
    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Map images in [0, 1] to what :attr:`module` expects (identity by default)."""
        return x

    def layers(self) -> dict[str, int]:
        """Names of the layers that can be studied, with their channel counts."""
        raise NotImplementedError

    def head(self, layer: str) -> nn.Module:
        """Module mapping images in [0, 1] to the activation of ``layer`` (N, C, H, W)."""
        raise NotImplementedError

    def tail(self, layer: str) -> nn.Module:
        """Module mapping the activation of ``layer`` to logits (N, num_outputs)."""
        raise NotImplementedError

    # -- provided --------------------------------------------------------------------------
    @property
    def valid_outputs(self) -> torch.Tensor:
        """Bool mask (num_outputs,): outputs that are real classes and may count in top-k."""
        import torch

        if self._valid_outputs is None:
            self._valid_outputs = torch.ones(self.num_outputs, dtype=torch.bool)
        return self._valid_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in [0, 1]."""
        return self.module(self.preprocess(x))

    def layer_kind(self, layer: str) -> str:
        """``"channels"`` for a convolutional layer (N, C, H, W); ``"tokens"`` for a transformer layer presented
        as (N, D, T, 1) (see :mod:`autointerp.models.tokens`)."""
        return "channels"

    def layer_layout(self, layer: str) -> tuple[Callable, Callable] | None:
        """(the layer module's own output → the (N, C, H, W) activation, and back) where they differ (a ViT's
        (N, T, D) tokens), for code that hooks the module itself; None where they are the same."""
        return None

    def scored_positions(self, layer: str) -> slice:
        """The rows (H positions) of ``layer``'s activation that count in a feature's per-image score and in its
        visualisation objective: all of them, except a ViT's prefix tokens (CLS) unless ``tokens: all``."""
        return slice(None)

    def scored_head(self, layer: str) -> nn.Module:
        """:meth:`head` restricted to :meth:`scored_positions` (what feature visualisation maximises)."""
        head = self.head(layer)
        rows = self.scored_positions(layer)
        if rows == slice(None):
            return head
        from autointerp.models.tokens import ScoredRows

        return ScoredRows(head, rows)

    def layer_module(self, layer: str) -> nn.Module | None:
        """The submodule of :attr:`module` whose output is ``layer``'s activation (for forward hooks): the module
        named ``layer``, else the one module whose dotted name ends in ``.layer`` (e.g. a TFLite graph's
        ``body.<layer>``); None when there is none or the suffix is ambiguous."""
        modules = dict(self.module.named_modules())
        if layer in modules:
            return modules[layer]
        matches = [m for name, m in modules.items() if name.endswith("." + layer)]
        return matches[0] if len(matches) == 1 else None

    def check_layer(self, layer: str) -> int:
        """Return the channel count of ``layer`` or raise a UserError listing valid layers."""
        layers = self.layers()
        if layer not in layers:
            listing = ", ".join(f"{n} ({c})" for n, c in layers.items())
            raise UserError(f"unknown layer {layer!r} for model {self.name!r}; valid layers (channels): {listing}")
        return layers[layer]

    def check_channels(self, layer: str, channels: list[int]) -> None:
        """Raise a UserError if any channel index is out of range for ``layer``."""
        n = self.check_layer(layer)
        bad = [c for c in channels if not 0 <= c < n]
        if bad:
            raise UserError(f"channel index {bad[0]} out of range for layer {layer!r} (valid: 0..{n - 1})")

    def to(self, device: str | torch.device) -> ModelAdapter:
        """Move the wrapped module to ``device``."""
        self.module.to(device)
        if self._valid_outputs is not None:
            self._valid_outputs = self._valid_outputs.to(device)
        return self


#: name -> factory(**options) -> ModelAdapter
MODELS: Registry[Callable[..., ModelAdapter]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., ModelAdapter]], Callable[..., ModelAdapter]]:
    """Decorator registering a model-adapter factory under ``name``."""
    return MODELS.register(name)


def _load_builtin_models() -> None:
    from autointerp.models import builtin  # noqa: F401  (registers on import)


MODELS.add_loader(_load_builtin_models)


def create_model(name: str, **options: object) -> ModelAdapter:
    """Create a registered model adapter by name (unknown name → error listing valid ones)."""
    return MODELS.get(name)(**options)


def list_models() -> list[str]:
    """Names of all registered model adapters."""
    return MODELS.names()
