"""A short, stable fingerprint of a model's weights, so no stage combines caches made with other weights."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """The values of ``t`` as bytes, for any dtype, layout and device (the same bytes on CPU and GPU)."""
    t = t.detach()
    if t.is_sparse:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    if t.dtype == torch.bfloat16:
        t = t.float()  # numpy has no bfloat16 (kept as float32 so fingerprints already recorded stay valid)
    t = t.cpu().contiguous()
    try:
        return t.numpy().tobytes()
    except TypeError:  # a dtype numpy lacks (float8, ...): its raw bytes
        return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _extra_state_bytes(value: Any) -> bytes:
    """A deterministic description of a non-tensor state-dict entry (a module's ``get_extra_state()``)."""
    if isinstance(value, torch.Tensor):
        return _tensor_bytes(value)
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value).encode()
    if isinstance(value, dict):
        return b"{" + b",".join(repr(k).encode() + b":" + _extra_state_bytes(v) for k, v in value.items()) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(_extra_state_bytes(v) for v in value) + b"]"
    return type(value).__qualname__.encode()  # other objects: their type only (a repr may hold an address)


def weights_fingerprint(module: nn.Module, extra: str = "") -> str:
    """SHA-256 (first 16 hex digits) over the state dict: every entry's name, dtype, shape and bytes.

    Parameters and buffers both count (e.g. batch-norm statistics); the device does not. Any dtype
    (float8 and quantized tensors included) and non-tensor extra state (``get_extra_state``) are
    accepted; extra state that is not a tensor, number, string or container of them counts by its type.
    ``extra`` (an adapter's ``fingerprint_extra``) is mixed in when given.
    """
    digest = hashlib.sha256()
    if extra:
        digest.update(f"extra|{extra}|".encode())
    for name, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor):
            digest.update(f"{name}|extra|".encode())
            digest.update(_extra_state_bytes(value))
            continue
        if isinstance(value, nn.parameter.UninitializedTensorMixin):  # no shape yet
            digest.update(f"{name}|uninitialized|".encode())
            continue
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(_tensor_bytes(value))
    return digest.hexdigest()[:16]
