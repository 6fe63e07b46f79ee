"""What an ablation imputes, and the per-feature tallies every path produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch


@dataclass
class Ablation:
    """Values imputed into an ablated channel.

    ``values`` (C, H, W) float32 are imputed into channel ``c`` (the dataset mean per channel,
    broadcast over positions, or per channel and position). ``values=None`` imputes each image's
    own values: the study's sanity check, which must change nothing.
    """

    values: torch.Tensor | None

    @classmethod
    def from_means(
        cls, mean: np.ndarray, mean_position: np.ndarray | None, scope: str, shape: tuple[int, int, int]
    ) -> Ablation:
        """Build from ``mean.npy`` (C,) / ``mean_position.npy`` (C, H, W) and ``mean_scope``."""
        c, h, w = shape
        if scope == "channel":
            vals = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(c, 1, 1).expand(c, h, w)
        elif scope == "position":
            if mean_position is None:
                raise ValueError("mean_scope='position' needs mean_position")
            vals = torch.as_tensor(np.asarray(mean_position, dtype=np.float32)).reshape(c, h, w)
        else:
            raise ValueError(f"unknown mean_scope {scope!r}")
        return cls(vals.contiguous().clone())

    @classmethod
    def original(cls) -> Ablation:
        """Impute the original values (changes nothing; the study's check)."""
        return cls(None)

    def target(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(B, F, H, W) values imputed into ``features`` of each image of ``x`` (B, C, H, W)."""
        if self.values is None:
            return x[:, features]
        return self.values[features].to(x)[None].expand(x.shape[0], -1, -1, -1)

    def apply(self, x: torch.Tensor, feature: int) -> torch.Tensor:
        """A copy of ``x`` (B, C, H, W) with channel ``feature`` ablated."""
        out = x.clone()
        if self.values is not None:
            out[:, feature] = self.values[feature].to(x)
        return out

    def apply_many(self, x: torch.Tensor, features: list[int] | torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` with all ``features`` ablated together."""
        out = x.clone()
        if self.values is not None:
            idx = torch.as_tensor(features, dtype=torch.long)
            out[:, idx] = self.values[idx].to(x)
        return out


@dataclass
class FeatureTally:
    """Per-feature counts accumulated over images (arrays aligned with ``features``)."""

    features: np.ndarray
    correct_to_wrong: np.ndarray = field(init=False)
    wrong_to_correct: np.ndarray = field(init=False)
    sum_delta_logprob: np.ndarray = field(init=False)
    n_skipped: np.ndarray = field(init=False)  # decided by the cheap bound, no evaluation
    n_bounded: np.ndarray = field(init=False)  # decided by the finer bound (partial evaluation)
    n_exact: np.ndarray = field(init=False)  # evaluated exactly
    n_images: int = 0
    #: the per-feature arrays, all sums over images
    SUMS: ClassVar[tuple[str, ...]] = (
        "correct_to_wrong", "wrong_to_correct", "sum_delta_logprob", "n_skipped", "n_bounded", "n_exact",
    )  # fmt: skip

    def __post_init__(self) -> None:
        f = len(self.features)
        self.correct_to_wrong = np.zeros(f, np.int64)
        self.wrong_to_correct = np.zeros(f, np.int64)
        self.sum_delta_logprob = np.zeros(f, np.float64)
        self.n_skipped = np.zeros(f, np.int64)
        self.n_bounded = np.zeros(f, np.int64)
        self.n_exact = np.zeros(f, np.int64)

    def add(self, other: FeatureTally) -> None:
        """Add the tallies of the same features over other images (e.g. the next segment)."""
        if not np.array_equal(self.features, other.features):
            raise ValueError("tallies of different features cannot be added")
        for name in self.SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.n_images += other.n_images

    @property
    def importance(self) -> np.ndarray:
        """Correct count before minus after ablation."""
        return self.correct_to_wrong - self.wrong_to_correct

    @property
    def mean_delta_logprob(self) -> np.ndarray:
        return self.sum_delta_logprob / max(self.n_images, 1)

    def add_flips(self, base_correct: torch.Tensor, after_correct: torch.Tensor, f_idx: torch.Tensor) -> None:
        """Count flips of pairs (``f_idx`` indexes ``features``)."""
        f = len(self.features)
        c2w = (base_correct & ~after_correct).long()
        w2c = (~base_correct & after_correct).long()
        self.correct_to_wrong += torch.bincount(f_idx, weights=c2w.double(), minlength=f).long().numpy()
        self.wrong_to_correct += torch.bincount(f_idx, weights=w2c.double(), minlength=f).long().numpy()
