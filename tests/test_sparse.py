"""Sparse exact tier (fastpaths.inceptionv1.sparse): a branch's pooled change from the rank-1 part
and the sparse correction, against float64 convolutions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autointerp.importance.fastpaths.inceptionv1.sparse import SparseExactConv

torch.set_num_threads(2)


def _case(k: int, spatial: tuple[int, int], seed: int, scale: float, pairs: int = 6):
    """A conv (24 -> 40 channels, "same" padding), one image's bottleneck pre-activations ``p``
    (H, W, C) whose channels are mostly one sign (as a real image's: a few always on or off, most
    with a minority of the other sign), and per pair an ablated channel's weight column ``w`` and change
    ``δ`` of very different sizes, with ``Δq = relu(p + wδ) - relu(p)`` as the path computes it."""
    gen = torch.Generator().manual_seed(seed)
    pad = k // 2
    conv = nn.Conv2d(24, 40, k, padding=pad)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 0.1)
        conv.bias.copy_(torch.randn(40, generator=gen) * 0.2)
    h, w = spatial
    lean = torch.randn(24, generator=gen) * 1.5  # each channel's typical sign and how strongly
    p = lean + torch.randn(h, w, 24, generator=gen)
    p[..., 0], p[..., 1] = p[..., 0].abs() + 0.1, -p[..., 1].abs() - 0.1  # always on / always off
    with torch.no_grad():
        r = conv(F.relu(p).permute(2, 0, 1)[None])[0]  # (O, H, W), float32 as the path's baseline
    sizes = torch.logspace(-3, 0.5, pairs) * scale
    wc = torch.randn(pairs, 24, generator=gen)
    delta = torch.randn(pairs, h, w, generator=gen) * sizes[:, None, None]
    dq = torch.relu(p + wc[:, None, None, :] * delta[..., None]) - torch.relu(p)
    return conv, r, p, wc, delta, dq


def _exact(conv: nn.Conv2d, r: torch.Tensor, dq: torch.Tensor) -> torch.Tensor:
    """float64 pooled change ``mean_pos(relu(r + K * Δq) - relu(r))`` for ``dq`` (P, H, W, C)."""
    k = conv.weight.shape[-1]
    dr = F.conv2d(dq.permute(0, 3, 1, 2).double(), conv.weight.detach().double(), padding=k // 2)
    r = r.double()[None]
    return (F.relu(r + dr) - F.relu(r)).mean((2, 3))


@pytest.mark.parametrize(("k", "spatial"), [(3, (7, 7)), (5, (7, 7)), (3, (4, 6)), (5, (3, 5))])
@pytest.mark.parametrize("scale", [0.05, 1.0, 20.0])
def test_change_is_the_convolutions_within_its_rounding_bound(k, spatial, scale):
    """Channels in the image's own order, borders, tiny and huge changes: the pooled change is the
    float64 convolution's of the same ``Δq`` within the stated bound, and the bound is small."""
    conv, r, p, wc, delta, dq = _case(k, spatial, seed=k + spatial[1], scale=scale)
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    sc = SparseExactConv(conv, k // 2, spatial)
    got = sc.change(r, p[..., order], order, wc[:, order], delta)
    want = _exact(conv, r, dq)
    err = (got.change.double() - want).abs()
    assert bool((err <= got.error.double()).all())
    # the bound (worst-case float32 sums) is far below the changes it bounds
    assert float(got.error.max()) < 0.02 * float(want.abs().max())
    assert torch.allclose(got.pooled.double(), (F.relu(r.double()).mean((1, 2)) + want), atol=1e-5)
    if scale >= 1.0:  # outputs really cross zero: not just the linear part
        lin = F.conv2d(dq.permute(0, 3, 1, 2).double(), conv.weight.detach().double(), padding=k // 2)
        linear = ((r.double() > 0) * lin).mean((2, 3))
        assert float((want - linear).abs().max()) > 1e-3


def test_support_is_the_minority_entries_and_sign_flips():
    """``S`` lives where a channel's sign differs from its majority or the ablation flips it: with
    every channel of one sign and no flip, no entry is read; a planted minority entry is read."""
    conv, r, p, wc, delta, _ = _case(3, (7, 7), seed=0, scale=1e-3)
    p = p.abs() + 1.0  # all positive, far from flipping
    p[..., 5] = -p[..., 5]  # one channel all negative
    dq = torch.relu(p + wc[:, None, None, :] * delta[..., None]) - torch.relu(p)
    sc = SparseExactConv(conv, 1, (7, 7))
    none = sc.change(r, p, torch.arange(24), wc, delta)
    assert none.support == 0
    torch.testing.assert_close(none.change.double(), _exact(conv, r, dq), rtol=0, atol=1e-6)
    p[3, 4, 7] = -0.5  # one minority entry: read by the 9 windows containing it
    dq = torch.relu(p + wc[:, None, None, :] * delta[..., None]) - torch.relu(p)
    one = sc.change(r, p, torch.arange(24), wc, delta)
    assert one.support == 9
    assert bool(((one.change.double() - _exact(conv, r, dq)).abs() <= one.error.double()).all())


def test_rejects_a_convolution_without_same_padding():
    with pytest.raises(ValueError, match="same"):
        SparseExactConv(nn.Conv2d(4, 4, 3, padding=0), 0, (7, 7))


def test_compiled_change_needs_no_new_graph_for_a_batch_first_image_or_a_single_pair():
    """Worker processes compile during their warm-up: a later block whose image is the first of its batch
    (a view at storage offset 0, which torch.compile specialises) or that has one pair (size 1, likewise)
    must not compile another graph inside the timed run, and gives the eager result."""
    from torch._dynamo.utils import counters

    conv, r, p, wc, delta, dq = _case(3, (7, 7), seed=5, scale=1.0, pairs=4)
    order = torch.arange(24)
    batch = torch.stack((p * 0.5, p))  # the path's pre-activations: one row per image of the batch
    torch._dynamo.reset()
    compiled = SparseExactConv(conv, 1, (7, 7), compile=True)
    compiled.change(r, batch[1], order, wc[:3], delta[:3])  # offset > 0, three pairs: compiles
    graphs = counters["stats"]["unique_graphs"]
    first = batch[0]
    got = compiled.change(r, first, order, wc[3:], delta[3:])  # one pair
    assert counters["stats"]["unique_graphs"] == graphs
    eager = SparseExactConv(conv, 1, (7, 7)).change(r, first, order, wc[3:], delta[3:])
    assert torch.allclose(got.change, eager.change, atol=1e-5)
