"""Sound L2 Lipschitz bounds for simple tails, used to skip ablations that cannot matter.

:func:`analyse_tail` traces a tail with ``torch.fx`` and accepts a *chain*: every operation takes the
previous one's output, the last weight layer is an ``nn.Linear`` producing the logits, and every
operation before it is one of the supported kinds below. It returns the final linear weight ``W``
and a constant ``L`` with ``||Δh||_2 <= L * ||Δa||_2`` for any change ``Δa`` of the activation, ``h``
being the input of the final linear layer. Anything else returns ``None`` (no skipping; still exact).

Per-operation constants (all upper bounds, inflated slightly for floating point):

* ``Conv2d`` (groups=1 or any groups): the zero-padded convolution is a submatrix of a circular
  convolution on the padded grid, whose singular values are those of the per-frequency matrices
  ``K̂(f)`` (Sedghi et al., 2019); stride only subsamples. Also bounded by ``Σ_offsets ||K_o||_2``;
  the smaller is used.
* ``Linear`` (not last): spectral norm. ``BatchNorm`` (eval): ``max |γ / sqrt(var + eps)|``.
* ReLU-like activations, dropout (eval), flatten/reshape/view: 1.
* ``MaxPool2d``: ``sqrt(ceil(kh/sh) * ceil(kw/sw))`` (each input is in that many windows).
* ``AvgPool2d``: ``sqrt(windows per input / window size)``; global average pooling: ``1/sqrt(H*W)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_SAFETY = 1.0 + 1e-4
_ONE_LIPSCHITZ_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Tanh, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten,
    nn.Softsign,
)  # fmt: skip
_ONE_LIPSCHITZ_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.hardtanh, torch.tanh, F.dropout, torch.flatten, torch.reshape,
}  # fmt: skip
_ONE_LIPSCHITZ_METHODS = {"relu", "flatten", "view", "reshape", "contiguous", "tanh"}


@dataclass
class TailBound:
    """``||Δh|| <= lipschitz * ||Δa||`` where ``z = weight @ h + bias`` are the logits."""

    weight: torch.Tensor
    lipschitz: float


def spectral_norm(mats: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix in a batch ``(..., m, n)`` (float64/complex128).

    Via the largest eigenvalue of the smaller Gram matrix (much faster than an SVD); accurate to
    float64 rounding, which the callers' safety factor covers.
    """
    if mats.shape[-2] < mats.shape[-1]:
        mats = mats.transpose(-2, -1)
    gram = mats.conj().transpose(-2, -1) @ mats
    return torch.linalg.eigvalsh(gram)[..., -1].clamp_min(0).sqrt()


def conv_operator_norm(
    weight: torch.Tensor, in_hw: tuple[int, int], padding: tuple[int, int], groups: int = 1
) -> float:
    """Upper bound on the L2 operator norm of a zero-padded 2-D convolution on an ``in_hw`` input."""
    w = weight.detach().double().cpu()
    cout, cin_g, kh, kw = w.shape
    # bound 1: sum over kernel offsets of the spectral norm of each offset's matrix (block-diagonal over groups)
    per_group = w.reshape(groups, cout // groups, cin_g, kh, kw)
    offsets = per_group.permute(3, 4, 0, 1, 2)  # kh, kw, g, cout_g, cin_g
    # bound 2 (never larger, by the triangle inequality): circular convolution on the padded grid,
    # the exact norm of a matrix containing ours
    n_h, n_w = in_hw[0] + 2 * padding[0], in_hw[1] + 2 * padding[1]
    n_h, n_w = max(n_h, kh), max(n_w, kw)
    if n_h * n_w * max(cout // groups, cin_g) <= 4_000_000:
        spec = torch.fft.rfft2(per_group, s=(n_h, n_w))  # g, cout_g, cin_g, n_h, n_w//2+1 (the rest are conjugates)
        return float(spectral_norm(spec.permute(3, 4, 0, 1, 2)).max()) * _SAFETY
    return float(spectral_norm(offsets).amax(-1).sum()) * _SAFETY


def _pool_windows(k: int, s: int) -> int:
    return math.ceil(k / s)


def _pair(v: object) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)  # type: ignore[call-overload]


def analyse_tail(tail: nn.Module, example: torch.Tensor) -> tuple[TailBound | None, str]:
    """Return ``(bound, reason)``; ``bound`` is None when the tail is not a supported chain."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = tail if isinstance(tail, fx.GraphModule) else fx.symbolic_trace(tail)
        gm = fx.GraphModule(gm, gm.graph)
        ShapeProp(gm).propagate(example)
    except Exception as exc:
        return None, f"tail is not traceable ({type(exc).__name__})"
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if n.op not in ("get_attr",)]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None, "tail has more than one input"
    chain = [n for n in nodes if n.op in ("call_module", "call_function", "call_method")]
    prev = placeholders[0]
    for node in chain:
        tensor_inputs = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if tensor_inputs != [prev] or len(prev.users) != 1:
            return None, f"tail is not a simple chain at node {node.name!r}"
        prev = node
    # find the final Linear; everything after it must be shape-only
    last_linear = None
    for i, node in enumerate(chain):
        if node.op == "call_module" and isinstance(modules[node.target], nn.Linear):
            last_linear = i
    if last_linear is None:
        return None, "tail does not end with an nn.Linear"
    for node in chain[last_linear + 1 :]:
        if not _is_shape_only(node, modules):
            return None, f"operation after the final linear layer: {node.name!r}"
    lip = 1.0
    body = chain[:last_linear]
    folded: set[int] = set()
    for i, node in enumerate(body):
        if i in folded:
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        bn = modules.get(nxt.target) if nxt is not None and nxt.op == "call_module" else None
        conv = modules.get(node.target) if node.op == "call_module" else None
        is_bn = isinstance(bn, nn.modules.batchnorm._BatchNorm)
        if isinstance(conv, nn.Conv2d) and is_bn and _bn_scale(bn) is not None:
            # BatchNorm (eval) after a convolution scales its output channels: fold it into the kernel
            if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
                return None, f"unsupported convolution padding at {node.name!r}"
            shape = _in_shape(node)
            w = conv.weight.detach().double() * _bn_scale(bn)[:, None, None, None]
            lip *= conv_operator_norm(w, (shape[2], shape[3]), _pair(conv.padding), conv.groups)
            folded.add(i + 1)
            continue
        factor = _node_lipschitz(node, modules)
        if factor is None:
            return None, f"unsupported operation for the skip bound: {node.name!r} ({node.target})"
        lip *= factor
    weight = modules[chain[last_linear].target].weight.detach().float().cpu()
    return TailBound(weight=weight, lipschitz=lip), "ok"


def _bn_scale(m: nn.Module) -> torch.Tensor | None:
    if m.training or m.running_var is None:
        return None
    var = m.running_var.detach().double()
    gamma = m.weight.detach().double() if m.weight is not None else torch.ones_like(var)
    return gamma / torch.sqrt(var + m.eps)


def _is_shape_only(node: object, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":  # type: ignore[attr-defined]
        return isinstance(modules[node.target], (nn.Identity, nn.Flatten, nn.Dropout))  # type: ignore[attr-defined]
    if node.op == "call_method":  # type: ignore[attr-defined]
        return node.target in {"view", "reshape", "flatten", "contiguous"}  # type: ignore[attr-defined]
    return node.target in {torch.flatten, torch.reshape, F.dropout}  # type: ignore[attr-defined]


def _in_shape(node: object) -> tuple[int, ...]:
    meta = node.all_input_nodes[0].meta.get("tensor_meta")  # type: ignore[attr-defined]
    return tuple(meta.shape)


def _node_lipschitz(node: object, modules: dict[str, nn.Module]) -> float | None:
    op, target = node.op, node.target  # type: ignore[attr-defined]
    if op == "call_module":
        m = modules[target]
        if isinstance(m, _ONE_LIPSCHITZ_MODULES):
            if isinstance(m, nn.LeakyReLU) and abs(m.negative_slope) > 1:
                return abs(m.negative_slope)
            return 1.0
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None
            shape = _in_shape(node)
            return conv_operator_norm(m.weight, (shape[2], shape[3]), _pair(m.padding), m.groups)
        if isinstance(m, nn.Linear):
            return float(spectral_norm(m.weight.detach().double())) * _SAFETY
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            scale = _bn_scale(m)
            return None if scale is None else float(scale.abs().max()) * _SAFETY
        if isinstance(m, nn.MaxPool2d):
            kh, kw = _pair(m.kernel_size)
            sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
            if _pair(m.dilation) != (1, 1):
                return None
            return math.sqrt(_pool_windows(kh, sh) * _pool_windows(kw, sw))
        if isinstance(m, nn.AvgPool2d):
            kh, kw = _pair(m.kernel_size)
            sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
            ph, pw = _pair(m.padding)
            win = kh * kw if (m.count_include_pad or (ph == 0 and pw == 0)) else 1
            if m.divisor_override is not None:
                return None
            return math.sqrt(_pool_windows(kh, sh) * _pool_windows(kw, sw) / win)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            out = _pair(m.output_size)
            if out != (1, 1):
                return None
            shape = _in_shape(node)
            return 1.0 / math.sqrt(shape[2] * shape[3])
        return None
    if op == "call_function":
        if target in _ONE_LIPSCHITZ_FUNCTIONS:
            return 1.0
        if target is F.adaptive_avg_pool2d:
            out = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")  # type: ignore[attr-defined]
            if _pair(out) != (1, 1):
                return None
            shape = _in_shape(node)
            return 1.0 / math.sqrt(shape[2] * shape[3])
        return None
    if op == "call_method":
        if target in _ONE_LIPSCHITZ_METHODS:
            return 1.0
        if target == "mean":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")  # type: ignore[attr-defined]
            shape = _in_shape(node)
            if dims is None:
                return None
            dims = [dims] if isinstance(dims, int) else list(dims)
            count = math.prod(shape[d] for d in dims)
            return 1.0 / math.sqrt(count)
        return None
    return None
