"""Crop dataset examples to the receptive field around the position where the feature fires most.

The receptive field is measured, not looked up: the gradient of one central unit of the layer with
respect to a random input is non-zero exactly over the input pixels that unit sees (with lucent's
redirected ReLU, and over several random inputs, dead ReLUs do not hide any of it). Deep layers such
as InceptionV1's mixed5a see more than the whole 224 px input, so their crops are the full image.
"""

from __future__ import annotations

import numpy as np


def receptive_field_fraction(head, size: int, device="cpu", trials: int = 3, seed: int = 0) -> tuple[float, float]:
    """Height and width of a central unit's receptive field as fractions of a ``size`` px input (≤ 1)."""
    import torch

    from autointerp.vis.kernels import render_mode

    gen = torch.Generator().manual_seed(seed)
    seen = torch.zeros(size, size, dtype=torch.bool)
    with render_mode(head):
        for _ in range(trials):
            x = torch.rand(1, 3, size, size, generator=gen).to(device).requires_grad_(True)
            acts = head(x)
            h, w = acts.shape[-2:]
            acts[0, :, h // 2, w // 2].sum().backward()
            seen |= (x.grad.abs().sum(dim=(0, 1)) > 0).cpu()
    rows = torch.nonzero(seen.any(dim=1)).flatten()
    cols = torch.nonzero(seen.any(dim=0)).flatten()
    if len(rows) == 0:
        return 1.0, 1.0
    return (float(rows[-1] - rows[0] + 1) / size, float(cols[-1] - cols[0] + 1) / size)


def crop_box(
    position: tuple[int, int], grid: tuple[int, int], image_shape: tuple[int, int], fraction: tuple[float, float]
) -> tuple[int, int, int, int]:
    """Box ``(top, left, bottom, right)`` in image pixels: the receptive field (``fraction`` of the
    image) centred on activation ``position`` of a ``grid``-sized map, moved inside the image."""
    (i, j), (gh, gw), (ih, iw) = position, grid, image_shape
    out = []
    for pos, g, extent, frac in ((i, gh, ih, fraction[0]), (j, gw, iw, fraction[1])):
        length = min(extent, max(1, int(round(frac * extent))))
        centre = (pos + 0.5) / g * extent
        lo = int(round(centre - length / 2))
        lo = min(max(lo, 0), extent - length)
        out.append((lo, lo + length))
    (top, bottom), (left, right) = out
    return top, left, bottom, right


def max_position(act_map: np.ndarray) -> tuple[int, int]:
    """Row and column of the largest value of an (H, W) activation map."""
    flat = int(np.argmax(act_map))
    return divmod(flat, act_map.shape[1])
