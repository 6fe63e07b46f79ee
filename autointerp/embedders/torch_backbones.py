"""torchvision and timm ImageNet backbones as embedders (classifier removed, pooled features)."""

from __future__ import annotations

import os
from typing import Any

from autointerp.embedders import register_embedder
from autointerp.embedders._offline import hub_offline_if_unreachable, network_reachable, weights_error
from autointerp.embedders.base import file_fingerprint, resolve_device
from autointerp.embedders.torch_image import TorchImageEmbedder
from autointerp.errors import ConfigError, WeightsError
from autointerp.extras import require


def _strip_classifier(net: Any) -> Any:
    from torch import nn

    for attr in ("fc", "classifier", "heads", "head"):
        if hasattr(net, attr) and isinstance(getattr(net, attr), nn.Module):
            setattr(net, attr, nn.Identity())
            return net
    raise ConfigError(f"rate.embedder.model: cannot find the classifier of {type(net).__name__} to remove")


@register_embedder
class TorchvisionEmbedder(TorchImageEmbedder):
    """A torchvision classification model without its classifier.

    ``weights``: null (random init, seeded), a weights enum name such as ``DEFAULT`` or
    ``IMAGENET1K_V2`` (from the torch hub cache, downloaded when online), or a local state-dict file.
    """

    kind = "torchvision"

    def __init__(
        self,
        model: str = "resnet50",
        weights: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        seed: int = 0,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        import torch
        import torchvision

        if model not in torchvision.models.list_models(module=torchvision.models):
            raise ConfigError(f"rate.embedder.model: unknown torchvision classification model {model!r}")
        self.batch_size, self.device, self.input_size = int(batch_size), resolve_device(device), int(input_size)
        self.resample = "bilinear"
        torch.manual_seed(seed)
        if weights is None:
            net = torchvision.models.get_model(model, weights=None)
            wid = f"random-init-seed{seed}"
        elif os.path.isfile(os.path.expanduser(weights)):
            net = torchvision.models.get_model(model, weights=None)
            state = torch.load(os.path.expanduser(weights), map_location="cpu", weights_only=True)
            try:
                net.load_state_dict(state)
            except RuntimeError as exc:
                raise WeightsError(f"{weights}: not a state dict of torchvision {model} ({str(exc)[:120]})") from None
            wid = f"file-{file_fingerprint(os.path.expanduser(weights))}"
        else:
            try:
                enum = torchvision.models.get_model_weights(model)[weights]
            except KeyError:
                names = ", ".join(w.name for w in torchvision.models.get_model_weights(model))
                raise ConfigError(f"rate.embedder.weights: {weights!r} not among {names}, or a local file") from None
            cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
            if not os.path.exists(cached) and not network_reachable("download.pytorch.org"):
                raise WeightsError(
                    f"torchvision {model} weights {weights}: not in {cached} and download.pytorch.org is unreachable; "
                    "copy the file there or pass a local state-dict file as rate.embedder.weights"
                )
            try:
                net = torchvision.models.get_model(model, weights=enum)
            except Exception as exc:
                raise weights_error(f"torchvision {model} weights {weights}", exc, "pass a local file") from None
            wid = weights
        self.module = _strip_classifier(net).eval().to(self.device)
        self.id = f"torchvision:{model}:{wid}:{self.input_size}"


@register_embedder
class TimmEmbedder(TorchImageEmbedder):
    """A timm model with ``num_classes=0`` (pooled features); ``pretrained`` from the HF hub
    (offline-aware) or ``checkpoint`` a local file."""

    kind = "timm"

    def __init__(
        self,
        model: str = "resnet50",
        pretrained: bool = False,
        checkpoint: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        import torch

        timm = require("timm", "timm", "the timm embedder")

        if not timm.list_models(model):
            raise ConfigError(f"rate.embedder.model: unknown timm model {model!r}")
        if checkpoint is not None and not os.path.isfile(os.path.expanduser(checkpoint)):
            raise WeightsError(f"rate.embedder.checkpoint: {checkpoint} not found")
        self.batch_size, self.device = int(batch_size), resolve_device(device)
        self.resample = "bilinear"
        torch.manual_seed(seed)
        try:
            with hub_offline_if_unreachable():
                net = timm.create_model(
                    model,
                    pretrained=bool(pretrained),
                    num_classes=0,
                    checkpoint_path=os.path.expanduser(checkpoint) if checkpoint else "",
                )
        except Exception as exc:
            raise weights_error(f"timm {model}", exc, "pass a local file as rate.embedder.checkpoint") from None
        cfg = timm.data.resolve_data_config({}, model=net)
        self.input_size = int(cfg["input_size"][-1])
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.module = net.eval().to(self.device)
        if checkpoint:
            wid = f"file-{file_fingerprint(os.path.expanduser(checkpoint))}"
        else:
            wid = "pretrained" if pretrained else f"random-init-seed{seed}"
        self.id = f"timm:{model}:{wid}:{self.input_size}"
