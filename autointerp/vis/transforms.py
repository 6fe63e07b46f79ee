"""Lucid/lucent's standard robustness transforms, batched, with independent draws per image.

lucent's ``transform.standard_transforms`` is ``pad(12, constant 0.5)``, ``jitter(8)``,
``random_scale(0.90..1.10 in 11 steps)``, ``random_rotate(-10..10 degrees, plus 5 extra zeros)``,
``jitter(4)``, each drawing one random value per call (shared by the whole batch, from numpy's global
RNG). Here the same distributions are drawn **per image from that image's own generator**, for every
step in advance, and the whole chain is one affine warp (``affine_grid`` + ``grid_sample``) on a fixed
canvas of ``size + 2·pad`` px. Differences to lucent, all harmless: the canvas does not grow when the
scale is above 1 (only padding falls off the edge), jitter is centred (lucent shifts in one direction
only) and everything outside the image reads as the pad colour (lucent's translations shift in black).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


def _default_scales() -> tuple[float, ...]:
    return tuple(1 + (i - 5) / 50.0 for i in range(11))


def _default_angles() -> tuple[float, ...]:
    return tuple(float(a) for a in range(-10, 11)) + (0.0,) * 5


@dataclass(frozen=True)
class TransformSettings:
    """Robustness transforms; the defaults are lucent's ``standard_transforms``."""

    pad: int = 12
    pad_value: float = 0.5
    jitter: int = 8
    scales: tuple[float, ...] = field(default_factory=_default_scales)
    angles: tuple[float, ...] = field(default_factory=_default_angles)  # degrees
    jitter2: int = 4

    def draw(self, rng: np.random.Generator, steps: int, n: int) -> np.ndarray:
        """Random parameters for ``n`` images over ``steps`` steps: ``(steps, n, 6)`` float32 rows of
        ``(dx1, dy1, scale, angle_degrees, dx2, dy2)``."""
        out = np.zeros((steps, n, 6), dtype=np.float32)
        if self.jitter > 1:
            out[..., 0:2] = rng.integers(0, self.jitter, size=(steps, n, 2)) - self.jitter // 2
        out[..., 2] = np.asarray(self.scales, dtype=np.float32)[rng.integers(0, len(self.scales), size=(steps, n))]
        out[..., 3] = np.asarray(self.angles, dtype=np.float32)[rng.integers(0, len(self.angles), size=(steps, n))]
        if self.jitter2 > 1:
            out[..., 4:6] = rng.integers(0, self.jitter2, size=(steps, n, 2)) - self.jitter2 // 2
        return out


def affine_thetas(params: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """``affine_grid`` matrices ``(..., 2, 3)`` for transform parameters ``(..., 6)`` (see
    :meth:`TransformSettings.draw`).

    Forward map in pixels about the canvas centre ``c``: ``p' = R·s·(p + t1 − c) + c + t2``.
    ``affine_grid`` wants the inverse in normalised coordinates of the output canvas (``P`` px),
    rescaled to the input image (``size`` px): ``u = (P/size)·(R⁻¹(u' − 2·t2/P)/s − 2·t1/P)``.
    """
    canvas = size + 2 * pad
    t1 = params[..., 0:2] * (2.0 / canvas)
    s = params[..., 2:3]
    a = params[..., 3] * (math.pi / 180.0)
    t2 = params[..., 4:6] * (2.0 / canvas)
    cos, sin = torch.cos(a), torch.sin(a)
    # R^-1 for a rotation by a: [[cos, sin], [-sin, cos]]
    rinv = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    lin = rinv / s.unsqueeze(-1)
    offset = -(lin @ t2.unsqueeze(-1)).squeeze(-1) - t1
    theta = torch.cat([lin, offset.unsqueeze(-1)], dim=-1)
    return theta * (canvas / size)


def apply_transforms(images: torch.Tensor, theta: torch.Tensor, pad: int, pad_value: float = 0.5) -> torch.Tensor:
    """Warp ``images`` (B, 3, S, S) with per-image ``theta`` (B, 2, 3) onto a ``S + 2·pad`` canvas;
    everything outside the image reads as ``pad_value``."""
    b, c, s, _ = images.shape
    canvas = s + 2 * pad
    grid = F.affine_grid(theta, [b, c, canvas, canvas], align_corners=False)
    out = F.grid_sample(images - pad_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + pad_value
