"""ImageFolder trees: ``root/<class>/<image>``; the class folder name (e.g. a WordNet id) is the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autointerp.data.base import ImageDataset
from autointerp.data.imagefile import read_rgb
from autointerp.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class ImageFolderDataset(ImageDataset):
    """Images under ``root/<class>/``; labels are the sorted class-folder indices (0-based)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.name = self.root.name
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder not found (expected root/<class>/<image> files)")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{self.root}: no class sub-folders (expected root/<class>/<image> files)")
        files: list[Path] = []
        labels: list[int] = []
        for idx, cls in enumerate(classes):
            for f in sorted((self.root / cls).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(f)
                    labels.append(idx)
        if not files:
            raise DataError(f"{self.root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders")
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_keys = dict(enumerate(classes))

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        """The image as RGB uint8; a missing or corrupt file is a one-line DataError naming it."""
        return read_rgb(self.files[index])
