"""Stand-ins for a trained InceptionV1 where no pretrained weights can be downloaded (tests, benchmarks).

A default random initialisation makes InceptionV1's logits all nearly zero, so every image sits far
from or exactly on its top-k boundary and ablation numbers mean little. :func:`rescaled_inceptionv1`
re-initialises every convolution with He-normal weights (so activations keep their scale through the
depth, as in a trained network) and scales the classifier so logits spread like a trained network's.
:func:`trained_like_labels` then picks each image's "true class" as the output at a rank drawn from a
trained network's rank distribution (the study's InceptionV1: top-1 ≈ 0.45, top-5 ≈ 0.66, top-10 ≈ 0.74),
so margins to the top-k boundary look like a trained network's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def rescaled_inceptionv1(
    seed: int = 0, logit_std: float = 3.0, example: torch.Tensor | None = None, mixed5a_sparsity: float | None = None
) -> nn.Module:
    """lucent InceptionV1 with He-normal convolutions and a classifier giving logits of std ``logit_std``.

    ``mixed5a_sparsity``: the biases of the four ``mixed5a`` branch outputs are shifted per channel so
    this fraction of the layer's activations is zero on ``example`` (trained networks' activations
    are sparse and heavy-tailed; random ones are not). ``None`` keeps them as initialised.
    """
    from lucent.modelzoo.inceptionv1 import InceptionV1

    gen = torch.Generator().manual_seed(seed)
    model = InceptionV1(pretrained=False).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
        if example is None:
            example = torch.rand(8, 3, 224, 224, generator=gen) * 255 - 117
        if mixed5a_sparsity is not None:
            convs = ("mixed5a_1x1_pre_relu_conv", "mixed5a_3x3_pre_relu_conv", "mixed5a_5x5_pre_relu_conv",
                     "mixed5a_pool_reduce_pre_relu_conv")  # fmt: skip
            outs: dict[str, torch.Tensor] = {}
            hs = [getattr(model, n).register_forward_hook(lambda _m, _i, o, n=n: outs.__setitem__(n, o)) for n in convs]
            model(example)
            for h in hs:
                h.remove()
            for name, pre in outs.items():
                per_channel = pre.transpose(0, 1).reshape(pre.shape[1], -1)
                shift = torch.quantile(per_channel, mixed5a_sparsity, dim=1)
                getattr(model, name).bias.sub_(shift)
        fc = model.softmax2_pre_activation_matmul
        cap: list[torch.Tensor] = []
        handle = fc.register_forward_hook(lambda _m, _i, out: cap.append(out))
        model(example)
        handle.remove()
        z = cap[0]
        scale = logit_std / float(z.std(1).mean().clamp_min(1e-12))
        fc.weight.mul_(scale)
        fc.bias.zero_()
    return model


#: cumulative accuracy profile (rank r counted 0-based) of a trained ImageNet classifier
_RANK_PROFILE = ((0, 0.45), (4, 0.66), (9, 0.74), (49, 0.88), (999, 1.0))


def trained_like_labels(logits: torch.Tensor, valid: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """(N,) labels: for each image, the valid output at a rank drawn from a trained network's profile."""
    rng = np.random.default_rng(seed)
    n = logits.shape[0]
    order = logits.masked_fill(~valid[None, :], float("-inf")).argsort(1, descending=True)
    n_valid = int(valid.sum())
    u = rng.random(n)
    ranks = np.zeros(n, dtype=np.int64)
    lo_rank, lo_p = -1, 0.0
    for hi_rank, hi_p in _RANK_PROFILE:
        sel = (u >= lo_p) & (u < hi_p) if hi_p < 1.0 else (u >= lo_p)
        ranks[sel] = rng.integers(lo_rank + 1, min(hi_rank, n_valid - 1) + 1, size=int(sel.sum()))
        lo_rank, lo_p = hi_rank, hi_p
    return order[torch.arange(n), torch.as_tensor(ranks)]


def hooked_forward_logits(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images01 -> logits`` for lucent's InceptionV1: the full forward pass on [0, 1] images, with the
    logits computed by :func:`~.path.reference_tail` from what ``mixed5a``
    returned, so a hook that replaces ``mixed5a``'s output (the naive ablation) is seen. For
    :func:`~autointerp.importance.naive.naive_importance` in tests and benchmarks."""
    from autointerp.importance.fastpaths.inceptionv1.path import reference_tail

    def forward(images01: torch.Tensor) -> torch.Tensor:
        cap: list[torch.Tensor] = []
        handle = model.mixed5a.register_forward_hook(lambda _m, _i, out: cap.append(out))
        try:
            model(images01 * 255 - 117)
        finally:
            handle.remove()
        return reference_tail(model, cap[0])

    return forward
