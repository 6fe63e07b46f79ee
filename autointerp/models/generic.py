"""Adapters for any torchvision or timm classifier, and for any ``nn.Module`` from Python.

Heads stop the forward pass at the layer (hook); tails are cut out of the traced graph with
``torch.fx`` (see :mod:`autointerp.models.fxsplit`). Layers are the named submodules up to two
levels deep with 4-D outputs (e.g. ``layer4``, ``layer4.1``, ``features.10``).
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from autointerp.errors import UserError, WeightsError
from autointerp.extras import require
from autointerp.models.base import register_model
from autointerp.models.inceptionv1 import offline
from autointerp.models.split import HookFxAdapter
from autointerp.models.tokens import TOKEN_MODES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModuleAdapter(HookFxAdapter):
    """Wrap any classifier ``nn.Module`` taking normalised images and returning logits."""

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str = "module",
        input_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_outputs: int | None = None,
        valid_outputs: torch.Tensor | None = None,
        max_depth: int = 2,
        tokens: str = "patch",
    ) -> None:
        super().__init__(module, name=name)
        if tokens not in TOKEN_MODES:
            raise UserError(f"model option 'tokens' = {tokens!r}; expected one of {', '.join(TOKEN_MODES)}")
        self.tokens = tokens
        if tokens != "patch":
            self.fingerprint_extra = f"tokens={tokens}"  # other scores from the same weights: caches must not mix
        self._prefix: dict[str, int] = {}  # token layer -> its prefix tokens (CLS, registers)
        self.input_size = int(input_size)
        self.register_mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.max_depth = max_depth
        self._layers: dict[str, int] | None = None
        if num_outputs is None:
            p = next(module.parameters())
            with torch.no_grad():
                out = module(torch.zeros(1, 3, self.input_size, self.input_size, device=p.device))
            num_outputs = int(out.shape[-1])
        self.num_outputs = num_outputs
        if valid_outputs is not None:
            self._valid_outputs = valid_outputs.bool()

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std."""
        return (x - self.register_mean.to(x.device, x.dtype)) / self.register_std.to(x.device, x.dtype)

    def layers(self) -> dict[str, int]:
        """Named submodules with 4-D outputs (channels) up to ``max_depth`` levels deep, and with ``(N, T, D)``
        outputs (a transformer's tokens, e.g. ``encoder.layers.encoder_layer_6``, ``blocks.6``) one level deeper;
        a token layer's count is its D units."""
        if self._layers is None:
            from autointerp.models.fxsplit import layer_shapes
            from autointerp.models.tokens import prefix_tokens

            names = [n for n, _ in self.module.named_modules() if n and n.count(".") <= self.max_depth]
            p = next(self.module.parameters())
            example = torch.zeros(1, 3, self.input_size, self.input_size, device=p.device)
            shapes = layer_shapes(self.module, self.preprocess(example), names)
            self._layers = {}
            for n, s in shapes.items():
                if len(s) == 4 and n.count(".") < self.max_depth:
                    self._layers[n] = s[1]
                elif len(s) == 3 and s[1] > 1:
                    self._layers[n] = s[2]
                    self._prefix[n] = prefix_tokens(self.module, s[1])
        return self._layers

    def layer_kind(self, layer: str) -> str:
        self.check_layer(layer)
        return "tokens" if layer in self._prefix else "channels"

    def layer_layout(self, layer: str) -> tuple[Callable, Callable] | None:
        if self.layer_kind(layer) == "tokens":
            from autointerp.models.tokens import from_token_grid, to_token_grid

            return to_token_grid, from_token_grid
        return None

    def scored_positions(self, layer: str) -> slice:
        if self.layer_kind(layer) == "tokens" and self.tokens == "patch":
            return slice(self._prefix[layer], None)
        return slice(None)

    def head(self, layer: str) -> nn.Module:
        head = super().head(layer)
        if self.layer_kind(layer) == "tokens":
            from autointerp.models.tokens import TokenGrid

            return TokenGrid(head)
        return head

    def scored_head(self, layer: str) -> nn.Module:
        head = super().scored_head(layer)
        if self.layer_kind(layer) == "tokens":
            from autointerp.models.tokens import ResizeTo

            return ResizeTo(head, self.input_size)
        return head

    def tail(self, layer: str) -> nn.Module:
        tail = super().tail(layer)
        if self.layer_kind(layer) == "tokens":
            from autointerp.models.tokens import FromTokenGrid

            return FromTokenGrid(tail)
        return tail


@contextmanager
def _network_timeout(seconds: float = 15.0):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _load_state(module: nn.Module, path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found (model.weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        module.load_state_dict(state)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"{path}: not a state dict for this architecture ({str(exc).splitlines()[0]})") from None


@register_model("torchvision")
def create_torchvision(
    weights: str | None = None,
    pretrained: bool = True,
    arch: str = "resnet18",
    tag: str = "DEFAULT",
    tokens: str = "patch",
) -> ModuleAdapter:
    """Any torchvision classifier by name (``options: {arch: resnet50, tag: IMAGENET1K_V2}``).

    ``weights`` = a local state-dict file; otherwise, when ``pretrained``, torchvision's published
    weights for ``tag`` (from the torch hub cache, downloaded when online). Vision transformers
    (``vit_b_16`` …): ``tokens`` = which tokens count in a unit's score, ``patch`` (default) or ``all``.
    """
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(arch)
    except ValueError:
        valid = ", ".join(torchvision.models.list_models(module=torchvision.models)[:40])
        raise UserError(f"unknown torchvision model {arch!r} (model.options.arch); e.g. {valid}, ...") from None
    if weights or not pretrained:
        module = builder(weights=None)
        if weights:
            _load_state(module, Path(weights))
    else:
        wenum = torchvision.models.get_model_weights(arch)
        w = wenum[tag] if tag != "DEFAULT" else wenum.DEFAULT
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
        if not cached.exists() and offline():
            raise WeightsError(f"torchvision weights {w.url} not cached at {cached} and offline mode is set")
        try:
            with _network_timeout():
                module = builder(weights=w)
        except OSError as exc:
            raise WeightsError(
                f"could not download {w.url} ({exc}); put the file at {cached} or pass model.weights=PATH"
            ) from None
    return ModuleAdapter(module.eval(), name=f"torchvision:{arch}", tokens=tokens)


@register_model("timm")
def create_timm(
    weights: str | None = None,
    pretrained: bool = True,
    arch: str = "resnet18",
    input_size: int | None = None,
    tokens: str = "patch",
) -> ModuleAdapter:
    """Any timm classifier by name (``options: {arch: ...}``); weights from a local file or the HF hub.
    ViTs/DeiT: ``tokens`` as for ``torchvision``."""
    timm = require("timm", "timm", "the timm model adapter")

    if arch not in timm.list_models():
        raise UserError(f"unknown timm model {arch!r} (model.options.arch); see timm.list_models()")
    if weights:
        module = timm.create_model(arch, pretrained=False)
        _load_state(module, Path(weights))
    elif not pretrained:
        module = timm.create_model(arch, pretrained=False)
    else:
        if offline():
            raise WeightsError(
                f"timm model {arch!r} needs pretrained weights but offline mode is set; "
                "pass model.weights=/path/to/weights"
            )
        try:
            with _network_timeout():
                module = timm.create_model(arch, pretrained=True)
        except Exception as exc:
            raise WeightsError(
                f"could not fetch timm weights for {arch!r} ({str(exc).splitlines()[0]}); "
                "pass model.weights=/path/to/weights"
            ) from None
    cfg = module.pretrained_cfg
    size = input_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return ModuleAdapter(
        module.eval(),
        name=f"timm:{arch}",
        input_size=size,
        mean=cfg.get("mean", IMAGENET_MEAN),
        std=cfg.get("std", IMAGENET_STD),
        tokens=tokens,
    )


@register_model("module")
def create_module(
    weights: str | None = None,
    pretrained: bool = True,
    factory: str | None = None,
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    tokens: str = "patch",
) -> ModuleAdapter:
    """Any ``nn.Module`` built by ``factory`` ("package.module:callable"), weights from a local file;
    ``tokens`` as for ``torchvision``.

    From Python, wrap a module directly: ``ModuleAdapter(my_module, input_size=..., mean=..., std=...)``.
    """
    if not factory or ":" not in factory:
        raise UserError("model 'module' needs model.options.factory = 'package.module:callable'")
    mod_name, _, attr = factory.partition(":")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"model.options.factory {factory!r}: cannot import ({exc})") from None
    module = fn()
    if weights:
        _load_state(module, Path(weights))
    return ModuleAdapter(module.eval(), name=factory, input_size=input_size, mean=mean, std=std, tokens=tokens)
