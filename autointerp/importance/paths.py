"""The generic batched path: ablated activations run through any tail module, many pairs per pass."""

from __future__ import annotations

import torch
from torch import nn

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import PairResult
from autointerp.importance.lipschitz import TailBound, analyse_tail
from autointerp.importance.topk import logits_and_logprob_grad, topk_correct, true_logprob


class TailPath:
    """Evaluate ablations by running ``tail`` on a batch of ablated activations (any model, any layer).

    With ``example`` (an activation batch) the tail is analysed (:func:`analyse_tail`); when it is a
    supported chain, a sound Lipschitz bound lets the engine skip pairs that cannot flip.
    """

    name = "tail"

    def __init__(self, tail: nn.Module, example: torch.Tensor | None = None) -> None:
        self.tail = tail.eval()
        self.pairs: dict[str, int] = {}  # no tiers: nothing to count
        self.seconds: dict[str, float] = {}
        self.bound: TailBound | None = None
        self.bound_reason = "no example given"
        if example is not None:
            self.bound, self.bound_reason = analyse_tail(self.tail, example[:1].float())

    def describe(self) -> dict[str, str]:
        """The path's name, and why its bound is off where it is."""
        info = {"path": self.name}
        if self.bound_reason is not None:
            info["bound"] = self.bound_reason
        return info

    def logits_and_grad(
        self, x: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_logprob_grad(self.tail, x, labels, valid)

    def final_weight(self) -> torch.Tensor | None:
        return None if self.bound is None else self.bound.weight

    def tier1(self, x: torch.Tensor, ablation: Ablation, features: torch.Tensor) -> torch.Tensor | None:
        if self.bound is None:
            return None
        delta = ablation.target(x, features) - x[:, features]
        return torch.linalg.vector_norm(delta.double(), dim=(2, 3)) * self.bound.lipschitz

    def prepare(self, x: torch.Tensor) -> None:
        return None

    def evaluate(
        self,
        state: object,
        x: torch.Tensor,
        z: torch.Tensor,
        labels: torch.Tensor,
        b_idx: torch.Tensor,
        channels: torch.Tensor,
        ablation: Ablation,
        k: int,
        valid: torch.Tensor,
    ) -> PairResult:
        xa = x[b_idx].clone()
        ar = torch.arange(len(b_idx))
        if ablation.values is not None:
            xa[ar, channels] = ablation.values[channels].to(xa)
        with torch.no_grad():
            za = self.tail(xa).float()
        lab = labels[b_idx]
        return PairResult(
            after_correct=topk_correct(za, lab, k, valid),
            logprob_after=true_logprob(za, lab, valid),
            bounded=torch.zeros(len(b_idx), dtype=torch.bool),
        )
