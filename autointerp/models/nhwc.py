"""TensorFlow's NHWC semantics on NCHW torch tensors, shared by the two converters of TensorFlow graphs.

:mod:`autointerp.models.tflite` (``.tflite`` flatbuffers) and :mod:`autointerp.models.tfgraph` (frozen
GraphDefs, Keras models) each keep their own operator classes, named after their format's op names (what
hooks, the Lipschitz analysis and the weight fingerprints see). The arithmetic those operators share lives
here, once: layout moves between TF's NHWC axes and torch's NCHW tensors, TF ``SAME`` padding, pooling whose
averages leave padded cells out, broadcasting binary ops, reductions and paddings over TF axes, the walk that
cuts a sub-network out of a converted graph, and the wrapper that makes a sub-network return logits.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: TF axis of a 4-D NHWC tensor -> torch dimension of the same tensor in NCHW
NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}

#: the binary ops both formats have, by a common name (each converter maps its own op names onto these)
BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "max": torch.maximum,
    "min": torch.minimum,
}
#: the reductions both formats have, by a common name
REDUCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "mean": torch.Tensor.mean,
    "sum": torch.Tensor.sum,
    "max": torch.Tensor.amax,
}


def to_tf(x: torch.Tensor) -> torch.Tensor:
    """An NCHW tensor viewed in TF's NHWC layout (other ranks as they are)."""
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def from_tf(x: torch.Tensor) -> torch.Tensor:
    """An NHWC tensor viewed in torch's NCHW layout (other ranks as they are)."""
    return x.permute(0, 3, 1, 2) if x.dim() == 4 else x


def last_tf_dim(x: torch.Tensor) -> int:
    """The torch dimension of TF's last axis (channels for a 4-D tensor)."""
    return 1 if x.dim() == 4 else -1


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dimension: the extra pixel goes after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv_same_padding(
    x: torch.Tensor, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """TF ``SAME`` padding for a convolution of ``x``: ``(x, (ph, pw))`` to pass on to ``F.conv2d`` when the
    padding is symmetric, else ``(x padded, (0, 0))`` (TF puts the odd pixel after, which ``F.conv2d`` cannot)."""
    ph = same_pads(x.shape[-2], kernel[0], stride[0], dilation[0])
    pw = same_pads(x.shape[-1], kernel[1], stride[1], dilation[1])
    if ph[0] == ph[1] and pw[0] == pw[1]:
        return x, (ph[0], pw[0])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1])), (0, 0)


def const_like_nchw(value: np.ndarray, other_rank: int) -> torch.Tensor:
    """A constant operand in TF (NHWC) layout, arranged to broadcast against an NCHW tensor."""
    t = torch.from_numpy(np.array(value, dtype=np.float32))
    if other_rank == 4 and t.dim() <= 4:
        t = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(0, 3, 1, 2).contiguous()
    return t


def pool2d(
    x: torch.Tensor, *, is_max: bool, window: tuple[int, int], stride: tuple[int, int], padding: str, global_pool: bool
) -> torch.Tensor:
    """TF max or average pooling of an NCHW tensor with ``SAME``/``VALID`` padding; averages leave padded
    cells out, as TF does. ``global_pool``: one window over the whole map."""
    if global_pool:
        return x.amax(dim=(2, 3), keepdim=True) if is_max else x.mean(dim=(2, 3), keepdim=True)
    ph = pw = (0, 0)
    if padding == "SAME":
        ph = same_pads(x.shape[-2], window[0], stride[0], 1)
        pw = same_pads(x.shape[-1], window[1], stride[1], 1)
    pads = (pw[0], pw[1], ph[0], ph[1])
    if is_max:
        if any(pads):
            x = F.pad(x, pads, value=float("-inf"))
        return F.max_pool2d(x, window, stride)
    if any(pads):
        ones = torch.ones_like(x[:1, :1])
        total = F.avg_pool2d(F.pad(x, pads), window, stride)
        count = F.avg_pool2d(F.pad(ones, pads), window, stride)
        return total / count
    return F.avg_pool2d(x, window, stride)


def binary(name: str, a: torch.Tensor, b: torch.Tensor, tf_layout: bool) -> torch.Tensor:
    """The binary op ``name`` (a key of :data:`BINARY`) with broadcasting; ``tf_layout``: computed in TF's
    layout (where a 4-D operand meets one of another rank, broadcasting follows TF's axes)."""
    if tf_layout:
        return from_tf(BINARY[name](to_tf(a), to_tf(b)))
    return BINARY[name](a, b)


def reduce_tf_axes(x: torch.Tensor, how: str, axes: Sequence[int], keep_dims: bool) -> torch.Tensor:
    """The reduction ``how`` (a key of :data:`REDUCTIONS`) over TF ``axes`` (non-negative, sorted)."""
    if not axes:
        return x
    reduce = REDUCTIONS[how]
    if x.dim() == 4 and keep_dims:  # stays 4-D: reduce the NCHW dimensions in place
        return reduce(x, dim=[NHWC_TO_NCHW_AXIS[a] for a in axes], keepdim=True)
    return from_tf(reduce(to_tf(x), dim=list(axes), keepdim=keep_dims))


def torch_pads(paddings: np.ndarray) -> list[int]:
    """TF's ``(rank, 2)`` paddings of an NHWC tensor as ``F.pad``'s list for the NCHW tensor (last dim first)."""
    rank = paddings.shape[0]
    order = [0, 3, 1, 2] if rank == 4 else list(range(rank))  # torch dim d <- TF axis order[d]
    pads: list[int] = []
    for d in reversed(range(rank)):
        pads += [int(paddings[order[d], 0]), int(paddings[order[d], 1])]
    return pads


def pad(x: torch.Tensor, pads: list[int], value: float, mode: str) -> torch.Tensor:
    """``F.pad`` with :func:`torch_pads`' list: constant ``value``, or ``reflect``/``replicate`` over the
    spatial dimensions (what torch pads in those modes)."""
    if mode == "constant":
        return F.pad(x, pads, value=value)
    return F.pad(x, pads[: 2 * (x.dim() - 2)], mode=mode)


def needed_steps(
    inputs_of: Sequence[Sequence[Hashable]],
    producer: dict[Hashable, int],
    outputs: Sequence[Hashable],
    given: set[Hashable],
) -> list[int]:
    """Indices (in execution order) of the steps that compute ``outputs`` from the ``given`` tensors:
    ``inputs_of[i]`` are step ``i``'s dynamic inputs, ``producer`` maps a tensor to the step making it.
    Raises ``KeyError`` with a needed tensor that is neither given nor produced."""
    needed: set[int] = set()
    stack = [t for t in outputs if t not in given]
    while stack:
        t = stack.pop()
        if t not in producer:
            raise KeyError(t)
        i = producer[t]
        if i in needed:
            continue
        needed.add(i)
        stack.extend(u for u in inputs_of[i] if u not in given)
    return sorted(needed)


class Logits(nn.Module):
    """Wraps a (sub-)network so it returns ``(N, num_outputs)`` logits, whatever the output's rank."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y.reshape(y.shape[0], -1)
