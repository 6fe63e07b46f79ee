"""Make a model fast for feature visualisation without changing what it computes.

:func:`render_mode` is a context manager that, for the duration of rendering,

* freezes the weights (``requires_grad=False``): only the image needs a gradient, so the backward
  pass skips every weight gradient;
* optionally switches to channels-last memory format (faster convolutions on GPUs and with oneDNN);
* swaps in equivalent faster kernels for known slow modules — lucent's ``RedirectedReluLayer``
  (InceptionV1) computes its backward with boolean indexing (``nonzero`` + ``index_put``, about a third
  of a step on CPU); :class:`FastRedirectedReLU` computes the same gradient with one multiply;
* folds eval-mode ``BatchNorm2d`` into the ``Conv2d`` just before it (same parent, adjacent), so the
  backward pass skips the batch-norm pass (fold_batchnorm);
* gives plain ``nn.ReLU`` modules Lucid's redirected gradient (``relu_gradient_override``, on by default
  in Lucid's ``render_vis``): where a ReLU lets no gradient through for an image, the gradient is passed
  anyway unless it would push an already negative input lower — so channels that are off on the
  grey starting image can still be optimised. Forward values are unchanged;
* on CUDA, lets cuDNN pick the fastest algorithms and allows TF32.

Everything is restored on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class FastRedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient is scaled by 0.1 (not zeroed) where the input is negative — lucent's
    ``RedirectedReLU`` (Lucid's redirected ReLU), with a single fused multiply in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.where(x < 0, 0.1, 1.0).to(grad.dtype)


def _fast_redirected_forward(tensor: torch.Tensor) -> torch.Tensor:
    return FastRedirectedReLU.apply(tensor)


class LucidRedirectedReLU(torch.autograd.Function):
    """ReLU with Lucid's ``redirected_relu_grad``: per image, the ordinary ReLU gradient when any of it
    is non-zero; otherwise the incoming gradient, except where it would push a negative input lower."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        negative = x < 0
        relu_grad = grad.masked_fill(negative, 0)
        if x.ndim < 2:
            return relu_grad
        passes = relu_grad.flatten(1).abs().amax(dim=1) > 0
        redirected = grad.masked_fill(negative & (grad > 0), 0)
        return torch.where(passes.view(-1, *([1] * (x.ndim - 1))), relu_grad, redirected)


def _lucid_redirected_forward(tensor: torch.Tensor) -> torch.Tensor:
    return LucidRedirectedReLU.apply(tensor)


def _conv_bn_pairs(module: nn.Module, keep: set[int]) -> list[tuple[nn.Module, str, str]]:
    """``(parent, conv_name, bn_name)`` for eval-mode BatchNorm2d directly after a Conv2d in the same parent."""
    pairs = []
    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[a], parent._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and id(conv) not in keep
                and id(bn) not in keep
                and not conv._forward_hooks
                and not bn._forward_hooks
                and not bn._forward_pre_hooks
            ):
                pairs.append((parent, a, b))
    return pairs


def _slow_module_swaps(module: nn.Module) -> list[nn.Module]:
    """Modules whose ``forward`` we replace by an equivalent faster one."""
    try:
        from lucent.modelzoo.inceptionv1.helper_layers import RedirectedReluLayer
    except ImportError:  # pragma: no cover - lucent is a dependency
        return []
    return [m for m in module.modules() if isinstance(m, RedirectedReluLayer)]


@contextlib.contextmanager
def render_mode(
    module: nn.Module, channels_last: bool = False, fast_kernels: bool = True, redirect_relu: bool = True
) -> Iterator[nn.Module]:
    """Freeze ``module``'s weights, optionally use channels-last, faster kernels and Lucid's redirected
    ReLU gradient; everything is restored on exit (the model's weights are never modified)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    grads = [(p, p.requires_grad) for p in module.parameters()]
    swapped = _slow_module_swaps(module) if fast_kernels else []
    relus = [m for m in module.modules() if type(m) is nn.ReLU] if redirect_relu else []
    target = getattr(module, "_target", None)  # HookHead's hooked layer must stay in place
    was_training = module.training
    module.eval()
    pairs = _conv_bn_pairs(module, {id(target)} if target is not None else set()) if fast_kernels else []
    originals = [(parent, a, b, parent._modules[a], parent._modules[b]) for parent, a, b in pairs]
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        for m in swapped:
            m.forward = _fast_redirected_forward  # instance attribute shadows the class method
        for m in relus:
            m.forward = _lucid_redirected_forward
        for parent, a, b, conv, bn in originals:
            fused = fuse_conv_bn_eval(conv, bn).requires_grad_(False)
            parent._modules[a], parent._modules[b] = fused, nn.Identity()
        if channels_last:
            module.to(memory_format=torch.channels_last)
        if any(p.is_cuda for p, _ in grads):
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        yield module
    finally:
        for p, flag in grads:
            p.requires_grad_(flag)
        for m in [*swapped, *relus]:
            m.__dict__.pop("forward", None)
        for parent, a, b, conv, bn in originals:
            parent._modules[a], parent._modules[b] = conv, bn
        if channels_last:
            module.to(memory_format=torch.contiguous_format)
        module.train(was_training)
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = cudnn
