"""The generic batched path: ablated activations run through any tail module, many pairs per pass.

On a CUDA device (``device``; the stage passes the run's ``device``) the tail's passes run there in the
engine's batches of ablated copies, exact by construction (float32, the same arithmetic); the engine's
bounds and counts stay on the CPU, which gets the logits back."""

from __future__ import annotations

import copy

import torch
from torch import nn

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import PairResult
from autointerp.importance.lipschitz import TailBound, analyse_tail
from autointerp.importance.topk import logits_and_logprob_grad, topk_correct, true_logprob

#: ablated copies per pass of the tail on a CUDA device (the engine's default, 256, on the CPU): large
#: batches keep a GPU busy (float32, as on the CPU)
DEVICE_PAIR_BATCH = 2048


class TailPath:
    """Evaluate ablations by running ``tail`` on a batch of ablated activations (any model, any layer).

    With ``example`` (an activation batch) the tail is analysed (:func:`analyse_tail`); when it is a
    supported chain, a sound Lipschitz bound lets the engine skip pairs that cannot flip. On a CUDA
    ``device`` the engine hands it :data:`DEVICE_PAIR_BATCH` pairs per pass (``pair_batch``).
    """

    name = "tail"

    def __init__(
        self, tail: nn.Module, example: torch.Tensor | None = None, device: torch.device | str = "cpu"
    ) -> None:
        self.tail = tail.eval()
        self.pairs: dict[str, int] = {}  # no tiers: nothing to count
        self.seconds: dict[str, float] = {}
        self.device = torch.device(device)
        self.bound: TailBound | None = None
        self.bound_reason = "no example given"
        if example is not None:
            self.bound, self.bound_reason = analyse_tail(self.tail, example[:1].float())
        self.device_tail = self.tail if self.device.type == "cpu" else tail_on_device(self.tail, self.device)
        self.pair_batch = 256 if self.device.type == "cpu" else DEVICE_PAIR_BATCH

    def describe(self) -> dict[str, str]:
        """The path's name, and why its bound is off where it is."""
        info = {"path": self.name}
        if self.bound_reason is not None:
            info["bound"] = self.bound_reason
        return info

    def logits_and_grad(
        self, x: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.device
        z, grad = logits_and_logprob_grad(self.device_tail, x.to(d), labels.to(d), valid.to(d))
        return z.cpu(), grad.cpu()

    def final_weight(self) -> torch.Tensor | None:
        return None if self.bound is None else self.bound.weight

    def tier1(self, x: torch.Tensor, ablation: Ablation, features: torch.Tensor) -> torch.Tensor | None:
        if self.bound is None:
            return None
        delta = ablation.target(x, features) - x[:, features]
        return torch.linalg.vector_norm(delta.double(), dim=(2, 3)) * self.bound.lipschitz

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The batch on the path's device (the same tensor on the CPU), for :meth:`evaluate`."""
        return x.to(self.device)

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
        xd = state if isinstance(state, torch.Tensor) else x.to(self.device)
        xa = xd[b_idx.to(xd.device)].clone()
        ar = torch.arange(len(b_idx), device=xd.device)
        if ablation.values is not None:
            xa[ar, channels.to(xd.device)] = ablation.values[channels].to(xa)
        with torch.no_grad():
            za = self.device_tail(xa).float().cpu()
        lab = labels[b_idx]
        return PairResult(
            after_correct=topk_correct(za, lab, k, valid),
            logprob_after=true_logprob(za, lab, valid),
            bounded=torch.zeros(len(b_idx), dtype=torch.bool),
        )


def tail_on_device(tail: nn.Module, device: torch.device) -> nn.Module:
    """GPU-only branch: a copy of ``tail`` on ``device`` (the model itself stays where it is, so the
    stage's other passes, e.g. the cumulative ablation on the CPU, are unaffected)."""
    return copy.deepcopy(tail).to(device).eval()
