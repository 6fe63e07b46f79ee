"""The dataset contract shared by every stage.

An :class:`ImageDataset` holds images at their native resolution (``uint8`` H×W×3 RGB) with integer
*dataset* labels; :mod:`autointerp.data.labels` maps those to model outputs. ``batch`` gives the
model-ready float tensor: bilinear resize to the model's input size (the study upscaled 64→224).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch


class ImageDataset:
    """Base class: subclasses implement ``__len__``, ``image(i)`` and set ``labels``."""

    name: str = "dataset"
    #: (N,) int64 dataset labels (e.g. 1-based ILSVRC devkit ids for the downsampled-ImageNet files)
    labels: np.ndarray
    #: optional names of the label space: ``class_keys[label]`` -> a key such as a WordNet id
    class_keys: dict[int, str] | None = None
    #: optional per-image ground-truth concepts (synthetic demo): name -> (N,) array of values
    concepts: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as ``uint8`` (H, W, 3) RGB at native resolution."""
        raise NotImplementedError

    def images(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Several images (native resolution)."""
        return [self.image(int(i)) for i in indices]

    def batch(self, indices: Sequence[int], size: int) -> torch.Tensor:
        """Float tensor (B, 3, size, size) in [0, 1], bilinearly resized (no antialiasing, as TF1's
        ``tf.image.resize_bilinear`` the study used)."""
        import torch
        import torch.nn.functional as F

        arrays = self.images(indices)
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
            if x.shape[-1] != size or x.shape[-2] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            return x.clamp_(0.0, 1.0)
        parts = [self.batch([i], size) for i in indices]
        return torch.cat(parts, dim=0)


class SubsetDataset(ImageDataset):
    """A view of ``base`` restricted to ``indices`` (keeps their order)."""

    def __init__(self, base: ImageDataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.name = base.name
        self.labels = np.asarray(base.labels)[self.indices]
        self.class_keys = base.class_keys
        self.concepts = {k: np.asarray(v)[self.indices] for k, v in base.concepts.items()} if base.concepts else None

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, index: int) -> np.ndarray:
        return self.base.image(int(self.indices[index]))
