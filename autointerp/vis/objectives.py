"""Objectives for batched feature visualisation, in lucent's sign convention (a loss to minimise).

A batch holds ``J`` *jobs* (feature, sign) × ``n`` images each, job-major. Per job the loss is
lucent's ``channel(layer, f) - diversity_weight * diversity(layer)``::

    loss_j = -sign · mean over images and positions of act[:, f]  +  λ · Σ_{i≠k} cos(G_i, G_k) / n

where ``G_i`` is the channel Gram matrix of image ``i`` at the layer (Lucid's diversity). Jobs do not
interact, so the batch loss is the sum over jobs and every job gets exactly its own gradient.
"""

from __future__ import annotations

import torch


def channel_objective(acts: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """Mean activation of each image's own channel: ``acts`` (B, C, H, W), ``channels`` (B,) → (B,)."""
    b = acts.shape[0]
    picked = acts[torch.arange(b, device=acts.device), channels]
    return picked.flatten(1).mean(dim=1)


def gram_similarity(acts: torch.Tensor, n: int) -> torch.Tensor:
    """Lucid's diversity similarity per group of ``n`` consecutive images: (J,) of
    ``Σ_{i≠k} <G_i, G_k> / (|G_i|·|G_k|) / n`` with ``G_i = F_i F_iᵀ``, ``F_i`` the (C, HW) activation.

    Uses whichever form is cheaper: ``<G_i, G_k> = |F_iᵀ F_k|²`` needs (HW)² numbers per pair instead
    of C² (mixed5a at 128 px: 25 vs 692,224), and gives the same value.
    """
    b, c = acts.shape[:2]
    if b % n:
        raise ValueError(f"batch of {b} images is not a multiple of n={n}")
    j = b // n
    flat = acts.reshape(j, n, c, -1)
    hw = flat.shape[-1]
    if hw * hw * n <= c * c:
        cross = torch.einsum("jacx,jbcy->jabxy", flat, flat)  # F_aᵀ F_b
        inner = cross.pow(2).sum(dim=(-2, -1))  # (J, n, n) = <G_a, G_b>
    else:
        grams = torch.einsum("jacx,jadx->jacd", flat, flat).reshape(j, n, c * c)
        inner = torch.einsum("jae,jbe->jab", grams, grams)
    norms = torch.diagonal(inner, dim1=-2, dim2=-1).clamp_min(0).sqrt().clamp_min(1e-12)  # as F.normalize
    cos = inner / (norms.unsqueeze(-1) * norms.unsqueeze(-2))
    off_diagonal = cos.sum(dim=(-2, -1)) - torch.diagonal(cos, dim1=-2, dim2=-1).sum(-1)
    return off_diagonal / n


def job_losses(
    acts: torch.Tensor, channels: torch.Tensor, signs: torch.Tensor, n: int, diversity: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-job losses (J,) and per-image channel objectives (B,).

    ``channels`` and ``signs`` (+1 maximise, -1 minimise) are per image, job-major.
    """
    per_image = channel_objective(acts, channels)
    loss = -(signs * per_image).reshape(-1, n).mean(dim=1)
    if diversity and n > 1:
        loss = loss + diversity * gram_similarity(acts, n)
    return loss, per_image
