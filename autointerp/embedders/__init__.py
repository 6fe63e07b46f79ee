"""Image embedders shared by every similarity rater.

An :class:`Embedder` maps uint8 (H, W, 3) images to vectors; some can also embed text
(``supports_text``). Built-ins (``type`` in the config's ``rate.embedder``):

* ``handcrafted`` — weight-free colour/texture descriptor (the demo; no downloads);
* ``open_clip`` — an open_clip model: ``model`` + ``pretrained`` (a tag, a local checkpoint file,
  or null for random init); respects ``HF_HUB_OFFLINE`` and fails fast when offline;
* ``torchvision`` / ``timm`` — ImageNet backbones with the classifier removed;
* ``tflite`` — a TFLite embedding model such as the Coral MobileNet embedding extractor.

Embeddings are cached by :class:`autointerp.embedders.cache.EmbeddingCache` (one row per image
content per embedder id).
"""

from __future__ import annotations

from typing import Any

from autointerp.embedders.base import Embedder
from autointerp.errors import ConfigError, UserError
from autointerp.registry import Registry

EMBEDDERS: Registry[type[Embedder]] = Registry("embedder")


def register_embedder(cls: type[Embedder]) -> type[Embedder]:
    """Class decorator: register an :class:`Embedder` subclass under its ``kind``."""
    EMBEDDERS.register(cls.kind, cls)
    return cls


def _load_builtins() -> None:
    """Import the built-in embedder modules (plain imports: a broken one fails with its real error).

    None of them imports its optional package (open_clip, timm, LiteRT, dreamsim) at import time; each
    embedder's ``__init__`` does, through :func:`autointerp.extras.require`.
    """
    from autointerp.embedders import (  # noqa: F401
        dreamsim,
        handcrafted,
        open_clip_embedder,
        tflite,
        torch_backbones,
    )


EMBEDDERS.add_loader(_load_builtins)


def create_embedder(spec: dict[str, Any] | str) -> Embedder:
    """Build an embedder from a config dict such as ``{"type": "open_clip", "model": "ViT-B-32"}``."""
    import inspect

    if isinstance(spec, str):
        spec = {"type": spec}
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind is None:
        raise ConfigError(f"rate.embedder: missing key 'type'; valid types: {', '.join(EMBEDDERS.names())}")
    try:
        cls = EMBEDDERS.get(str(kind))
    except UserError as exc:  # an unknown type; a broken embedder module raises its real error
        raise ConfigError(f"rate.embedder.type: {exc}") from None
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        raise ConfigError(
            f"rate.embedder: unknown key {unknown[0]!r} for type {kind!r}; allowed keys: {', '.join(allowed)}"
        )
    return cls(**spec)


def list_embedders() -> list[str]:
    """Names of the registered embedder types."""
    return EMBEDDERS.names()


__all__ = ["EMBEDDERS", "Embedder", "create_embedder", "list_embedders", "register_embedder"]
