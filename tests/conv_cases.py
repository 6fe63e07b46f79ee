"""Shared set-up for the importance tiers' convolution tests (rank-one, sparse)."""

from __future__ import annotations

import torch
from torch import nn


def random_conv(k: int, pad: int, gen: torch.Generator, in_channels: int = 24, out_channels: int = 40) -> nn.Conv2d:
    """A "same" convolution with small random weights (std 0.1) and biases (std 0.2) from ``gen``."""
    conv = nn.Conv2d(in_channels, out_channels, k, padding=pad)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
        conv.bias.copy_(torch.randn(out_channels, generator=gen) * 0.2)
    return conv
