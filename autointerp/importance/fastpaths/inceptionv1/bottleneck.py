"""A batch of pairs' bottleneck change ``Δq = relu(p + w ⊗ δ) - relu(p)``, formed where it is read.

Ablating one ``mixed5a`` channel changes a ``mixed5b`` bottleneck's pre-activations ``p`` (H, W, C)
by the channel's weight column ``w`` (C,) times its spatial change ``δ`` (H, W). The tiers of
:mod:`.path` that read ``Δq`` (9,408 floats per pair for the 3×3 branch)
form it themselves from ``p``, ``w`` and ``δ``: writing it for every pair of a batch and reading it
back cost about as much as the rest of the rank-1 update (:func:`~.path._rank1_core`),
and most pairs are decided before anything reads it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def bottleneck_change(pre: torch.Tensor, b_idx: torch.Tensor, w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``relu(p + w ⊗ δ) - relu(p)`` (P, H, W, C) for pre-activations ``pre`` (B, H, W, C) of images
    ``b_idx`` (P,), weight columns ``w`` (P, C) and spatial changes ``delta`` (P, H, W)."""
    base = pre[b_idx]
    return torch.relu(base + w[:, None, None, :] * delta[..., None]) - torch.relu(base)


@dataclass
class BottleneckChange:
    """``Δq`` for N pairs: pair ``i`` on image ``b_idx[i]`` of ``pre`` (B, H, W, C), with the weights
    ``w[i]`` (C,) and spatial change ``delta[i]`` (H, W); channels in each image's order (as ``pre``)."""

    pre: torch.Tensor
    b_idx: torch.Tensor
    w: torch.Tensor
    delta: torch.Tensor
    #: how the change is formed (``bottleneck_change``, or a compiled version of it)
    compute: Callable[..., torch.Tensor] = field(default=bottleneck_change, repr=False)

    def rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``Δq`` (P, H, W, C) of the pairs ``rows``."""
        return self.compute(self.pre, self.b_idx[rows], self.w[rows], self.delta[rows])

    @functools.cached_property
    def full(self) -> torch.Tensor:
        """``Δq`` (N, H, W, C) of every pair (formed once)."""
        return self.compute(self.pre, self.b_idx, self.w, self.delta)
