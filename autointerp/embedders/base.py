"""The :class:`Embedder` contract and image-resizing helpers shared by the built-in embedders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from autointerp.errors import UserError


class Embedder:
    """Maps uint8 (H, W, 3) RGB images to float32 vectors.

    Subclasses set ``kind`` (the config ``type``), an ``id`` that changes whenever the vectors
    would (model, weights, preprocessing, seed of a random init) — it keys the disk cache — and
    implement :meth:`_embed_batch`. Text support is optional.
    """

    kind: ClassVar[str] = ""
    #: images per forward pass
    batch_size: int = 64
    #: whether :meth:`encode_text` works
    supports_text: ClassVar[bool] = False
    #: multiplier of cosine similarities before a softmax over text prompts (CLIP's is 100)
    logit_scale: float = 100.0

    def __init__(self) -> None:
        self.id: str = self.kind

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings (n, D) float32 of uint8 (H, W, 3) images, computed in batches."""
        if len(images) == 0:
            raise ValueError("embed() needs at least one image")
        for i, img in enumerate(images):
            if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
                got = getattr(img, "dtype", type(img).__name__), getattr(img, "shape", None)
                raise ValueError(f"image {i}: expected uint8 (H, W, 3), got {got}")
        parts = [
            np.asarray(self._embed_batch(images[s : s + self.batch_size]), dtype=np.float32)
            for s in range(0, len(images), self.batch_size)
        ]
        out = np.concatenate(parts, axis=0)
        return out.reshape(len(images), -1)

    def _embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings (n, D) in the image space (only when ``supports_text``)."""
        raise UserError(
            f"embedder {self.kind!r} cannot embed text; use an open_clip embedder (rate.embedder.type: open_clip)"
        )

    def known_text(self, texts: Sequence[str]) -> np.ndarray:
        """Bool mask of the phrases this embedder can meaningfully embed (all, for real text models)."""
        return np.ones(len(texts), dtype=bool)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r})"


def resize_square(img: np.ndarray, size: int, resample: str = "bilinear") -> np.ndarray:
    """Resize a uint8 (H, W, 3) image to (size, size, 3) (aspect not kept)."""
    from PIL import Image

    if img.shape[0] == size and img.shape[1] == size:
        return img
    mode = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    return np.asarray(Image.fromarray(img).resize((size, size), mode), dtype=np.uint8)


def resize_center_crop(img: np.ndarray, size: int, resample: str = "bicubic") -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop to (size, size, 3), as CLIP's preprocessing."""
    from PIL import Image

    h, w = img.shape[:2]
    if h == w:
        return resize_square(img, size, resample)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    mode = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[resample]
    big = np.asarray(Image.fromarray(img).resize((nw, nh), mode), dtype=np.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    return big[top : top + size, left : left + size]


def resolve_device(device: str) -> str:
    """'auto' → 'cuda' when available else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def file_fingerprint(path: str) -> str:
    """A short content hash of a weights file (keys the embedding cache)."""
    import hashlib
    import os

    h = hashlib.sha1()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > (2 << 20):
            fh.seek(size - (1 << 20))
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]
