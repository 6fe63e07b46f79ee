"""Datasets: downsampled-ImageNet ``.npz``, ImageFolder trees, the synthetic demo world."""

from __future__ import annotations

import numpy as np

from autointerp.config import DatasetConfig
from autointerp.data.base import ImageDataset, SubsetDataset
from autointerp.errors import ConfigError


def subset_indices(labels: np.ndarray, max_images: int | None, per_class: int | None) -> np.ndarray:
    """Deterministic subset: the first ``per_class`` images of each class (file order), then the first
    ``max_images`` of those (file order)."""
    idx = np.arange(len(labels))
    if per_class is not None:
        keep = np.zeros(len(labels), dtype=bool)
        seen: dict[int, int] = {}
        for i, lab in enumerate(labels):
            if seen.get(int(lab), 0) < per_class:
                seen[int(lab)] = seen.get(int(lab), 0) + 1
                keep[i] = True
        idx = idx[keep]
    if max_images is not None:
        idx = idx[:max_images]
    return idx


def load_dataset(cfg: DatasetConfig) -> ImageDataset:
    """Build the dataset described by the ``dataset`` config section (subset applied)."""
    if cfg.type == "synthetic":
        from autointerp.demo import build_synthetic_dataset

        ds: ImageDataset = build_synthetic_dataset(dict(cfg.options))
    else:
        if not cfg.path:
            raise ConfigError(f"config key 'dataset.path' is required for dataset.type={cfg.type!r}")
        if cfg.type == "npz":
            from autointerp.data.npz import NpzDataset

            ds = NpzDataset(cfg.path)
        else:
            from autointerp.data.imagefolder import ImageFolderDataset

            ds = ImageFolderDataset(cfg.path)
    if cfg.max_images is not None or cfg.per_class is not None:
        ds = SubsetDataset(ds, subset_indices(ds.labels, cfg.max_images, cfg.per_class))
    return ds


__all__ = ["ImageDataset", "SubsetDataset", "load_dataset", "subset_indices"]
