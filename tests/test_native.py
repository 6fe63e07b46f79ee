"""Native loops (fastpaths.inceptionv1.native): built once into the cache, checked arguments, and a
clear fallback where no compiler is found."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from skips import skip_unless_available

from autointerp.importance.fastpaths.inceptionv1 import native


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty kernel cache and no loaded library (restored afterwards)."""
    monkeypatch.setenv("AUTOINTERP_KERNEL_CACHE", str(tmp_path / "kernels"))
    native.kernels.cache_clear()
    yield tmp_path / "kernels"
    native.kernels.cache_clear()


def _reference(taps, delta, rows, r, b_idx, k, pad):
    """float64 ``mean_pos(relu(r + taps * δ) - relu(r))`` by a convolution per pair."""
    out = []
    for p in range(len(taps)):
        weight = taps[p].double().T.reshape(-1, 1, k, k)  # (O, 1, k, k)
        dr = F.conv2d(delta[rows[p]].double()[None, None], weight, padding=pad)[0].flatten(1).T  # (HW, O)
        base = r[b_idx[p]].double()
        out.append((F.relu(base + dr) - F.relu(base)).mean(0))
    return torch.stack(out)


def test_builds_into_the_cache_once_and_matches_a_convolution(fresh_build):
    if native._compiler() is None:
        skip_unless_available("no C compiler here")
    gen = torch.Generator().manual_seed(0)
    k, pad, h, w, o = 3, 1, 6, 5, 24
    taps = torch.randn(5, k * k, o, generator=gen)
    delta = torch.randn(7, h, w, generator=gen)
    rows, b_idx = torch.tensor([6, 0, 3, 3, 1]), torch.tensor([1, 0, 1, 0, 1])
    r = torch.randn(2, h * w, o, generator=gen)
    pooled, tap_abs = native.rank_one_pooled(taps, delta, rows, r, b_idx, k, pad)
    expected = _reference(taps, delta, rows, r, b_idx, k, pad)
    torch.testing.assert_close(pooled.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tap_abs, taps.abs().sum(1))
    built = sorted(fresh_build.glob("*.so"))
    assert len(built) == 1 and not list(fresh_build.glob("tmp*.so"))  # no temporary file left
    stamp = built[0].stat().st_mtime_ns
    native.kernels.cache_clear()
    assert native.kernels() is not None
    assert built[0].stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_without_a_compiler_warns_once_and_callers_fall_back(fresh_build, monkeypatch):
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert native.kernels() is None
    taps, delta = torch.zeros(1, 9, 8), torch.zeros(1, 3, 3)
    assert native.rank_one_pooled(taps, delta, torch.tensor([0]), torch.zeros(1, 9, 8), torch.tensor([0]), 3, 1) is None


def test_turned_off_by_the_environment(fresh_build, monkeypatch):
    monkeypatch.setenv("AUTOINTERP_NATIVE", "0")
    assert native.kernels() is None
    assert not list(fresh_build.parent.glob("kernels/*.so"))


def test_bad_arguments_raise_before_the_loop_reads_memory():
    if native.kernels() is None:
        skip_unless_available("native loops unavailable here (no C compiler)")
    taps, delta, r = torch.zeros(2, 9, 8), torch.zeros(3, 4, 4), torch.zeros(2, 16, 8)
    with pytest.raises(IndexError, match="out of range"):
        native.rank_one_pooled(taps, delta, torch.tensor([0, 3]), r, torch.tensor([0, 1]), 3, 1)
    with pytest.raises(ValueError, match="do not fit"):
        native.rank_one_pooled(taps, delta, torch.tensor([0, 1]), r, torch.tensor([0, 1]), 5, 2)
    for k, pad in ((-3, -2), (3, 0), (3, 2)):  # no kernel size or padding the loop would misread
        with pytest.raises(ValueError, match="odd k"):
            native.rank_one_pooled(taps, delta, torch.tensor([0, 1]), r, torch.tensor([0, 1]), k, pad)
    with pytest.raises(ValueError, match="contiguous CPU"):
        native.rank_one_pooled(taps.double(), delta, torch.tensor([0, 1]), r, torch.tensor([0, 1]), 3, 1)


@pytest.mark.parametrize("channels", [24, 21])
def test_fit_matches_pytorch_in_the_network_channel_order(channels):
    """``rank_one_fit`` gives :func:`lowrank._fit`'s coefficients (scattered to the network's order),
    ``||S||²`` and norms, for channel counts with and without a tail beyond a multiple of 8; a zero
    ``δ`` gives ``α = 0`` (no division by zero)."""
    if native.kernels() is None:
        skip_unless_available("native loops unavailable here (no C compiler)")
    from autointerp.importance.fastpaths.inceptionv1.lowrank import _fit

    gen = torch.Generator().manual_seed(channels)
    dq = torch.randn(6, 7, 7, channels, generator=gen)
    delta = torch.randn(6, 7, 7, generator=gen)
    delta[4] = 0.0
    dq[4] = 0.0
    order = torch.stack([torch.randperm(channels, generator=gen) for _ in range(3)])
    rows, b_idx = torch.tensor([5, 1, 4, 0]), torch.tensor([2, 0, 1, 2])
    got = native.rank_one_fit(dq, rows, delta, order, b_idx)
    want = list(_fit(dq, rows, delta))
    want[0] = torch.empty_like(want[0]).scatter_(1, order[b_idx], want[0])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    assert bool((got[0][2] == 0).all())


@pytest.mark.parametrize("channels", [24, 21])
def test_fit_from_pre_activations_matches_the_fit_of_the_formed_change(channels):
    """``rank_one_fit_pre`` forms each pair's ``Δq = relu(p + w ⊗ δ) - relu(p)`` itself (pre-activations of
    both signs, so some entries switch on or off) and gives what ``rank_one_fit`` gives for that change;
    pairs share images and rows come out of order."""
    if native.kernels() is None:
        skip_unless_available("native loops unavailable here (no C compiler)")
    from autointerp.importance.fastpaths.inceptionv1.bottleneck import bottleneck_change

    gen = torch.Generator().manual_seed(channels)
    pre = torch.randn(3, 7, 7, channels, generator=gen)
    w = torch.randn(6, channels, generator=gen)
    delta = torch.randn(6, 7, 7, generator=gen)
    order = torch.stack([torch.randperm(channels, generator=gen) for _ in range(3)])
    b_of_row = torch.tensor([2, 0, 1, 2, 1, 0])  # each row's image
    rows = torch.tensor([5, 1, 4, 0])
    dq = bottleneck_change(pre, b_of_row, w, delta)
    assert 0.05 < float((dq == 0).float().mean()) < 0.95  # both stay-off and switched entries
    got = native.rank_one_fit_pre(pre, w, delta, rows, order, b_of_row[rows])
    want = native.rank_one_fit(dq, rows, delta, order, b_of_row[rows])
    for g, wt in zip(got, want, strict=True):
        torch.testing.assert_close(g, wt, rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError, match="image index"):
        native.rank_one_fit_pre(pre, w, delta, rows, order, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="do not fit"):
        native.rank_one_fit_pre(pre, w[:, 1:], delta, rows, order, b_of_row[rows])


def test_an_unwritable_cache_builds_in_the_temporary_folder(fresh_build, tmp_path, monkeypatch):
    """A cache folder that cannot be made (its parent is a file) falls back to a per-user folder
    under the temporary folder, without a warning."""
    if native._compiler() is None:
        skip_unless_available("no C compiler here")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("AUTOINTERP_KERNEL_CACHE", str(tmp_path / "a-file" / "kernels"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.kernels() is not None
    assert len(list((tmp_path / "tmp").glob("autointerp-kernels-*/kernels-*.so"))) == 1


def test_the_temporary_folder_is_refused_when_others_could_have_written_it(fresh_build, tmp_path, monkeypatch):
    """A per-user temporary folder that others can write (or someone else owns) is never loaded from:
    a library planted there would run as this user. The build then has nowhere to go: one warning."""
    if native._compiler() is None or not hasattr(os, "getuid"):
        skip_unless_available("no C compiler, or no POSIX ownership here")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("AUTOINTERP_KERNEL_CACHE", str(tmp_path / "a-file" / "kernels"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(native.tempfile, "tempdir", str(tmp_path / "tmp"))
    shared = tmp_path / "tmp" / f"autointerp-kernels-{os.getuid()}"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="no writable folder"):
        assert native.kernels() is None
    assert not list(shared.iterdir())


def test_a_larger_kernel_than_the_loop_handles_runs_in_pytorch():
    """A 9x9 convolution: the rank-one tier uses its PyTorch code (the C loop handles up to 7x7)."""
    from autointerp.importance.fastpaths.inceptionv1.lowrank import RankOneConv

    conv = torch.nn.Conv2d(8, 16, 9, padding=4)
    assert not RankOneConv(conv, 4, (5, 5), native=True).native
    assert RankOneConv(torch.nn.Conv2d(8, 16, 3, padding=1), 1, (5, 5), native=True).native
