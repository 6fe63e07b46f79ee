"""Rank-one tier (fastpaths.inceptionv1.lowrank): the pooled change of the rank-one part and a sound
radius around it, against float64 references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conv_cases import random_conv
from skips import skip_unless_available
from torch import nn

from autointerp.importance.fastpaths.inceptionv1 import native
from autointerp.importance.fastpaths.inceptionv1.bottleneck import BottleneckChange
from autointerp.importance.fastpaths.inceptionv1.lowrank import RankOneConv

torch.set_num_threads(2)


def _case(k: int, pad: int, spatial: tuple[int, int], seed: int, scale: float, images: int = 2):
    """A conv (24 -> 40 channels), baseline pre-activations ``r`` (B, 40, H, W) of ``images`` images,
    and per pair an ablation-like bottleneck change: ``Δq = relu(p + w ⊗ δ) - relu(p)`` (P, H, W, C),
    with the spatial change ``δ`` (P, H, W) and each pair's image ``b_idx``."""
    gen = torch.Generator().manual_seed(seed)
    conv = random_conv(k, pad, gen)
    h, w = spatial
    pre = torch.randn(images, 24, h, w, generator=gen)  # bottleneck pre-activations
    with torch.no_grad():
        r = conv(F.relu(pre))
    sizes = torch.tensor([1e-3, 1e-2, 0.1, 1.0, 3.0, 0.3]) * scale
    p = len(sizes)
    b_idx = torch.arange(p) % images
    delta = torch.randn(p, h, w, generator=gen) * sizes[:, None, None]
    weights = torch.randn(p, 24, generator=gen)
    base = pre[b_idx].permute(0, 2, 3, 1)  # (P, H, W, C)
    dq = F.relu(base + weights[:, None, None, :] * delta[..., None]) - F.relu(base)
    return conv, r, dq, delta, b_idx


def _pooled_change(conv: nn.Conv2d, r: torch.Tensor, dq: torch.Tensor, b_idx: torch.Tensor, pad: int) -> torch.Tensor:
    """float64 ``mean_pos(relu(r + K * Δq) - relu(r))`` (P, O), ``dq`` (P, H, W, C) in network order."""
    dr = F.conv2d(dq.permute(0, 3, 1, 2).double(), conv.weight.detach().double(), padding=pad)
    base = r.double()[b_idx]
    return (F.relu(base + dr) - F.relu(base)).mean((2, 3))


def _run(conv, r, dq, delta, b_idx, pad, spatial, order=None, compile=False, block=128, native=True):
    """:meth:`RankOneConv.change` for all pairs, ``dq`` permuted into each image's ``order`` (B, C)."""
    rc = RankOneConv(conv, pad, spatial, compile=compile, block=block, native=native)
    if order is None:
        order = torch.arange(dq.shape[-1]).repeat(len(r), 1)
    dq_ordered = torch.stack([dq[i][..., order[b]] for i, b in enumerate(b_idx.tolist())])
    r_cl, r_abs = rc.baseline(r)
    rows = torch.arange(len(dq))
    return rc, rc.change(dq_ordered, delta, rows, b_idx, order, r_cl, r_abs, dq.flatten(1).square().sum(1))


@pytest.mark.parametrize(("k", "pad", "spatial"), [(3, 1, (7, 7)), (5, 2, (7, 7)), (3, 1, (4, 6))])
@pytest.mark.parametrize("scale", [0.05, 1.0, 20.0])
@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_radius_holds_around_the_rank_one_change(k, pad, spatial, scale, native):
    """The true pooled change (float64 convolution of the whole Δq) lies within ``radius`` of ``h``
    for ablation-like changes of every size, channels in each image's own order, from the C loop and
    from PyTorch; and outputs do cross zero at the larger sizes (so the ReLUs matter)."""
    conv, r, dq, delta, b_idx = _case(k, pad, spatial, seed=k + spatial[1], scale=scale)
    gen = torch.Generator().manual_seed(5)
    order = torch.stack([torch.randperm(24, generator=gen) for _ in range(len(r))])
    _, got = _run(conv, r, dq, delta, b_idx, pad, spatial, order=order, block=4, native=native)  # two blocks
    exact = _pooled_change(conv, r, dq, b_idx, pad)
    dist = (exact - got.h.double()).norm(dim=1)
    assert bool((dist <= got.radius).all()), (dist / got.radius).tolist()
    if scale >= 1.0:
        linear = F.conv2d(dq.permute(0, 3, 1, 2).double(), conv.weight.detach().double(), padding=pad).mean((2, 3))
        assert float((exact - linear).abs().max()) > 1e-3


@pytest.mark.parametrize("native", [True, False], ids=["native", "torch"])
def test_a_change_formed_from_pre_activations_gives_the_same_result(native):
    """Given a :class:`BottleneckChange` (``p``, ``w``, ``δ``) instead of the formed ``Δq``, the C loop
    (or PyTorch) forms the change itself: the same ``h`` and radius for pairs of two images, rows out
    of order, in two blocks; a ``δ`` other than the change's is refused."""
    gen = torch.Generator().manual_seed(3)
    conv = random_conv(3, 1, gen)
    pre = torch.randn(2, 7, 7, 24, generator=gen)  # (B, H, W, C), each image's channel order
    order = torch.stack([torch.randperm(24, generator=gen) for _ in range(2)])
    with torch.no_grad():  # r from relu(p) in the network's channel order
        net = torch.empty_like(pre).scatter_(3, order[:, None, None, :].expand_as(pre), pre)
        r = conv(F.relu(net).permute(0, 3, 1, 2))
    n = 6
    b_of_row = torch.tensor([0, 1, 1, 0, 1, 0])
    w = torch.randn(n, 24, generator=gen)
    delta = torch.randn(n, 7, 7, generator=gen) * torch.tensor([0.01, 0.1, 1.0, 3.0, 0.3, 1.0])[:, None, None]
    change = BottleneckChange(pre, b_of_row, w, delta)
    formed = change.full
    assert 0.05 < float((formed == 0).float().mean()) < 0.95
    rc = RankOneConv(conv, 1, (7, 7), block=3, native=native)
    r_cl, r_abs = rc.baseline(r)
    rows = torch.tensor([4, 0, 5, 2, 1])
    sq = formed.flatten(1).square().sum(1)
    want = rc.change(formed, delta, rows, b_of_row[rows], order, r_cl, r_abs, sq)
    got = rc.change(change, delta, rows, b_of_row[rows], order, r_cl, r_abs, sq)
    torch.testing.assert_close(got.h, want.h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.radius, want.radius, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="another"):
        rc.change(change, delta * 2, rows, b_of_row[rows], order, r_cl, r_abs, sq)


def test_exactly_rank_one_changes_leave_only_rounding():
    """``Δq = α ⊗ δ``: ``h`` is the float64 pooled change to float32 rounding, and the radius is
    rounding-sized (a thousandth of the change plus ``mean_pos |r|``)."""
    conv, r, _, delta, b_idx = _case(3, 1, (7, 7), seed=1, scale=1.0)
    alpha = torch.randn(len(delta), 24, generator=torch.Generator().manual_seed(2))
    dq = alpha[:, None, None, :] * delta[..., None]
    _, got = _run(conv, r, dq, delta, b_idx, 1, (7, 7))
    exact = _pooled_change(conv, r, dq, b_idx, 1)
    dist = (exact - got.h.double()).norm(dim=1)
    assert bool((dist <= got.radius).all())
    # float32 rounding of relu(r + Δr) - relu(r) scales with |r| as well as with the change
    scale = exact.norm(dim=1) + r.double().abs().mean((2, 3))[b_idx].norm(dim=1)
    assert bool((got.radius <= 1e-3 * scale).all()), (got.radius / scale).tolist()


def test_radius_is_tighter_than_the_lipschitz_bound_for_ablation_like_changes():
    """Not vacuous: on ablation-like changes (most entries a rank-one ``w ⊗ δ``) the radius is well
    below tier 2's ``L·||Δq|| / √HW``, which it replaces; never above it (the fit never makes ``S``
    larger than ``Δq``), up to rounding."""
    conv, r, dq, delta, b_idx = _case(3, 1, (7, 7), seed=3, scale=1.0)
    rc, got = _run(conv, r, dq, delta, b_idx, 1, (7, 7))
    lipschitz = rc.op * dq.flatten(1).norm(dim=1).double() / math.sqrt(49)
    assert bool((got.radius <= lipschitz * 1.01 + 1e-9).all())
    assert float((got.radius / lipschitz).median()) < 0.8


def test_compiled_and_eager_agree():
    """The compiled kernels give the eager results up to float rounding (same radius bound holds)."""
    conv, r, dq, delta, b_idx = _case(5, 2, (7, 7), seed=4, scale=1.0)
    _, eager = _run(conv, r, dq, delta, b_idx, 2, (7, 7))
    _, compiled = _run(conv, r, dq, delta, b_idx, 2, (7, 7), compile=True)
    torch.testing.assert_close(compiled.h, eager.h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled.radius, eager.radius, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize(("k", "pad", "spatial"), [(3, 1, (7, 7)), (5, 2, (5, 3))])
def test_native_loop_and_pytorch_agree(k, pad, spatial):
    """The C loop (40 outputs: two blocks of 16 and a scalar tail; 49 or 15 positions: groups of four
    and a remainder) gives PyTorch's ``h`` and radius up to float32 rounding."""
    if native.kernels() is None:
        skip_unless_available("native loops unavailable here (no C compiler)")
    conv, r, dq, delta, b_idx = _case(k, pad, spatial, seed=11, scale=1.0)
    _, torch_got = _run(conv, r, dq, delta, b_idx, pad, spatial, native=False)
    _, native_got = _run(conv, r, dq, delta, b_idx, pad, spatial, native=True)
    torch.testing.assert_close(native_got.h, torch_got.h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(native_got.radius, torch_got.radius, rtol=1e-4, atol=1e-9)
