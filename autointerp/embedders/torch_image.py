"""Shared machinery of embedders that run a torch module on normalised images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from autointerp.embedders.base import Embedder, resize_center_crop


class TorchImageEmbedder(Embedder):
    """Resize/centre-crop to ``input_size``, normalise with ``mean``/``std``, run ``module``."""

    module: Any
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    device: str = "cpu"
    resample: str = "bicubic"

    def _forward(self, x: Any) -> Any:
        return self.module(x)

    def _embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        arr = np.stack([resize_center_crop(img, self.input_size, self.resample) for img in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.device)
        with torch.inference_mode():
            out = self._forward(x)
        out = out.float().flatten(1)
        return out.cpu().numpy()
