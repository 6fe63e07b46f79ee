"""A short, stable fingerprint of a model's weights, so no stage combines caches made with other weights."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over the state dict: every entry's name, dtype, shape and bytes.

    Parameters and buffers both count (e.g. batch-norm statistics); the device does not.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.is_floating_point() and t.dtype in (torch.bfloat16,):
            t = t.float()  # numpy has no bfloat16
        digest.update(t.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
