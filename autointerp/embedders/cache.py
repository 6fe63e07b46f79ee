"""Disk cache of embeddings keyed by image content and embedder id.

Every image (visualisation PNG, dataset example, dataset image for a null distribution) is hashed
by its pixels; the cache maps that hash to the embedding of the current embedder, so an image is
embedded once however many raters and features use it, and again never on a rerun.
File: ``<folder>/<embedder id slug>.npz`` (``keys``, ``embeddings``), written atomically.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autointerp.embedders.base import Embedder
from autointerp.errors import DataError


def image_key(img: np.ndarray) -> str:
    """Content hash of a uint8 image (shape included)."""
    h = hashlib.sha1(f"{img.shape}|{img.dtype}|".encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")
    return f"{slug[:80]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


class EmbeddingCache:
    """Wraps an :class:`Embedder` with a content-keyed (memory + optional disk) cache.

    ``computed`` counts images actually embedded; ``requested`` counts look-ups.
    """

    def __init__(self, embedder: Embedder, folder: str | Path | None = None) -> None:
        self.embedder = embedder
        self.file = Path(folder) / f"{_slug(embedder.id)}.npz" if folder is not None else None
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self._dirty = False
        self.computed = 0
        self.requested = 0
        if self.file is not None and self.file.exists():
            self._read()

    def _read(self) -> None:
        assert self.file is not None
        try:
            with np.load(self.file, allow_pickle=False) as data:
                keys, emb = data["keys"], data["embeddings"]
        except Exception as exc:
            raise DataError(f"{self.file}: corrupt embedding cache ({exc}); delete it to recompute") from None
        if len(keys) != len(emb):
            raise DataError(f"{self.file}: corrupt embedding cache (keys/embeddings differ); delete it")
        self._index = {str(k): i for i, k in enumerate(keys)}
        self._rows = list(emb.astype(np.float32))
        self._matrix = None

    @staticmethod
    def key(img: np.ndarray) -> str:
        """Content key of an image."""
        return image_key(img)

    def has(self, key: str) -> bool:
        """Whether ``key`` is cached."""
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def embed(self, images: Sequence[np.ndarray], keys: Sequence[str] | None = None) -> np.ndarray:
        """Embeddings of ``images``: cached rows where present, computed (once) otherwise."""
        keys = [image_key(im) for im in images] if keys is None else list(keys)
        if len(keys) != len(images):
            raise ValueError("images and keys differ in length")
        todo: dict[str, np.ndarray] = {}
        for k, im in zip(keys, images, strict=True):
            if k not in self._index and k not in todo:
                todo[k] = im
        if todo:
            self.add(list(todo), self.embedder.embed(list(todo.values())))
        return self.get(keys)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store embeddings computed elsewhere (e.g. by Ray workers) under their images' content keys."""
        if len(keys) != len(vectors):
            raise ValueError("keys and vectors differ in length")
        for k, v in zip(keys, vectors, strict=True):
            if k not in self._index:
                self._index[k] = len(self._rows)
                self._rows.append(np.asarray(v, dtype=np.float32))
                self.computed += 1
        self._matrix = None
        self._dirty = True

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Cached embeddings (n, D) for ``keys`` (all must be cached)."""
        self.requested += len(keys)
        if self._matrix is None or len(self._matrix) != len(self._rows):
            self._matrix = np.stack(self._rows) if self._rows else np.zeros((0, 0), np.float32)
        idx = np.array([self._index[k] for k in keys], dtype=np.int64)
        return self._matrix[idx] if len(idx) else np.zeros((0, self._matrix.shape[-1]), np.float32)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings (cached like images, keyed by the text)."""
        keys = ["text:" + hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in self._index))
        if todo:
            vecs = np.concatenate([self.embedder.encode_text(todo[i : i + 256]) for i in range(0, len(todo), 256)])
            for t, v in zip(todo, vecs, strict=True):
                self._index["text:" + hashlib.sha1(t.encode("utf-8")).hexdigest()] = len(self._rows)
                self._rows.append(np.asarray(v, dtype=np.float32))
            self._matrix = None
            self._dirty = True
        return self.get(keys)

    def flush(self) -> None:
        """Write new embeddings to disk (atomically)."""
        if self.file is None or not self._dirty:
            return
        from autointerp.atomic import atomic_path

        keys = np.array(sorted(self._index, key=self._index.get))
        emb = np.stack(self._rows)
        with atomic_path(self.file, suffix=".npz") as tmp:
            np.savez(tmp, keys=keys, embeddings=emb)
        self._dirty = False
