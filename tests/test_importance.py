"""Importance: top-k rule, sound bounds, generic batched path vs naive hooks, attribution, cumulative."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from autointerp.importance.ablation import Ablation, FeatureTally
from autointerp.importance.attribution import agreement, attribution_importance
from autointerp.importance.cumulative import ablation_sizes, cumulative_ablation
from autointerp.importance.engine import bound_pass, evaluate_chunk, evaluate_segment
from autointerp.importance.lipschitz import analyse_tail, conv_operator_norm
from autointerp.importance.naive import naive_importance
from autointerp.importance.paths import TailPath
from autointerp.importance.topk import boundary_radius, decide_interval, topk_correct

torch.set_num_threads(2)


def brute_correct(z: np.ndarray, t: int, k: int, valid: np.ndarray) -> bool:
    if not valid[t]:
        return False
    return sum(1 for j in range(len(z)) if j != t and valid[j] and z[j] > z[t]) < k


def test_topk_correct_matches_brute_force_with_ties_and_dummies():
    rng = np.random.default_rng(0)
    z = rng.integers(-3, 4, size=(200, 12)).astype(np.float32)  # many ties
    labels = rng.integers(0, 12, size=200)
    valid = np.ones(12, bool)
    valid[[0, 11]] = False
    for k in (1, 3, 5):
        got = topk_correct(torch.tensor(z), torch.tensor(labels), k, torch.tensor(valid)).numpy()
        want = [brute_correct(z[i], labels[i], k, valid) for i in range(200)]
        assert got.tolist() == want


def test_decide_interval_agrees_with_every_point_of_the_interval():
    """Decided means every logit vector with margins inside [lo, hi] gives the same (stated) answer."""
    rng = np.random.default_rng(1)
    z = rng.integers(-3, 4, size=(300, 12)).astype(np.float64)
    labels = rng.integers(0, 12, size=300)
    valid = np.ones(12, bool)
    valid[[0, 11]] = False
    d = z[np.arange(300), labels][:, None] - z  # margins d_j = z_t - z_j
    half = rng.choice([0.0, 0.5, 2.0], size=(300, 12))
    half[np.arange(300), labels] = 0.0  # d_t = 0 by definition
    lab, ok = torch.tensor(labels), torch.tensor(valid)
    for k in (1, 3):
        decided, correct = decide_interval(torch.tensor(d - half), torch.tensor(d + half), lab, ok, k)
        assert 0 < int(decided.sum()) < 300
        for _ in range(20):  # margins drawn from the interval (endpoints included); logits z' = -margins
            pick = d + half * rng.choice([-1.0, 0.0, 1.0], size=d.shape)
            want = [brute_correct(-pick[i], labels[i], k, valid) for i in range(300)]
            got = np.array(want)[decided.numpy()]
            assert got.tolist() == correct[decided].tolist()
        # zero width: always decided, and the same as topk_correct on the logits
        same, at_d = decide_interval(torch.tensor(d), torch.tensor(d), lab, ok, k)
        assert bool(same.all())
        assert at_d.tolist() == topk_correct(torch.tensor(z), lab, k, ok).tolist()


def test_boundary_radius_is_sound_and_tight():
    """No perturbation of h shorter than τ changes correctness; one just longer than τ can."""
    rng = np.random.default_rng(1)
    o, d, n, k = 9, 6, 300, 3
    w = torch.tensor(rng.normal(size=(o, d)))
    valid = torch.ones(o, dtype=torch.bool)
    valid[0] = False
    h = torch.tensor(rng.normal(size=(n, d)))
    labels = torch.tensor(rng.integers(1, o, size=n))
    z = h @ w.T
    tau = boundary_radius(z, labels, w, k, valid)
    base = topk_correct(z, labels, k, valid)
    for _ in range(20):
        direction = torch.tensor(rng.normal(size=(n, d)))
        dh = direction / direction.norm(dim=1, keepdim=True) * tau[:, None] * 0.999
        assert torch.equal(topk_correct((h + dh) @ w.T, labels, k, valid), base)
    # tightness: for k=1 and a correct image, moving along W_j - W_t by slightly more than τ flips it
    z1 = h @ w.T
    tau1 = boundary_radius(z1, labels, w, 1, valid)
    correct1 = topk_correct(z1, labels, 1, valid)
    flipped = 0
    for i in torch.nonzero(correct1)[:, 0].tolist():
        t = int(labels[i])
        r = [((z1[i, t] - z1[i, j]) / (w[t] - w[j]).norm()).item() if (j != t and valid[j]) else math.inf
             for j in range(o)]  # fmt: skip
        j = int(np.argmin(r))
        assert r[j] * 0.999 - 1e-3 <= tau1[i] <= r[j]  # τ is the true distance, shrunk only by float slack
        u = (w[j] - w[t]) / (w[j] - w[t]).norm()
        moved = (h[i] + u * r[j] * 1.001) @ w.T
        flipped += int(not topk_correct(moved[None], labels[i : i + 1], 1, valid)[0])
    assert flipped == int(correct1.sum()) > 0


def small_cnn(seed: int = 0, n_classes: int = 7) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(head, tail, full) of a small CNN whose tail is a chain the skip bound supports."""
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
    tail = nn.Sequential(
        nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, n_classes),
    )  # fmt: skip
    with torch.no_grad():
        head[0].weight.mul_(20.0)  # large activations: single channels matter, as in a small trained net
        tail[1].running_mean.uniform_(-0.2, 0.2)
        tail[1].running_var.uniform_(0.3, 2.0)
        tail[1].weight.uniform_(0.5, 1.5)
        tail[-1].weight.mul_(8.0)  # spread the logits like a trained network's
    full = nn.Sequential(head, tail).eval()
    return head.eval(), tail.eval(), full


def boundary_labels(z: torch.Tensor, valid: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Labels at rank k-1 or k: every image sits at its top-k boundary, so ablations do flip."""
    order = z.masked_fill(~valid, float("-inf")).argsort(1, descending=True)
    ranks = torch.as_tensor(np.random.default_rng(seed).integers(max(k - 2, 0), k + 1, size=len(z)))
    return order[torch.arange(len(z)), ranks]


def test_conv_operator_norm_bounds_the_true_norm():
    torch.manual_seed(0)
    w = torch.randn(5, 4, 3, 3)
    bound = conv_operator_norm(w, (6, 6), (1, 1))
    # power iteration on the exact linear map (a lower estimate of its norm)
    x = torch.randn(1, 4, 6, 6)
    for _ in range(60):
        y = torch.nn.functional.conv2d(x, w, padding=1)
        x = torch.nn.functional.conv_transpose2d(y, w, padding=1)
        x = x / x.norm()
    est = torch.nn.functional.conv2d(x, w, padding=1).norm().item()
    assert est <= bound <= est * 1.6


def test_tail_lipschitz_bound_is_sound():
    _, tail, _ = small_cnn()
    example = torch.randn(2, 6, 8, 8)
    bound, reason = analyse_tail(tail, example)
    assert bound is not None, reason
    feats = nn.Sequential(*list(tail)[:-1])
    x = torch.randn(16, 6, 8, 8).abs()
    worst = 0.0
    for scale in (1e-3, 1e-1, 1.0, 10.0):
        dx = torch.randn_like(x) * scale
        ratio = (feats(x + dx) - feats(x)).norm(dim=1) / dx.flatten(1).norm(dim=1)
        worst = max(worst, float(ratio.max()))
    # gradient ascent on the ratio, the adversarial direction
    dx = (torch.randn(1, 6, 8, 8) * 0.01).requires_grad_(True)
    x0 = x[:1]
    opt = torch.optim.Adam([dx], lr=1e-2)
    for _ in range(40):
        ratio = (feats(x0 + dx) - feats(x0)).norm() / dx.norm()
        opt.zero_grad()
        (-ratio).backward()
        opt.step()
        worst = max(worst, float(ratio.detach()))
    assert worst <= bound.lipschitz
    assert torch.equal(bound.weight, tail[-1].weight.detach().float())


def test_unsupported_tail_still_exact_without_bound():
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc((x + self.conv(x)).mean((2, 3)))

    bound, reason = analyse_tail(Residual(), torch.randn(1, 4, 5, 5))
    assert bound is None and "chain" in reason


def run_fast(tail, acts, labels, feats, ablation, k, valid, use_bound=True, chunk=5):
    path = TailPath(tail, example=acts[:1] if use_bound else None)
    bp = bound_pass(path, acts.numpy(), labels.numpy(), feats, ablation, k, valid, batch_size=16)
    out = {"imp": [], "c2w": [], "w2c": [], "lp": [], "skipped": 0}
    for s in range(0, len(feats), chunk):
        tally, _ = evaluate_chunk(path, acts.numpy(), labels.numpy(), bp, feats[s : s + chunk], ablation, k, valid,
                                  batch_size=16, pair_batch=37)  # fmt: skip
        out["imp"] += tally.importance.tolist()
        out["c2w"] += tally.correct_to_wrong.tolist()
        out["w2c"] += tally.wrong_to_correct.tolist()
        out["lp"] += tally.mean_delta_logprob.tolist()
        out["skipped"] += int(tally.n_skipped.sum())
    return out, bp


@pytest.mark.parametrize("scope", ["channel", "position"])
def test_generic_path_equals_naive_hooks_on_small_cnn(scope):
    head, tail, full = small_cnn()
    images = torch.rand(40, 3, 8, 8)
    with torch.no_grad():
        acts = head(images)
        z = tail(acts)
    valid = torch.ones(7, dtype=torch.bool)
    valid[6] = False  # a dummy output
    k = 2
    labels = boundary_labels(z, valid, k)
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), acts.mean(0).numpy(), scope, tuple(acts.shape[1:]))
    feats = list(range(6))
    seconds: dict[str, float] = {}

    class Paced(nn.Module):
        """``full`` taking 20 ms more per call: the split of the time below follows the passes (3 batches
        unablated, 6 features x 3 batches ablated), not the machine's load."""

        def __init__(self) -> None:
            super().__init__()
            self.net = full

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return self.net(x)

    naive = naive_importance(
        Paced(), full[0], images, labels, feats, ablation, k, valid, batch_size=16, seconds=seconds
    )
    assert set(seconds) == {"baseline", "ablated"} and seconds["baseline"] >= 3 * 0.02
    # 6 passes per batch against 1: the ablated share holds at least the 18 paced calls and outweighs the baseline's
    # 3 (the unpaced compute of a loaded machine lands in both, so no tighter ratio is asserted)
    assert seconds["ablated"] >= 18 * 0.02 and seconds["ablated"] > seconds["baseline"]
    fast, _ = run_fast(tail, acts, labels, feats, ablation, k, valid)
    assert fast["c2w"] == naive.correct_to_wrong.tolist()
    assert fast["w2c"] == naive.wrong_to_correct.tolist()
    assert sum(fast["c2w"]) + sum(fast["w2c"]) > 0  # the planted boundary labels do flip
    np.testing.assert_allclose(fast["lp"], naive.mean_delta_logprob, atol=2e-3, rtol=0.05)


def test_imputing_original_values_changes_nothing():
    head, tail, full = small_cnn(1)
    images = torch.rand(24, 3, 8, 8)
    with torch.no_grad():
        acts = head(images)
        z = tail(acts)
    valid = torch.ones(7, dtype=torch.bool)
    labels = boundary_labels(z, valid, 1)
    feats = list(range(6))
    same = Ablation.original()
    for use_bound in (True, False):
        fast, _ = run_fast(tail, acts, labels, feats, same, 1, valid, use_bound=use_bound)
        assert fast["imp"] == [0] * 6 and fast["c2w"] == [0] * 6 and fast["w2c"] == [0] * 6
        assert np.abs(fast["lp"]).max() < 1e-6
    naive = naive_importance(full, full[0], images, labels, feats, same, 1, valid)
    assert naive.importance.tolist() == [0] * 6
    assert np.abs(naive.mean_delta_logprob).max() < 1e-6
    att = attribution_importance(tail, acts.numpy(), labels.numpy(), feats, same, 1, valid)
    assert np.abs(att.importance).max() == 0 and np.abs(att.mean_delta_logprob).max() == 0


def demo_setup(n: int = 64):
    from autointerp.config import DatasetConfig
    from autointerp.data import load_dataset
    from autointerp.models.base import create_model

    model = create_model("demo_cnn", pretrained=False)
    with torch.no_grad():  # spread the random model's logits like a trained one's
        model.module.fc.weight.mul_(20.0)
    ds = load_dataset(DatasetConfig(type="synthetic", options={"n_images": n, "seed": 3}))
    images = ds.batch(range(n), model.input_size)
    layer = "conv3"
    with torch.no_grad():
        acts = model.head(layer)(images)
        z = model.tail(layer)(acts)
    return model, layer, images, acts, z


def test_demo_model_fast_equals_naive_all_features_and_skips_are_sound():
    model, layer, images, acts, z = demo_setup()
    valid = model.valid_outputs
    k = 1
    labels = boundary_labels(z, valid, k)
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", tuple(acts.shape[1:]))
    feats = list(range(acts.shape[1]))
    layer_module = dict(model.module.named_modules())[layer]
    naive = naive_importance(model.forward, layer_module, images, labels, feats, ablation, k, valid, batch_size=48,
                             cached=acts)  # fmt: skip
    fast, bp = run_fast(model.tail(layer), acts, labels, feats, ablation, k, valid, chunk=8)
    assert fast["c2w"] == naive.correct_to_wrong.tolist()
    assert fast["w2c"] == naive.wrong_to_correct.tolist()
    assert sum(fast["c2w"]) > 0
    # soundness: every skipped pair, evaluated exactly, keeps its correctness
    skipped = torch.nonzero(~bp.candidate)
    assert len(skipped) > 0, "the bound should skip some pairs on the demo model"
    tail = model.tail(layer)
    xa = acts[skipped[:, 0]].clone()
    xa[torch.arange(len(skipped)), skipped[:, 1]] = ablation.values[skipped[:, 1]]
    with torch.no_grad():
        after = topk_correct(tail(xa), labels[skipped[:, 0]], k, valid)
    assert torch.equal(after, bp.base_correct[skipped[:, 0]])


def test_attribution_tracks_exact_on_planted_model():
    """Channel c is evidence for class c % 4 with weight growing in c: both methods rank features alike."""
    gen = torch.Generator().manual_seed(0)
    c, o, n = 12, 4, 600
    weights = torch.linspace(0.2, 3.0, c)
    tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, o, bias=False))
    with torch.no_grad():
        tail[2].weight.zero_()
        tail[2].weight[torch.arange(c) % o, torch.arange(c)] = weights
    labels = torch.randint(0, o, (n,), generator=gen)
    own = (torch.arange(c)[None, :] % o) == labels[:, None]  # (n, c) channels that are evidence for the label
    level = torch.where(own, 1.0 + torch.rand(n, c, generator=gen), 1.2 * torch.rand(n, c, generator=gen))
    acts = level[:, :, None, None] + 0.1 * torch.randn(n, c, 2, 2, generator=gen)
    valid = torch.ones(o, dtype=torch.bool)
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (c, 2, 2))
    feats = list(range(c))
    exact, _ = run_fast(tail, acts, labels, feats, ablation, 1, valid)
    assert sum(exact["imp"]) > 50  # ablations do hurt here
    att = attribution_importance(tail, acts.numpy(), labels.numpy(), feats, ablation, 1, valid)
    agree = agreement(att.importance, np.array(exact["imp"]), top=4)
    assert agree["spearman"] > 0.7
    assert agree["top4_overlap"] >= 0.75


def test_agreement_reference_values():
    from scipy.stats import spearmanr

    a, b = np.array([3.0, 1, 2, 5, 4]), np.array([30, 10, 25, 20, 40])
    got = agreement(a, b, top=2)
    assert got["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    assert got["top2_overlap"] == 0.5  # top-2 of a: {3, 4}; of b: {4, 2}


def test_cumulative_ablation_sizes_and_monotone_planted():
    assert ablation_sizes(10) == [0, 1, 2, 4, 8, 10]
    assert ablation_sizes(8) == [0, 1, 2, 4, 8]
    tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        tail[2].weight.copy_(torch.eye(4))
    # image i has its class in channel i % 4 far above the rest; the mean is 0 in every channel
    acts = torch.zeros(8, 4, 2, 2)
    for i in range(8):
        acts[i, i % 4] = 5.0 if i < 4 else -5.0
    labels = torch.arange(8) % 4
    ablation = Ablation(torch.zeros(4, 2, 2))
    rows = cumulative_ablation(tail, acts.numpy(), labels.numpy(), [0, 1, 2, 3], ablation, 1, torch.ones(4, dtype=bool))
    assert [r["n_ablated"] for r in rows] == [0, 1, 2, 4]
    # images 0-3 are correct until their channel is ablated (then all-zero logits tie: still correct
    # under the strictly-larger rule); images 4-7 are wrong until theirs is ablated
    assert [r["top1"] for r in rows] == [0.5, 0.625, 0.75, 1.0]


def test_segments_of_images_add_up_to_the_whole(tmp_path):
    """evaluate_segment over two halves of the images, added, equals one segment of all of them."""
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)  # the tail's initial weights
    tail = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 12))  # fmt: skip
    acts = torch.rand(20, 6, 5, 5, generator=gen) * 4
    with torch.no_grad():  # true class = the top-1 or runner-up output: top-1 flips when channels go
        labels = tail(acts).topk(2).indices[torch.arange(20), torch.arange(20) % 2].numpy()
    valid = torch.ones(12, dtype=torch.bool)
    feats = list(range(6))
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (6, 5, 5))
    path = TailPath(tail, example=acts[:1])
    whole, _ = evaluate_segment(path, acts.numpy(), labels, feats, ablation, 1, valid, batch_size=8)
    done = []
    halves = FeatureTally(np.asarray(feats))
    for s, e in ((0, 9), (9, 20)):
        part, stats = evaluate_segment(path, acts[s:e].numpy(), labels[s:e], feats, ablation, 1, valid, batch_size=8,
                                       on_batch=done.append)  # fmt: skip
        halves.add(part)
        assert stats["bound_pass_seconds"] >= 0.0
    assert sum(done) == 20  # progress counts every image once
    assert halves.n_images == whole.n_images == 20
    for name in ("correct_to_wrong", "wrong_to_correct", "n_skipped", "n_bounded", "n_exact"):
        assert np.array_equal(getattr(halves, name), getattr(whole, name)), name
    assert np.allclose(halves.mean_delta_logprob, whole.mean_delta_logprob, atol=1e-12)
    assert int((whole.correct_to_wrong + whole.wrong_to_correct).sum()) > 0  # some ablation flips an image
    with pytest.raises(ValueError, match="different features"):
        halves.add(FeatureTally(np.asarray(feats[:3])))


def test_tail_path_logits_from_the_gradient_pass_equal_the_no_grad_tail():
    torch.manual_seed(0)
    tail = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8).eval(), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 12))  # fmt: skip
    x = torch.randn(5, 6, 5, 5)
    path = TailPath(tail, example=x[:1])
    z, grad = path.logits_and_grad(x, torch.tensor([0, 3, 5, 7, 11]), torch.ones(12, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(z, tail(x).float())
    assert grad.shape == x.shape and float(grad.abs().sum()) > 0


def test_class_subset_decides_as_all_outputs():
    """Planted intervals for 300 pairs over 200 outputs (10 invalid): keeping only the outputs some pair's
    interval leaves open, with each pair's k lowered by its competitors left out above, any sound
    tighter interval decides every pair as over all outputs; and most outputs are left out."""
    from autointerp.importance.topk import class_subset, decide_interval

    gen = torch.Generator().manual_seed(3)
    n, o, k = 300, 200, 10
    valid = torch.ones(o, dtype=torch.bool)
    valid[torch.randperm(o, generator=gen)[:10]] = False
    labels = torch.randint(0, o, (6,), generator=gen)[torch.randint(0, 6, (n,), generator=gen)]  # six images
    d = torch.randn(n, o, generator=gen, dtype=torch.float64).abs() * 3 + 1  # margins: most outputs far below
    d[:, 12:21] *= -1  # nine far above (counted in each pair's k)
    d[:, :12] = torch.randn(n, 12, generator=gen, dtype=torch.float64) * 0.2  # a few near the boundary
    half = torch.rand(n, o, generator=gen, dtype=torch.float64) * 0.3
    lo, hi = d - half, d + half
    lo[5, 40] = float("nan")  # not finite: kept
    subset = class_subset(lo, hi, labels, valid, k)
    assert len(subset.columns) < o // 2 and 40 in subset.columns.tolist()
    assert torch.equal(subset.columns[subset.labels], labels)
    for shrink in (1.0, 0.5, 0.0):  # tighter sound intervals inside [lo, hi], down to the true d
        lo2, hi2 = d - shrink * half, d + shrink * half
        full = decide_interval(lo2, hi2, labels, valid, k)
        cols = subset.columns
        part = decide_interval(lo2[:, cols], hi2[:, cols], subset.labels, subset.valid, subset.k)
        assert torch.equal(full[0], part[0]) and torch.equal(full[1][full[0]], part[1][part[0]])
    assert bool(decide_interval(d, d, labels, valid, k)[0].all())
