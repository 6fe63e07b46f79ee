"""Token layers (vision transformers) as channel layers.

A transformer block's output is ``(N, T, D)``: T tokens (prefix tokens such as CLS, then the patch tokens) of
D units. Every stage works on ``(N, C, H, W)``, so a token layer is presented as ``(N, D, T, 1)``: a feature is a
unit ``d``, its "positions" are the tokens. Then, unchanged:

* mean ablation replaces unit ``d`` by its dataset mean (over images and tokens) at every token;
* the tail turns the grid back into ``(N, T, D)`` before the rest of the network;
* a feature's per-image score and its visualisation objective use the rows
  :meth:`~autointerp.models.base.ModelAdapter.scored_positions` names: the patch tokens by default, every token
  with the model option ``tokens: all``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: model option ``tokens``: which tokens count in a unit's score and objective
TOKEN_MODES = ("patch", "all")


def to_token_grid(tokens: torch.Tensor) -> torch.Tensor:
    """``(N, T, D)`` → ``(N, D, T, 1)``."""
    return tokens.transpose(1, 2).unsqueeze(-1)


def from_token_grid(grid: torch.Tensor) -> torch.Tensor:
    """``(N, D, T, 1)`` → ``(N, T, D)``."""
    return grid.squeeze(-1).transpose(1, 2)


class TokenGrid(nn.Module):
    """``head`` with an ``(N, T, D)`` output → ``(N, D, T, 1)``."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_token_grid(self.head(x))


class FromTokenGrid(nn.Module):
    """``(N, D, T, 1)`` → ``(N, T, D)`` → ``tail``."""

    def __init__(self, tail: nn.Module) -> None:
        super().__init__()
        self.tail = tail

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.tail(from_token_grid(a))


class ScoredRows(nn.Module):
    """``head``'s activation restricted to the rows that count in a feature's score (e.g. patch tokens)."""

    def __init__(self, head: nn.Module, rows: slice) -> None:
        super().__init__()
        self.head = head
        self.rows = rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)[:, :, self.rows]


class ResizeTo(nn.Module):
    """``head`` on images resized (bilinear) to ``size`` px: a ViT's position embeddings fix its patch grid, so a
    visualisation canvas of another size (padding, jitter, scale) is brought to the input size first."""

    def __init__(self, head: nn.Module, size: int) -> None:
        super().__init__()
        self.head = head
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.head(x)


def prefix_tokens(module: nn.Module, tokens: int) -> int:
    """How many tokens come before the patch tokens: timm's ``num_prefix_tokens`` (CLS, registers), 1 for a
    torchvision ViT's ``class_token``, else what is left beyond the largest square grid (197 → 1, 196 → 0)."""
    n = getattr(module, "num_prefix_tokens", None)
    if isinstance(n, int) and 0 <= n < tokens:
        return n
    if isinstance(getattr(module, "class_token", None), torch.Tensor):
        return 1
    return tokens - math.isqrt(tokens) ** 2
