"""Downsampled-ImageNet ``.npz`` files (Chrabaszcz et al. layout, as the study used).

``data``: (N, 3·S·S) uint8 — the R plane, then G, then B, each row-major; ``labels``: (N,) ints
(1-based; for ImageNet the devkit ids of ``map_clsloc.txt`` — the label mapping says so explicitly).
Optional ``wnids`` (per image) give class keys for label mappings by WordNet id.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from autointerp.data.base import ImageDataset
from autointerp.errors import DataError


class NpzDataset(ImageDataset):
    """Images from a downsampled-ImageNet ``.npz`` file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.stem
        if not self.path.exists():
            raise DataError(f"{self.path}: dataset file not found")
        try:
            archive = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{self.path}: not a readable .npz file ({exc})") from None
        with archive:
            for key in ("data", "labels"):
                if key not in archive.files:
                    raise DataError(
                        f"{self.path}: missing key {key!r}; expected keys 'data' and 'labels' "
                        f"(found {', '.join(archive.files)})"
                    )
            data = archive["data"]
            labels = archive["labels"]
            wnids = archive["wnids"] if "wnids" in archive.files else None
        if data.ndim != 2 or data.dtype != np.uint8:
            raise DataError(
                f"{self.path}: key 'data' must be a 2-D uint8 array (N, 3*S*S); got {data.dtype} {data.shape}"
            )
        side = math.isqrt(data.shape[1] // 3)
        if 3 * side * side != data.shape[1]:
            raise DataError(f"{self.path}: key 'data' rows have {data.shape[1]} values; expected 3*S*S (e.g. 12288)")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != data.shape[0]:
            raise DataError(f"{self.path}: key 'labels' has {labels.shape[0]} entries for {data.shape[0]} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{self.path}: key 'labels' must hold integers; got {labels.dtype}")
        self.side = side
        self._data = data
        self.labels = labels.astype(np.int64)
        if wnids is not None and len(wnids) == len(labels):
            self.class_keys = {int(lab): str(w) for lab, w in zip(self.labels, wnids, strict=True)}

    def __len__(self) -> int:
        return self._data.shape[0]

    def image(self, index: int) -> np.ndarray:
        """(S, S, 3) uint8 from the planar row."""
        return np.ascontiguousarray(self._data[index].reshape(3, self.side, self.side).transpose(1, 2, 0))
