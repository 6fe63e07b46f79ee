"""Int8 tier (fastpaths.inceptionv1.quantized): its bounds hold against float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autointerp.importance.fastpaths.inceptionv1.quantized import Int8Conv, image_blocks, int8_matmul_is_exact

torch.set_num_threads(2)

needs_int8 = pytest.mark.skipif(not int8_matmul_is_exact(), reason="torch._int_mm is missing or inexact here")


@needs_int8
@pytest.mark.parametrize(("k", "pad", "spatial"), [(3, 1, (7, 7)), (5, 2, (7, 7)), (3, 1, (4, 6)), (5, 2, (3, 5))])
def test_grouped_products_are_the_exact_integer_convolution(k, pad, spatial):
    """Patch groups skip the taps that land in the zero padding: the int32 products must still be the
    whole convolution, position by position (in the tier's order), including at the borders."""
    gen = torch.Generator().manual_seed(k)
    conv = nn.Conv2d(16, 24, k, padding=pad, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    tier = Int8Conv(conv, pad, spatial)
    h, w = spatial
    assert sorted(tier.positions.tolist()) == list(range(h * w))
    q = torch.randint(-127, 128, (3, h, w, 16), generator=gen, dtype=torch.int8)
    acc = tier._products(q)  # (H*W*P, O), rows (position, pair)
    kq = tier.weight_dy.double().reshape(k, k, 16, 24).permute(3, 2, 0, 1)  # back to (O, C, k, k)
    ref = F.conv2d(q.permute(0, 3, 1, 2).double(), kq, padding=pad).flatten(2)  # (P, O, H*W)
    ref = ref[:, :, tier.positions].permute(2, 0, 1).reshape(h * w * 3, 24)
    assert acc.dtype == torch.int32 and torch.equal(acc.double(), ref)
    # the groups really skip work: fewer multiply-adds than zero-padded patches
    used = sum((g.y1 - g.y0) * (g.x1 - g.x0) * (g.taps[1] - g.taps[0]) * k for g in tier.groups)
    assert used < h * w * k * k


def _case(k: int, pad: int, seed: int, crossing_scale: float, outlier: float = 0.0, exact_weights: bool = False):
    """A conv, baseline bottleneck activations, and changed ones whose outputs cross zero in places.

    ``outlier``: one element per pair this many times larger than the rest, so that int8 rounds most
    of the change to zero and the rounding residual dominates the error bounds. ``exact_weights``:
    weights that int8 with per-channel power-of-two scales represents exactly (no weight error at all).
    """
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(24, 40, k, padding=pad)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
        if exact_weights:  # 127 * 2**-10 is each channel's largest magnitude: its scale is exactly 2**-10
            w = torch.round(conv.weight / conv.weight.abs().amax((1, 2, 3), keepdim=True) * 127)
            conv.weight.copy_(w * 2.0**-10)
        conv.bias.copy_(torch.randn(40, generator=gen) * 0.2)
    before = torch.randn(4, 24, 7, 7, generator=gen)  # pre-ReLU baseline bottleneck
    b_idx = torch.tensor([0, 1, 2, 3, 0, 2])
    # bottleneck changes of very different sizes (one scale per pair), sparse like a real ablation
    dq = torch.randn(6, 24, 7, 7, generator=gen) * torch.tensor([1e-3, 1e-2, 0.1, 1.0, 3.0, 0.3])[:, None, None, None]
    dq = dq * (torch.rand(6, 24, 7, 7, generator=gen) > 0.4)
    if outlier:
        dq[:, 5, 3, 3] = dq.abs().amax((1, 2, 3)) * outlier
    after = F.relu(before[b_idx]) + dq * crossing_scale
    with torch.no_grad():
        r = conv(F.relu(before)).double()  # (B, O, 7, 7) baseline pre-activation
        r_after = F.conv2d(after.double(), conv.weight.double(), conv.bias.double(), padding=pad)
    return conv, before, after, b_idx, r, r_after


@needs_int8
@pytest.mark.parametrize(("k", "pad"), [(3, 1), (5, 2)])
@pytest.mark.parametrize(
    ("crossing_scale", "outlier", "exact_weights", "left_out"),
    [(0.05, 0.0, False, False), (1.0, 0.0, False, False), (20.0, 0.0, False, False), (1.0, 3000.0, False, False),
     (1.0, 3000.0, True, False), (1.0, 0.0, False, True), (20.0, 0.0, False, True)],
)  # fmt: skip
def test_branch_change_bounds_hold_against_float64(k, pad, crossing_scale, outlier, exact_weights, left_out):
    """``left_out``: each image's channels reordered and the last five left out of the products
    although they change a little (as where an ablation lifts a unit that is negative everywhere)."""
    conv, before, after, b_idx, r, r_after = _case(k, pad, k, crossing_scale, outlier, exact_weights)
    if left_out:  # the change in the left-out channels is 3 % of the rest's: after and r_after follow it
        dq, channels = _reordered(after - F.relu(before[b_idx]), b_idx, seed=5, dropped=5, residue=0.03)
        dq_net = torch.empty_like(dq).scatter_(3, channels[0][b_idx][:, None, None, :].expand_as(dq), dq)
        after = F.relu(before[b_idx]) + dq_net.permute(0, 3, 1, 2)
        with torch.no_grad():
            r_after = F.conv2d(after.double(), conv.weight.double(), conv.bias.double(), padding=pad)
    tier = Int8Conv(conv, pad, (7, 7))
    if exact_weights:
        assert tier.op_l == 0.0 and float(tier.row_l.max()) == 0.0
    order = tier.positions  # the tier's position order
    mask = (r > 0).double().flatten(2)[:, :, order].transpose(1, 2).float().contiguous()
    r_abs = r.abs().flatten(2)[:, :, order].transpose(1, 2).float().contiguous()
    if left_out:
        change = tier.change(dq, b_idx, mask, r_abs, channels=channels, block=4)
    else:
        change = tier.change((after - F.relu(before[b_idx])).permute(0, 2, 3, 1), b_idx, mask, r_abs, block=4)
    rb = r[b_idx]
    m = (rb > 0).double()
    lin_true = (m * (r_after - rb)).mean((2, 3))  # (P, O)
    pooled_true = (F.relu(r_after) - F.relu(rb)).mean((2, 3))
    remainder = pooled_true - lin_true
    assert bool((remainder >= -1e-12).all())
    # the remainder is bounded channel by channel; some pairs really do cross zero here
    assert bool((remainder <= change.rem.double() + 1e-9).all())
    if crossing_scale >= 1.0:
        assert float(remainder.max()) > 0
    # the linear part's error along random directions stays inside ||v ⊙ mask|| × lin_err
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        v = torch.randn(40, generator=gen, dtype=torch.float64)
        err = (lin_true - change.lin.double()) @ v
        vm = ((v[None, :, None, None] ** 2) * m).sum((1, 2, 3)).sqrt()
        assert bool((err.abs() <= vm * change.lin_err + 1e-9).all())
    # and, without an outlier, the estimate is close, so the bounds can decide pairs (not vacuous)
    if not outlier:
        scale = (r_after - rb).abs().mean((2, 3)).amax(1, keepdim=True)
        assert float(((lin_true - change.lin.double()).abs() / scale).max()) < 0.05


def _reordered(dq: torch.Tensor, b_idx: torch.Tensor, seed: int, dropped: int, residue: float):
    """``dq`` (P, C, H, W) channels last in a random per-image channel order, with ``dropped`` channels
    at the end of each image's order scaled by ``residue`` (0: exactly zero), and that order."""
    gen = torch.Generator().manual_seed(seed)
    c = dq.shape[1]
    order = torch.stack([torch.randperm(c, generator=gen) for _ in range(int(b_idx.max()) + 1)])
    n_live = torch.full((len(order),), c - dropped)
    last = dq.permute(0, 2, 3, 1)
    last = last.gather(3, order[b_idx][:, None, None, :].expand_as(last)).clone()
    last[..., c - dropped :] *= residue
    return last, (order, n_live)


@needs_int8
@pytest.mark.parametrize(("k", "pad", "dropped"), [(3, 1, 6), (5, 2, 6), (3, 1, 24)])
def test_leaving_out_unchanged_channels_gives_the_same_change(k, pad, dropped):
    """Each image's channels in its own order, the last ``dropped`` unchanged by every pair (24: all
    of them): the products leave them out, with the results of the whole product in the network's order."""
    conv, before, after, b_idx, r, _ = _case(k, pad, k, crossing_scale=1.0)
    tier = Int8Conv(conv, pad, (7, 7))
    mask = (r > 0).float().flatten(2)[:, :, tier.positions].transpose(1, 2).contiguous()
    r_abs = r.abs().float().flatten(2)[:, :, tier.positions].transpose(1, 2).contiguous()
    dq, channels = _reordered(after - F.relu(before[b_idx]), b_idx, seed=k, dropped=dropped, residue=0.0)
    inverse = torch.empty_like(dq).scatter_(3, channels[0][b_idx][:, None, None, :].expand_as(dq), dq)
    widths = []
    gather = tier._weights_of_channels
    tier._weights_of_channels = lambda ch: widths.append(len(ch)) or gather(ch)
    left_out = tier.change(dq, b_idx, mask, r_abs, channels=channels, block=4)
    assert widths == [24 - dropped] * 4  # one gather per image, of the channels it keeps
    whole = tier.change(inverse, b_idx, mask, r_abs, block=4)  # the network's order, every channel
    for a, b in zip((left_out.lin, left_out.rem, left_out.lin_err), (whole.lin, whole.rem, whole.lin_err), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


@needs_int8
def test_no_pairs_gives_an_empty_change():
    conv, before, after, b_idx, r, _ = _case(3, 1, seed=0, crossing_scale=1.0)
    tier = Int8Conv(conv, 1, (7, 7))
    mask = (r > 0).float().flatten(2).transpose(1, 2).contiguous()
    change = tier.change((after[:0] - F.relu(before[:0])).permute(0, 2, 3, 1), b_idx[:0], mask, mask.clone())
    assert change.lin.shape == (0, 40) and change.rem.shape == (0, 40) and change.lin_err.shape == (0,)


def test_image_blocks_keep_each_image_to_itself():
    b_idx = torch.tensor([0] * 100 + [1] * 10 + [2] * 70 + [3] * 64)
    # 100 pairs: two blocks of 50; 10 alone; 70: 35 + 35; 64 fits one block
    assert image_blocks(b_idx, 64) == [(0, 50), (50, 100), (100, 110), (110, 145), (145, 180), (180, 244)]
    assert image_blocks(b_idx[:0], 64) == []
    gen = torch.Generator().manual_seed(0)
    for block in (1, 7, 64):
        b_idx = torch.randint(0, 30, (500,), generator=gen).sort().values
        ranges = image_blocks(b_idx, block)
        assert [s for s, _ in ranges] == [0, *(e for _, e in ranges[:-1])] and ranges[-1][1] == len(b_idx)
        assert all(0 < e - s <= block and len(set(b_idx[s:e].tolist())) == 1 for s, e in ranges)
