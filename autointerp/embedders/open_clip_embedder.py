"""open_clip image (and text) embedder.

``pretrained`` is an open_clip tag (e.g. ``laion2b_s34b_b79k``; from the local hub cache, or
downloaded when online), a local checkpoint file, or null for a random init (seeded; benchmarks
and tests). ``HF_HUB_OFFLINE`` is respected; when the hub is unreachable, offline mode is forced
so a missing download fails in seconds with a :class:`~autointerp.errors.WeightsError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.embedders import register_embedder
from autointerp.embedders._offline import hub_offline_if_unreachable, weights_error
from autointerp.embedders.base import file_fingerprint, resolve_device
from autointerp.embedders.torch_image import TorchImageEmbedder
from autointerp.errors import ConfigError, WeightsError
from autointerp.extras import require


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


@register_embedder
class OpenClipEmbedder(TorchImageEmbedder):
    """CLIP-style embedder from open_clip (model name + pretrained tag or local checkpoint)."""

    kind = "open_clip"
    supports_text = True

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        device: str = "auto",
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        import torch

        open_clip = require("open_clip", "clip", "the open_clip embedder")

        if model not in open_clip.list_models():
            sample = ", ".join(open_clip.list_models()[:12])
            raise ConfigError(f"rate.embedder.model: unknown open_clip model {model!r}; e.g. {sample}, ...")
        self.model_name = model
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        pretrained_arg: str | None = pretrained
        if pretrained is None:
            weights_id = f"random-init-seed{seed}"
        elif os.path.isfile(os.path.expanduser(pretrained)):
            pretrained_arg = os.path.expanduser(pretrained)
            weights_id = f"file-{file_fingerprint(pretrained_arg)}"
        elif _looks_like_path(pretrained):
            raise WeightsError(f"rate.embedder.pretrained: checkpoint file {pretrained} not found")
        else:
            tags = open_clip.list_pretrained_tags_by_model(model)
            if pretrained not in tags:
                raise ConfigError(
                    f"rate.embedder.pretrained: {pretrained!r} is not a tag of {model}; "
                    f"tags: {', '.join(tags) or '(none)'}; or give a local checkpoint file"
                )
            weights_id = pretrained
        torch.manual_seed(seed)
        try:
            with hub_offline_if_unreachable():
                net = open_clip.create_model(model, pretrained=pretrained_arg, device=self.device)
        except (WeightsError, ConfigError):
            raise
        except Exception as exc:
            raise weights_error(
                f"open_clip {model} pretrained={pretrained!r}",
                exc,
                "download them on a connected machine (they go to the Hugging Face cache) or pass a local "
                "checkpoint file as rate.embedder.pretrained",
            ) from None
        self.module = net.eval()
        cfg: dict[str, Any] = getattr(net.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(net.visual, "image_size", 224))
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self._tokenizer = open_clip.get_tokenizer(model)
        self.id = f"open_clip:{model}:{weights_id}:{self.input_size}"

    def _forward(self, x: Any) -> Any:
        return self.module.encode_image(x)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self._tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            out = self.module.encode_text(tokens)
        return out.float().cpu().numpy()
