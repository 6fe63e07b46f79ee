"""Generic head/tail pieces usable by any adapter.

* :class:`HookHead` runs the original module and stops right after ``layer`` (a forward hook raises),
  so custom autograd functions (e.g. lucent's redirected ReLU, which feature visualisation relies on)
  keep working and no work is done past the layer.
* :class:`Normalized` prepends an adapter's preprocessing to a module.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from autointerp.models.base import ModelAdapter


class _StopForward(Exception):
    """Raised inside a forward hook to end the pass at the studied layer."""


class HookHead(nn.Module):
    """``x (in [0,1]) -> activation of layer``: preprocess, run ``module``, stop after ``layer``."""

    def __init__(self, module: nn.Module, layer: str, preprocess: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.layer = layer
        self._preprocess = preprocess
        self._target = dict(module.named_modules())[layer]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            captured.append(out)
            raise _StopForward

        handle = self._target.register_forward_hook(hook)
        try:
            self.module(self._preprocess(x))
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} was not reached in the forward pass")
        return captured[0]


class Normalized(nn.Module):
    """``module(preprocess(x))``: a module that accepts images in [0, 1]."""

    def __init__(self, module: nn.Module, preprocess: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self._preprocess = preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self._preprocess(x))


class HookFxAdapter(ModelAdapter):
    """Adapter whose head stops the original module at the layer (:class:`HookHead`) and whose tail is
    cut out of the traced graph (:func:`~autointerp.models.fxsplit.split_module`), cached per layer.

    ``tail_output`` names the graph node the tail returns when the module's own output is not the
    logits (e.g. lucent's InceptionV1 returns softmax probabilities).
    """

    tail_output: str | None = None

    def __init__(self, module: nn.Module, *, name: str | None = None) -> None:
        super().__init__(module, name=name)
        self._tails: dict[str, nn.Module] = {}

    def head(self, layer: str) -> nn.Module:
        self.check_layer(layer)
        return HookHead(self.module, layer, self.preprocess)

    def tail(self, layer: str) -> nn.Module:
        self.check_layer(layer)
        if layer not in self._tails:
            from autointerp.models.fxsplit import split_module

            self._tails[layer] = split_module(self.module, layer, output=self.tail_output)[1]
        return self._tails[layer]

    def to(self, device: str | torch.device) -> HookFxAdapter:
        super().to(device)
        self._tails = {k: v.to(device) for k, v in self._tails.items()}
        return self
