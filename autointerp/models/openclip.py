"""``open_clip``: a CLIP image tower as a zero-shot classifier, so its transformer blocks can be studied like any
classifier's layers.

Logits are CLIP's zero-shot scores, ``logit_scale · cos(image embedding, class embedding)``, where a class's
embedding is the normalised mean of its normalised text embeddings over the prompt templates (the OpenAI recipe).
Classes default to the 1,000 ImageNet classes in torchvision's order (``label_mapping: sorted_wnid``, offset 0);
``classes: FILE`` takes one class name per line. The class embeddings are computed once per model, weights, classes
and templates, and cached under ``$AUTOINTERP_CACHE`` (they are part of the module, so of its weights fingerprint).
Layers are the image tower's blocks (``visual.transformer.resblocks.6``: token layers, see
:mod:`autointerp.models.tokens`) and its patch convolution (``visual.conv1``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autointerp.errors import UserError
from autointerp.models.base import register_model
from autointerp.models.generic import ModuleAdapter

#: ``templates: simple`` — one prompt per class
SIMPLE_TEMPLATES = ("a photo of a {}.",)


class ZeroShotClassifier(nn.Module):
    """``visual`` (images → embeddings) with a fixed zero-shot head over ``class_embeddings`` (C, E), unit rows."""

    def __init__(self, visual: nn.Module, class_embeddings: torch.Tensor, logit_scale: float) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("class_embeddings", class_embeddings.float())
        self.logit_scale = float(logit_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.visual(x)
        features = features / features.norm(dim=-1, keepdim=True)
        return self.logit_scale * features @ self.class_embeddings.T


def class_names(classes: str) -> list[str]:
    """``imagenet`` → open_clip's 1,000 ImageNet class names (torchvision's order); else a file, one name a line."""
    if classes == "imagenet":
        from open_clip import zero_shot_metadata

        return list(zero_shot_metadata.IMAGENET_CLASSNAMES)
    path = Path(classes).expanduser()
    if not path.is_file():
        raise UserError(
            f"model option 'classes' = {classes!r}: expected 'imagenet' or a file with one class name a line"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise UserError(f"{path}: expected at least 2 class names, one a line; found {len(names)}")
    return names


def prompt_templates(templates: str | Sequence[str]) -> list[str]:
    """``simple`` (one prompt), ``openai`` (the 80 ImageNet prompts of the CLIP paper), or a list with ``{}``."""
    if templates == "simple":
        return list(SIMPLE_TEMPLATES)
    if templates == "openai":
        from open_clip import zero_shot_metadata

        return [t("{}") for t in zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES]
    if isinstance(templates, str) or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise UserError(f"model option 'templates' = {templates!r}: expected simple, openai or a list of '...{{}}...'")
    return list(templates)


def zero_shot_weights(encode_text, names: list[str], templates: list[str], batch_size: int = 256) -> torch.Tensor:
    """(C, E) unit class embeddings: per class, the normalised mean of its normalised prompt embeddings."""
    rows = []
    for name in names:
        rows.extend(t.format(name) for t in templates)
    chunks = [encode_text(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    text = torch.from_numpy(np.concatenate(chunks)).float()
    text = text / text.norm(dim=-1, keepdim=True)
    per_class = text.reshape(len(names), len(templates), -1).mean(dim=1)
    return per_class / per_class.norm(dim=-1, keepdim=True)


@register_model("open_clip")
def create_open_clip(
    weights: str | None = None,
    pretrained: bool = True,
    arch: str = "ViT-B-32",
    tag: str = "laion2b_s34b_b79k",
    classes: str = "imagenet",
    templates: str | list[str] = "simple",
    tokens: str = "patch",
    seed: int = 0,
) -> ModuleAdapter:
    """An open_clip image tower (ViT-B-32, ...) as a zero-shot classifier over class names. ``weights`` = a local
    checkpoint, else the published ``tag`` (Hugging Face cache; a one-line error offline), else random init
    (``pretrained: false``, seeded by ``seed``)."""
    from autointerp.demo.model import default_cache_dir
    from autointerp.embedders.open_clip_embedder import OpenClipEmbedder

    source = weights if weights else (tag if pretrained else None)
    embedder = OpenClipEmbedder(arch, pretrained=source, device="cpu", seed=seed)
    names, prompts = class_names(classes), prompt_templates(templates)
    key = hashlib.sha256("\n".join([embedder.id, *names, "--", *prompts]).encode()).hexdigest()[:16]
    cache = default_cache_dir() / "zero_shot" / f"{key}.npy"
    if cache.is_file():
        class_embeddings = torch.from_numpy(np.load(cache))
    else:
        class_embeddings = zero_shot_weights(embedder.encode_text, names, prompts)
        from autointerp.atomic import save_npy

        save_npy(cache, class_embeddings.numpy())
    net = embedder.module
    scale = float(net.logit_scale.detach().exp()) if hasattr(net, "logit_scale") else 100.0
    classifier = ZeroShotClassifier(net.visual, class_embeddings, scale).eval()
    return ModuleAdapter(
        classifier,
        name=f"open_clip:{arch}",
        input_size=embedder.input_size,
        mean=embedder.mean,
        std=embedder.std,
        num_outputs=len(names),
        max_depth=3,  # visual.transformer.resblocks.N
        tokens=tokens,
    )
