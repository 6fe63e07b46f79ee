"""The batched renderer against lucent (parametrisation, diversity, redirected ReLU), its transforms,
determinism, diversity of the 4 images, a planted feature, and the NaN/Inf retry path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_vis_world import RED, blob_images, planted_adapter  # tests/ helper module
from torch import nn

from autointerp.vis.kernels import FastRedirectedReLU, LucidRedirectedReLU, render_mode
from autointerp.vis.objectives import gram_similarity, job_losses
from autointerp.vis.param import ImageParam
from autointerp.vis.render import Job, RenderSettings, channel_activation, job_seed, optimise, render
from autointerp.vis.transforms import TransformSettings, affine_thetas, apply_transforms

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = RenderSettings(steps=12, size=32)


# -- building blocks vs lucent -------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 33])
@pytest.mark.parametrize("fft", [True, False])
def test_image_param_matches_lucent(size: int, fft: bool) -> None:
    from lucent.optvis import param as lparam

    inits = [ImageParam.draw_init(np.random.default_rng(i), size, fft, sd=0.5) for i in range(3)]
    ours = ImageParam(inits, size, fft=fft, decorrelate=True)
    params, image_f = lparam.image(size, batch=3, fft=fft, decorrelate=True)
    with torch.no_grad():
        params[0].copy_(ours.data)
    torch.testing.assert_close(ours(), image_f(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels,hw", [(32, 3), (4, 6)])  # both code paths (HW-form and Gram-form)
def test_diversity_matches_lucent(channels: int, hw: int) -> None:
    from lucent.optvis import objectives as lobj

    acts = torch.randn(4, channels, hw, hw, generator=torch.Generator().manual_seed(channels))
    ref = lobj.diversity("layer")(lambda _name: acts)  # lucent returns minus the similarity
    torch.testing.assert_close(gram_similarity(acts, 4), -ref.reshape(1), rtol=1e-5, atol=1e-6)


def test_batched_loss_is_the_sum_of_lucent_objectives() -> None:
    """Two jobs in one batch give exactly lucent's `channel - 100 * diversity` per job."""
    from lucent.optvis import objectives as lobj

    acts = torch.randn(8, 16, 3, 3, generator=torch.Generator().manual_seed(3))
    channels = torch.tensor([5] * 4 + [9] * 4)
    signs = torch.ones(8)
    loss, _ = job_losses(acts, channels, signs, 4, 100.0)
    for j, ch in enumerate((5, 9)):
        part = acts[4 * j : 4 * j + 4]
        ref = (lobj.channel("layer", ch) - 100.0 * lobj.diversity("layer"))(lambda _name, p=part: p)
        torch.testing.assert_close(loss[j], ref, rtol=1e-5, atol=1e-5)


def test_fast_redirected_relu_has_lucent_gradient_and_is_restored() -> None:
    from lucent.modelzoo.inceptionv1.helper_layers import RedirectedReLU, RedirectedReluLayer

    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    (ref,) = torch.autograd.grad(RedirectedReLU.apply(x), x, g)
    (ours,) = torch.autograd.grad(FastRedirectedReLU.apply(x), x, g)
    torch.testing.assert_close(ours, ref)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), RedirectedReluLayer())
    with render_mode(model):
        assert all(not p.requires_grad for p in model.parameters())
        assert "forward" in vars(model[1])
    assert all(p.requires_grad for p in model.parameters())
    assert "forward" not in vars(model[1])


def test_lucid_redirected_relu_gradient_rule() -> None:
    """Per image: the ordinary ReLU gradient if any of it is non-zero, else the incoming gradient
    except where it would push a negative input lower (Lucid's redirected_relu_grad)."""
    x = torch.tensor([[1.0, -1.0, -2.0], [-1.0, -2.0, -3.0]], requires_grad=True)
    g = torch.tensor([[0.5, -0.5, 0.5], [-0.5, 0.5, -2.0]])
    (grad,) = torch.autograd.grad(LucidRedirectedReLU.apply(x), x, g)
    torch.testing.assert_close(grad, torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, -2.0]]))
    torch.testing.assert_close(LucidRedirectedReLU.apply(x), x.clamp(min=0))


def test_render_mode_folds_batchnorm_redirects_relu_and_restores() -> None:
    torch.manual_seed(0)
    conv, bn, relu = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    model = nn.Sequential(conv, bn, relu).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    with render_mode(model):
        assert isinstance(model[1], nn.Identity) and model[0] is not conv  # folded
        assert "forward" in vars(relu)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    assert model[0] is conv and model[1] is bn and "forward" not in vars(relu)
    assert all(p.requires_grad for p in model.parameters())


# -- transforms ----------------------------------------------------------------------------------


def _theta(dx1=0.0, dy1=0.0, scale=1.0, angle=0.0, dx2=0.0, dy2=0.0, size=16, pad=0):
    return affine_thetas(torch.tensor([[dx1, dy1, scale, angle, dx2, dy2]]), size, pad)


def test_identity_transform_returns_the_image() -> None:
    img = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(apply_transforms(img, _theta(), pad=0), img, rtol=0, atol=1e-5)


def test_translation_rotation_and_padding() -> None:
    img = torch.rand(1, 3, 16, 16)
    shifted = apply_transforms(img, _theta(dx1=2, dy1=1), pad=0)
    torch.testing.assert_close(shifted[..., 1:, 2:], img[..., :-1, :-2], rtol=0, atol=1e-5)
    assert torch.allclose(shifted[..., :, :2], torch.tensor(0.5))  # shifted-in area is the pad colour
    rotated = apply_transforms(img, _theta(angle=90.0), pad=0)
    assert any(torch.allclose(rotated, torch.rot90(img, k, dims=(2, 3)), atol=1e-5) for k in (1, -1))
    padded = apply_transforms(img, _theta(size=16, pad=4), pad=4)
    assert padded.shape == (1, 3, 24, 24)
    torch.testing.assert_close(padded[..., 4:20, 4:20], img, rtol=0, atol=1e-5)
    assert torch.allclose(padded[..., :4, :], torch.tensor(0.5))


def test_transform_draws_follow_lucent_distributions() -> None:
    draws = TransformSettings().draw(np.random.default_rng(0), steps=4000, n=1).reshape(-1, 6)
    assert set(np.unique(draws[:, 0])) == set(range(-4, 4))  # jitter(8): 8 distinct shifts
    assert set(np.unique(draws[:, 4])) == set(range(-2, 2))  # jitter(4)
    np.testing.assert_allclose(sorted(np.unique(draws[:, 2])), [1 + (i - 5) / 50 for i in range(11)], rtol=1e-6)
    assert abs((draws[:, 3] == 0).mean() - 6 / 26) < 0.03  # 0 appears 6 times among 26 angles


# -- the renderer --------------------------------------------------------------------------------


def test_same_settings_same_images_and_batch_independence() -> None:
    head = planted_adapter().head("2")
    a = render(head, [Job(0), Job(1), Job(2)], SMALL, seed=7)
    b = render(head, [Job(0), Job(1), Job(2)], SMALL, seed=7)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.images, rb.images)
        assert ra.seed == rb.seed == job_seed(7, ra.job)
    alone = render(head, [Job(1)], SMALL, seed=7)[0]
    assert np.abs(alone.images.astype(int) - a[1].images.astype(int)).max() <= 2  # batch-mates do not matter
    other_seed = render(head, [Job(1)], SMALL, seed=8)[0]
    assert np.abs(other_seed.images.astype(int) - a[1].images.astype(int)).mean() > 5


def test_the_four_images_differ_and_diversity_lowers_their_similarity() -> None:
    head = planted_adapter().head("2")
    settings = RenderSettings(steps=40, size=32)
    diverse = render(head, [Job(2)], settings, seed=0)[0]
    imgs = diverse.images.astype(float)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(imgs[i] - imgs[j]).mean() > 8, (i, j)

    def similarity(result) -> float:
        x = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            return float(gram_similarity(head(x), 4))

    same = render(head, [Job(2)], RenderSettings(steps=40, size=32, diversity=0.0), seed=0)[0]
    assert similarity(diverse) < similarity(same)


def test_planted_red_detector_beats_every_dataset_image() -> None:
    head = planted_adapter().head("2")
    images, _ = blob_images()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    data_best = channel_activation(head, x, [RED] * len(x), reduce="max").max()
    result = render(head, [Job(RED)], RenderSettings(steps=96, size=32), seed=0)[0]
    vis = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 255
    vis_best = channel_activation(head, vis, [RED] * 4, reduce="max").max()
    assert vis_best > data_best
    best = result.images[int(np.argmax(channel_activation(head, vis, [RED] * 4, reduce="max")))]
    mean_rgb = best.reshape(-1, 3).mean(axis=0)
    assert mean_rgb[0] > mean_rgb[1] + 40 and mean_rgb[0] > mean_rgb[2] + 40  # it is red


def test_negative_visualisation_minimises_the_channel() -> None:
    head = planted_adapter().head("2")
    settings = RenderSettings(steps=40, size=32, diversity=0.0)  # the sign alone, no diversity pull
    pos, neg = render(head, [Job(RED, 1), Job(RED, -1)], settings, seed=0)
    assert max(neg.objective) < 0.01 < 0.05 < min(pos.objective)  # ReLU'd detector: 0 is the minimum
    assert neg.seed != pos.seed


class _Fragile(nn.Module):
    """Maximising ``-sqrt(c - redness)`` pushes redness past ``c``: NaN with a large learning rate only."""

    def __init__(self, c: float = 0.3) -> None:
        super().__init__()
        self.c = c
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, :1] - 0.5 * (x[:, 1:2] + x[:, 2:3])
        return -torch.sqrt(self.c - red) * self.scale


class _AlwaysNaN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.scale * float("nan")


def test_nonfinite_job_is_retried_with_smaller_lr_and_flagged() -> None:
    settings = RenderSettings(steps=32, size=32, n_images=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, finite = optimise(_Fragile(), [Job(0)], settings, seed=0)
        assert not finite.any()  # the default lr really diverges on this model
        (result,) = render(_Fragile(), [Job(0)], settings, seed=0)
    assert result.flags == ["retried_lr"]
    assert result.lr == pytest.approx(settings.lr * settings.retry_lr_factor)
    assert result.images is not None and np.isfinite(result.objective).all()


def test_job_that_never_becomes_finite_is_flagged_and_returns_no_images() -> None:
    settings = RenderSettings(steps=4, size=16, n_images=2, max_retries=2)
    fine = nn.Conv2d(3, 1, 1)
    ok, bad = render(fine, [Job(0)], settings, seed=0)[0], render(_AlwaysNaN(), [Job(0)], settings, seed=0)[0]
    assert ok.flags == [] and ok.images is not None
    assert bad.images is None and "nonfinite" in bad.flags
    assert bad.lr == pytest.approx(settings.lr * settings.retry_lr_factor**2)
