"""Folded-mask tier (autointerp.importance.folded): exact linear part and sound remainder bounds,
against float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conv_cases import random_conv
from torch import nn

from autointerp.importance.folded import FoldedConv

torch.set_num_threads(2)


def _case(k: int, pad: int, spatial: tuple[int, int], seed: int, scale: float):
    """A conv (24 -> 40 channels), one image's baseline pre-activations ``r`` (with many entries near
    zero, where the remainder lives) and bottleneck changes ``dq`` of very different sizes (P, C, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    conv = random_conv(k, pad, gen)
    h, w = spatial
    before = torch.randn(1, 24, h, w, generator=gen)
    with torch.no_grad():
        r = conv(F.relu(before))[0]
    sizes = torch.tensor([1e-3, 1e-2, 0.1, 1.0, 3.0]) * scale
    dq = torch.randn(5, 24, h, w, generator=gen) * sizes[:, None, None, None]
    dq = dq * (torch.rand(5, 24, h, w, generator=gen) > 0.4)  # sparse, like a real ablation's
    return conv, r, dq


def _exact(conv: nn.Conv2d, r: torch.Tensor, dq: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64: the pooled change ``mean_pos(relu(r + Δr) - relu(r))`` and its linear part ``mean_pos(m·Δr)``."""
    dr = F.conv2d(dq.double(), conv.weight.detach().double(), padding=pad)
    r = r.double()[None]
    pooled = (F.relu(r + dr) - F.relu(r)).mean((2, 3))
    return pooled, ((r > 0) * dr).mean((2, 3))


@pytest.mark.parametrize(("k", "pad", "spatial"), [(3, 1, (7, 7)), (5, 2, (7, 7)), (3, 1, (4, 6)), (5, 2, (3, 5))])
@pytest.mark.parametrize("scale", [0.05, 1.0, 20.0])
def test_linear_part_and_remainder_bounds_hold_against_float64(k, pad, spatial, scale):
    """The linear part is the masked convolution's (borders included, channels in the image's own
    order), and ``v·(pooled - linear)`` lies in ``[-below, above]`` along every direction, one-sided."""
    conv, r, dq = _case(k, pad, spatial, seed=k + spatial[1], scale=scale)
    fc = FoldedConv(conv, pad, spatial)
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(24, generator=gen)
    dq_ordered = dq.permute(0, 2, 3, 1)[..., order].contiguous()  # (P, H, W, C) in the image's order
    v = torch.randn(30, 40, generator=gen, dtype=torch.float64)
    v[0] = 0.0  # the true class itself: nothing moves
    img = fc.image(r, order, v)
    lin = fc.linear(img, dq_ordered).double()
    pooled, lin_true = _exact(conv, r, dq, pad)
    # the linear part: float32 rounding only
    scale_lin = (F.conv2d(dq.double().abs(), conv.weight.detach().double().abs(), padding=pad)).mean((2, 3))
    assert bool(((lin - lin_true).abs() <= 1e-4 * scale_lin + 1e-12).all())
    below, above = fc.bounds(img, dq.flatten(1).square().sum(1))
    moved = (pooled - lin) @ v.T  # (P, J): v_j · (remainder + the linear part's rounding)
    assert bool((moved <= above + 1e-12).all()) and bool((-moved <= below + 1e-12).all())
    assert float(above[:, 0].max()) == 0.0 and float(below[:, 0].max()) == 0.0
    if scale >= 1.0:  # outputs really do cross zero here: a remainder to bound
        assert float((pooled - lin_true).abs().max()) > 1e-3


def test_bounds_are_tight_for_small_changes():
    """Not vacuous: for a small change the remainder bound is far below the plain Lipschitz bound
    ``||v||·L·||Δq|| / sqrt(HW)`` the path's tier 2 uses, and shrinks faster than the change."""
    conv, r, dq = _case(3, 1, (7, 7), seed=0, scale=1.0)
    fc = FoldedConv(conv, 1, (7, 7))
    order = torch.arange(24)
    v = torch.randn(50, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    img = fc.image(r, order, v)
    norms = dq.flatten(1).norm(dim=1).double()
    below, above = fc.bounds(img, dq.flatten(1).square().sum(1))
    lipschitz = v.norm(dim=1)[None] * (fc.op * norms / 7)[:, None]
    assert bool((above[0] < 0.25 * lipschitz[0]).all()) and bool((below[0] < 0.25 * lipschitz[0]).all())
    ratio = lambda b: (b / lipschitz).median(1).values  # noqa: E731
    assert float(ratio(above)[0]) < float(ratio(above)[3])  # relatively tighter for the smaller change


def test_an_image_with_no_positive_output_has_no_linear_part():
    conv, r, dq = _case(3, 1, (7, 7), seed=1, scale=1.0)
    fc = FoldedConv(conv, 1, (7, 7))
    img = fc.image(-r.abs() - 1.0, torch.arange(24), torch.randn(5, 40, dtype=torch.float64))
    assert float(fc.linear(img, dq.permute(0, 2, 3, 1).contiguous()).abs().max()) == 0.0
