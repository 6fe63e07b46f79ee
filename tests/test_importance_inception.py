"""InceptionV1 mixed5a rank-1 path: same counts as naive full forward passes; the skip bounds are sound."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from skips import skip_unless_available

from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import bound_pass, evaluate_chunk
from autointerp.importance.fastpaths.inceptionv1.path import (
    InceptionMixed5aPath,
    OpenPairs,
    reference_tail,
    supports_inception_mixed5a,
)
from autointerp.importance.fastpaths.inceptionv1.synthetic import hooked_forward_logits, rescaled_inceptionv1
from autointerp.importance.naive import naive_importance
from autointerp.importance.topk import boundary_radius, topk_correct, true_logprob

torch.set_num_threads(2)
K = 10
VALID = torch.zeros(1008, dtype=torch.bool)
VALID[1:1001] = True


def _setup(model: torch.nn.Module, n: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 224, 224, generator=gen)
    cap: list[torch.Tensor] = []
    handle = model.mixed5a.register_forward_hook(lambda _m, _i, out: cap.append(out))
    with torch.no_grad():
        model(images * 255 - 117)
    handle.remove()
    acts = cap[0]
    with torch.no_grad():
        z = reference_tail(model, acts)
    # labels at ranks K-2..K: every image sits at its top-k boundary, so ablations can flip it
    order = z.masked_fill(~VALID, float("-inf")).argsort(1, descending=True)
    ranks = torch.as_tensor(np.random.default_rng(seed).integers(K - 2, K + 1, size=n))
    labels = order[torch.arange(n), ranks]
    return images, acts, labels


@pytest.fixture(scope="module")
def perturbed():
    """A random InceptionV1 with trained-like activation and logit scales (see fastpaths.inceptionv1.synthetic)."""
    model = rescaled_inceptionv1(seed=0, example=torch.rand(2, 3, 224, 224) * 255 - 117)
    return (model, *_setup(model, n=3))


def fast_counts(model, acts, labels, feats, ablation, compile=False, int8=True, sparse="auto", lowrank="auto"):
    path = InceptionMixed5aPath(model, compile=compile, int8=int8, sparse=sparse, lowrank=lowrank)
    bp = bound_pass(path, acts.numpy(), labels.numpy(), feats, ablation, K, VALID, batch_size=4)
    tally, _ = evaluate_chunk(path, acts.numpy(), labels.numpy(), bp, feats, ablation, K, VALID, pair_batch=64)
    return tally, bp, path


def strongest_features(path, acts, ablation, n):
    rho = path.tier1(acts, ablation, torch.arange(acts.shape[1])).amax(0)
    return sorted(torch.argsort(rho, descending=True)[:n].tolist())


def test_supports_only_mixed5a_of_lucent_inception(perturbed):
    model = perturbed[0]
    assert supports_inception_mixed5a(model, "mixed5a", (7, 7))
    assert not supports_inception_mixed5a(model, "mixed4e", (7, 7))
    assert not supports_inception_mixed5a(torch.nn.Linear(2, 2), "mixed5a", (7, 7))


def test_separable_maxpool_equals_max_pool2d():
    from autointerp.importance.fastpaths.inceptionv1.path import _maxpool3

    x = torch.randn(3, 5, 7, 7, generator=torch.Generator().manual_seed(0))
    x[0, 0] = -1.0  # constant negative map: the -inf padding must never win
    ref = torch.nn.functional.max_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), value=float("-inf")), 3, 1)
    assert torch.equal(_maxpool3(x), ref)
    assert torch.equal(_maxpool3(x[0]), ref[0])


def test_reference_tail_matches_lucent_forward(perturbed):
    model, images, acts, _ = perturbed
    with torch.no_grad():
        probs = model(images * 255 - 117)
        z = reference_tail(model, acts)
    torch.testing.assert_close(torch.softmax(z, 1), probs, atol=1e-6, rtol=1e-4)


def test_rank1_path_equals_naive_on_perturbed_inceptionv1(perturbed):
    model, images, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    images, acts, labels = images[:2], acts[:2], labels[:2]
    feats = strongest_features(InceptionMixed5aPath(model), acts, ablation, 2) + [411]
    naive = naive_importance(hooked_forward_logits(model), model.mixed5a, images, labels, feats, ablation, K, VALID,
                             batch_size=2, cached=acts)  # fmt: skip
    tally, _, _ = fast_counts(model, acts, labels, feats, ablation)
    assert tally.correct_to_wrong.tolist() == naive.correct_to_wrong.tolist()
    assert tally.wrong_to_correct.tolist() == naive.wrong_to_correct.tolist()
    assert (naive.correct_to_wrong + naive.wrong_to_correct).sum() > 0  # planted boundary images do flip
    np.testing.assert_allclose(tally.mean_delta_logprob, naive.mean_delta_logprob, atol=1e-3)


def test_rank1_path_equals_naive_on_random_init_inceptionv1():
    from lucent.modelzoo.inceptionv1 import InceptionV1

    torch.manual_seed(0)
    model = InceptionV1(pretrained=False).eval()
    images, acts, labels = _setup(model, n=2, seed=1)
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), acts.mean(0).numpy(), "position", (832, 7, 7))
    feats = [3, 500, 831]
    naive = naive_importance(hooked_forward_logits(model), model.mixed5a, images, labels, feats, ablation, K, VALID,
                             batch_size=2, cached=acts)  # fmt: skip
    tally, _, _ = fast_counts(model, acts, labels, feats, ablation)
    assert tally.correct_to_wrong.tolist() == naive.correct_to_wrong.tolist()
    assert tally.wrong_to_correct.tolist() == naive.wrong_to_correct.tolist()


def test_skip_bounds_are_sound_on_perturbed_inceptionv1(perturbed):
    """Pairs skipped by the cheap bound, or decided by the finer one, never differ from an exact evaluation.

    Checks the skipped pairs closest to their bound (ρ/τ largest), where an unsound bound would show.
    """
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    path = InceptionMixed5aPath(model)
    feats = list(range(832))
    bp = bound_pass(path, acts.numpy(), labels.numpy(), feats, ablation, K, VALID, batch_size=3)
    assert 0.0 < bp.skipped_fraction < 1.0
    rho = path.tier1(acts, ablation, torch.arange(832))
    tau = boundary_radius(bp.logits, labels, path.W, K, VALID)
    ratio = (rho / tau[:, None]).masked_fill(bp.candidate, -1.0)
    pick = torch.argsort(ratio.flatten(), descending=True)[:48]
    b, c = pick // 832, pick % 832
    assert bool((~bp.candidate[b, c]).all())
    xa = acts[b].clone()
    xa[torch.arange(len(b)), c] = ablation.values[c]
    with torch.no_grad():
        after = topk_correct(reference_tail(model, xa), labels[b], K, VALID)
    assert torch.equal(after, bp.base_correct[b])
    # tier 2: pairs the finer bound decides agree with the exact evaluation
    state = path.prepare(acts)
    cand = torch.nonzero(bp.candidate)[::7][:80]
    res = path.evaluate(state, acts, bp.logits, labels, cand[:, 0], cand[:, 1], ablation, K, VALID)
    decided = torch.nonzero(res.bounded)[:, 0]
    assert len(decided) > 0
    bi, ci = cand[decided, 0], cand[decided, 1]
    xa = acts[bi].clone()
    xa[torch.arange(len(bi)), ci] = ablation.values[ci]
    with torch.no_grad():
        exact = topk_correct(reference_tail(model, xa), labels[bi], K, VALID)
    assert torch.equal(res.after_correct[decided], exact)


def test_compiled_core_gives_the_same_counts_as_eager(perturbed):
    """torch.compile of the elementwise core changes speed only: same tallies as eager PyTorch."""
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    feats = list(range(0, 832, 3))
    eager, bp, _ = fast_counts(model, acts, labels, feats, ablation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, _, path = fast_counts(model, acts, labels, feats, ablation, compile=True)
    if not path._core.is_compiled():
        skip_unless_available(f"torch.compile unavailable here: {[str(w.message) for w in caught]}")
    assert int(bp.candidate.sum()) > 0
    assert compiled.correct_to_wrong.tolist() == eager.correct_to_wrong.tolist()
    assert compiled.wrong_to_correct.tolist() == eager.wrong_to_correct.tolist()
    assert compiled.n_bounded.tolist() == eager.n_bounded.tolist()
    np.testing.assert_allclose(compiled.mean_delta_logprob, eager.mean_delta_logprob, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "tiers", "features"),
    [({"int8": True, "sparse": False, "lowrank": False}, ("int8",), range(1, 832, 2)),
     ({"int8": True, "sparse": False, "lowrank": True}, ("lowrank", "int8"), range(0, 832, 2)),
     ({"int8": False, "sparse": True}, ("lowrank", "sparse"), range(1, 832, 2)),
     ({"int8": False, "sparse": True, "lowrank": False}, ("sparse",), range(1, 832, 4)),
     ({"int8": True, "sparse": True, "lowrank": False}, ("int8", "sparse"), range(0, 832, 2))],
    ids=["int8", "lowrank+int8", "lowrank+sparse", "sparse", "int8+sparse"],
)  # fmt: skip
def test_tier_decides_pairs_exactly_as_the_float32_convolutions(perturbed, settings, tiers, features):
    """The int8 tier, the rank-one tier before the int8 or the sparse tier, the sparse exact tier, the int8
    tier then the sparse tier only change
    which pairs need float32 convolutions: same tallies without them, and every pair they decide
    agrees with the reference tail on the ablated activations."""
    from autointerp.importance.fastpaths.inceptionv1.quantized import int8_matmul_is_exact

    if settings["int8"] and not int8_matmul_is_exact():
        pytest.skip("torch._int_mm is missing or inexact here: the path runs without the int8 tier")
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    feats = list(features)
    with_tier, bp, path = fast_counts(model, acts, labels, feats, ablation, **settings)
    without, _, plain = fast_counts(model, acts, labels, feats, ablation, int8=False, sparse=False, lowrank=False)
    # the tiers asked for decide pairs, the others none
    for tier in ("lowrank", "int8", "sparse"):
        assert (path.pairs[tier] > 0) == (tier in tiers) and plain.pairs[tier] == 0
    assert plain.pairs["exact"] == sum(path.pairs[t] for t in tiers) + path.pairs["exact"]
    assert with_tier.correct_to_wrong.tolist() == without.correct_to_wrong.tolist()
    assert with_tier.wrong_to_correct.tolist() == without.wrong_to_correct.tolist()
    assert int((with_tier.correct_to_wrong + with_tier.wrong_to_correct).sum()) > 0
    # pair by pair: what the tier decided is what the reference tail computes
    state = path.prepare(acts)
    cand = torch.nonzero(bp.candidate)
    b, c = cand[:, 0], torch.as_tensor(feats)[cand[:, 1]]
    before = path.pairs[tiers[0]]
    res = path.evaluate(state, acts, bp.logits, labels, b, c, ablation, K, VALID)
    assert path.pairs[tiers[0]] > before
    xa = acts[b].clone()
    xa[torch.arange(len(b)), c] = ablation.values[c]
    with torch.no_grad():
        exact = topk_correct(reference_tail(model, xa), labels[b], K, VALID)
    assert torch.equal(res.after_correct, exact)


def test_bfloat16_products_give_the_same_counts_as_float32(perturbed, monkeypatch):
    """The int8 tier's classifier products in bfloat16 (with their wider bound) or float32: same tallies."""
    from autointerp.importance.fastpaths.inceptionv1 import products
    from autointerp.importance.fastpaths.inceptionv1.quantized import int8_matmul_is_exact

    if not (int8_matmul_is_exact() and products.bf16_matmul_is_accurate()):
        pytest.skip("int8 or bfloat16 products are inexact here: nothing to compare")
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    feats = list(range(0, 832, 3))
    # bfloat16 wherever accurate, even where it is not faster than float32 (as on AVX2-only CPUs)
    monkeypatch.setattr(products, "bf16_matmul_is_fast", lambda: products.bf16_matmul_is_accurate())
    low, _, path_low = fast_counts(model, acts, labels, feats, ablation)
    monkeypatch.setattr(products, "bf16_matmul_is_accurate", lambda: False)
    full, _, path_full = fast_counts(model, acts, labels, feats, ablation)
    assert path_low.lin_products["3"].bf16 and path_low.rem_products["5"].bf16
    assert not path_full.lin_products["3"].bf16 and path_full.lin_products["3"].rel == 1e-4
    assert path_low.pairs["int8"] > 0 and path_full.pairs["int8"] > 0
    # the exact tiers' products (sparse, rank-one) stay float32 with bfloat16 on: same changes,
    # and a bound about as tight (the remainder product only rounds up to bfloat16)
    lin = torch.randn(6, 384, generator=torch.Generator().manual_seed(1))
    w_t = path_low.w35[:6, :384]
    moved_low, rounding_low = path_low._change_products("3", lin, w_t)
    moved_full, rounding_full = path_full._change_products("3", lin, w_t)
    assert torch.equal(moved_low, moved_full)
    assert bool((rounding_low <= rounding_full * 1.05).all())
    assert low.correct_to_wrong.tolist() == full.correct_to_wrong.tolist()
    assert low.wrong_to_correct.tolist() == full.wrong_to_correct.tolist()


def _planted_margins(path, acts, labels, ablation):
    """40 pairs per image with margins planted just beside each pair's exact 3x3/5x5 logit change:
    ``(state, b, c, u, d, tol, k, truth)`` (``b`` / ``c`` the pairs' images and channels), ``truth``
    the exact outcome at those margins."""
    from autointerp.importance.topk import competitors, float_tolerance

    model = path.module
    state = path.prepare(acts)
    gen = torch.Generator().manual_seed(0)
    b = torch.arange(len(acts)).repeat_interleave(40)
    c = torch.randint(0, 832, (len(b),), generator=gen)
    u = path.rank1_update(state, acts, b, c, ablation)
    xa = acts[b].clone()
    xa[torch.arange(len(b)), c] = ablation.values[c]
    with torch.no_grad():
        z_after = reference_tail(model, xa).double()
        z = reference_tail(model, acts).double()[b]
    lab = labels[b]
    # the 1x1/pool branches' change (exact in the path) vs the 3x3/5x5 branches' (the tier's job)
    dh1p = torch.cat((u.h1 - state.h1[b], u.hp - state.hp[b]), 1).double()
    z_mid = z + dh1p @ path.W[:, path.cols1p].T.double()
    diff = lambda v: v.gather(1, lab[:, None]) - v  # noqa: E731 - d_j = z_t - z_j
    move = diff(z_after) - diff(z_mid)
    # float32 rounding between two computations of the logits (what the path allows for, too)
    tol = float_tolerance(z_mid, z_mid.gather(1, lab[:, None]))
    # 30 outputs per pair sit just beside the boundary: the exact change crosses or misses it by
    # 2-50 % of itself (plus twice the rounding allowance); the others are far away on either side
    sign = torch.randint(0, 2, move.shape, generator=gen).double() * 2 - 1
    near = torch.rand(move.shape, generator=gen).argsort(1) < 30
    gap = torch.empty(move.shape, dtype=torch.float64).uniform_(0.02, 0.5, generator=gen) * move.abs() + 2 * tol
    d = torch.where(near, -move + sign * gap, sign * (move.abs() * 100 + 1))
    others = competitors(lab, VALID, 1008)
    k = int((((d + move) < 0) & others).sum(1).median()) + 1  # the boundary sits among the planted ones
    truth = (((d + move) < 0) & others).sum(1) < k
    return state, b, c, u, d, tol, k, truth


def test_sparse_state_holds_the_networks_baseline_pre_activations(perturbed):
    """The 3x3 branch's baseline pre-activations the sparse tier starts from are the network's."""
    model, _, acts, labels = perturbed
    path = InceptionMixed5aPath(model, int8=False, sparse=True)
    state = path.prepare(acts)
    # its baseline pre-activations are the network's
    with torch.no_grad():
        b3 = torch.relu(path.module.mixed5b_3x3_bottleneck_pre_relu_conv(acts))
        r3 = torch.nn.functional.conv2d(b3, path.k3.weight, path.k3.bias, padding=1)
    assert torch.equal(state.r3, r3)


def test_sparse_tier_is_sound_and_decides_nearly_all_at_planted_margins(perturbed):
    """Margins planted 2-50 % of the exact change beside the boundary: the sparse tier computes that
    change up to (worst-case) rounding bounds, so it decides most of them even there, and every
    decision is the exact outcome; its pooled outputs are the network's convolutions'."""
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    path = InceptionMixed5aPath(model, int8=False, sparse=True)
    state, b, c, u, d, tol, k, truth = _planted_margins(path, acts, labels, ablation)
    op = OpenPairs(state, labels, u, torch.arange(len(b)), b, d, tol, k, VALID)
    decided, correct, logprob, evaluated = path._sparse_tier(op)
    assert float(decided.double().mean()) > 0.6
    assert torch.equal(evaluated, decided)  # without the 5x5 interval: both branches for every pair
    assert torch.equal(correct[decided], truth[decided])
    assert bool(logprob[~decided].isnan().all())  # undecided pairs report no log-probability
    after3, after5 = path._bottlenecks_after(state, acts, b, c, u.target)
    q3, q5 = path._branches_3x3_5x5(after3, after5)
    # at the real margins (after the 1x1/pool branches' change), the true-class log-probabilities it
    # reports are the network's after the ablation
    with torch.no_grad():
        z_after = path.fc(torch.cat((u.h1, q3, q5, u.hp), 1)).double()
        dh1p = torch.cat((u.h1 - state.h1[b], u.hp - state.hp[b]), 1).double()
        z_mid = reference_tail(model, acts).double()[b] + dh1p @ path.W[:, path.cols1p].T.double()
    d_real = z_mid.gather(1, labels[b][:, None]) - z_mid
    decided, _, logprob, _ = path._sparse_tier(replace(op, d=d_real))
    assert float(decided.double().mean()) > 0.9
    reference = true_logprob(z_after, labels[b], VALID)
    torch.testing.assert_close(logprob[decided], reference[decided], rtol=0, atol=1e-5)
    # per branch, per pair: the pooled outputs after the ablation are the float32 convolutions'
    w3b, w5b = path._bottleneck_columns(state, b, c)
    for i in range(0, len(b), 40):  # one image's pairs
        rows = slice(i, i + 40)
        img = int(b[i])
        got3 = path.s3.change(state.r3[img], state.p3[img], state.order3[img], w3b[rows], u.delta[rows])
        got5 = path.s5.change(state.r5[img], state.p5[img], state.order5[img], w5b[rows], u.delta[rows])
        torch.testing.assert_close(got3.pooled, q3[rows], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got5.pooled, q5[rows], rtol=1e-4, atol=1e-4)
        assert got3.support < 0.5 * 49 * 9 * 192  # reads a fraction of what a convolution reads


def _rank_one_tier_at_planted_margins(perturbed):
    """The rank-one tier (sparse tier after it) on :func:`_planted_margins`' pairs: ``(path, acts, labels,
    b, c, u, truth, op, (decided, correct, interval5))``."""
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    path = InceptionMixed5aPath(model, int8=False, sparse=True, lowrank=True)
    state, b, c, u, d, tol, k, truth = _planted_margins(path, acts, labels, ablation)
    op = OpenPairs(state, labels, u, torch.arange(len(b)), b, d, tol, k, VALID)
    return path, acts, labels, b, c, u, truth, op, path._lowrank_tier(op)


def test_rank_one_tier_is_sound_at_planted_margins_and_runs_the_5x5_branch_only_where_needed(perturbed):
    """The rank-one tier decides pairs with the 3x3 branch's rank-one change and the 5x5 branch's tier-2
    radius first, and computes the 5x5 branch only for the pairs that leaves open: every decision at
    planted margins is the exact outcome, some pairs never need the 5x5 branch, and the 5x5 interval
    it hands on covers the 5x5 branch's exact change for each pair left open, in order."""
    path, acts, labels, b, c, u, truth, op, (decided, correct, interval5) = _rank_one_tier_at_planted_margins(perturbed)
    state = op.state
    assert 0 < int(decided.sum()) < len(b)
    assert torch.equal(correct[decided], truth[decided])
    assert 0 < path.pairs["lowrank_with_5x5"] < len(b)
    assert interval5 is not None and len(interval5[0]) == int((~decided).sum())
    # the 5x5 branch's exact change of every d_j lies in the interval handed on
    rest = torch.nonzero(~decided)[:, 0]
    after3, after5 = path._bottlenecks_after(state, acts, b[rest], c[rest], u.target[rest])
    q3, q5 = path._branches_3x3_5x5(after3, after5)
    w5 = path.W[:, 768:896].double()
    move5 = (q5.double() - torch.relu(state.r5).mean((2, 3)).double()[b[rest]]) @ w5.T
    move5 = move5.gather(1, labels[b[rest]][:, None]) - move5
    moved, slack, lo, hi = interval5
    assert bool(((move5 - moved).abs() <= slack + 1e-6 * move5.abs().amax(1, keepdim=True)).all())
    # and every d_j after the ablation (both branches' exact change) lies in [lo, hi]
    w3 = path.W[:, 384:768].double()
    move3 = (q3.double() - torch.relu(state.r3).mean((2, 3)).double()[b[rest]]) @ w3.T
    move3 = move3.gather(1, labels[b[rest]][:, None]) - move3
    after = op.d[rest] + move3 + move5
    scale = 1e-6 * (move3.abs() + move5.abs()).amax(1, keepdim=True)
    assert bool(((lo <= after + scale) & (after - scale <= hi)).all())
    assert float((hi - lo).median()) < float((op.d[rest].abs()).median())  # not vacuous


def test_staged_sparse_tier_decides_most_pairs_with_the_3x3_branch_alone(perturbed):
    """After the rank-one tier, the sparse tier computes the 3x3 branch first and takes the 5x5 branch's
    change from the rank-one interval; only pairs that leave open get the 5x5 branch too. At planted
    margins every decision is the exact outcome, pairs decided without the 5x5 branch are reported as
    bounded (no log-probability), and the others' log-probabilities are those of both branches."""
    path, _, _, _, _, _, truth, op, (decided_lr, _, interval5) = _rank_one_tier_at_planted_margins(perturbed)
    assert interval5 is not None
    rest = torch.nonzero(~decided_lr)[:, 0]
    sub = op.subset(rest)
    decided, correct, logprob, evaluated = path._sparse_tier(sub, interval5)
    assert torch.equal(correct[decided], truth[rest][decided])
    alone = decided & ~evaluated  # decided by the 3x3 branch with the 5x5 interval
    assert 0 < int(alone.sum()) < len(rest)
    assert path.pairs["sparse_with_5x5"] == len(rest) - int(alone.sum())
    assert bool(logprob[~evaluated].isnan().all()) and not bool(logprob[evaluated].isnan().any())
    # the pairs given both branches get the same decisions and log-probabilities as without staging
    decided_all, correct_all, logprob_all, _ = path._sparse_tier(sub)
    assert torch.equal(decided[evaluated], decided_all[evaluated])
    assert torch.equal(correct[decided & decided_all], correct_all[decided & decided_all])
    torch.testing.assert_close(logprob[evaluated], logprob_all[evaluated], rtol=0, atol=1e-6)  # other batches


def test_int8_tier_is_sound_at_planted_margins(perturbed):
    """Margins planted just beside each pair's exact 3x3/5x5 logit change: whatever the int8 tier
    decides must match the exact outcome, so its error bounds (not luck) carry the decisions."""
    from autointerp.importance.fastpaths.inceptionv1.quantized import int8_matmul_is_exact

    if not int8_matmul_is_exact():
        pytest.skip("torch._int_mm is missing or inexact here: the path runs without the int8 tier")
    model, _, acts, labels = perturbed
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    path = InceptionMixed5aPath(model, int8=True)  # even where int8 products are slow: soundness holds anywhere
    state, b, c, u, d, tol, k, truth = _planted_margins(path, acts, labels, ablation)
    decided, correct = path._int8_tier(OpenPairs(state, labels, u, torch.arange(len(b)), b, d, tol, k, VALID))
    assert 0 < int(decided.sum()) < len(b)
    # its stored |r| is a lower bound (bfloat16 rounded down) and its mask is r > 0
    # p3 is stored channels last, each image's channels reordered: those positive somewhere first
    order = state.order3[:, None, None, :].expand_as(state.p3)
    p3 = torch.empty_like(state.p3).scatter_(3, order, state.p3)  # back in the network's channel order
    with torch.no_grad():
        p3_ref = path.module.mixed5b_3x3_bottleneck_pre_relu_conv(acts).permute(0, 2, 3, 1)
    assert torch.equal(p3, p3_ref)
    live = (state.p3 > 0).flatten(1, 2).any(1)  # (B, C) in the stored order
    assert torch.equal(live.sum(1), state.live3) and 0 < int(state.live3.min()) and int(state.live3.max()) < 192
    assert all(bool(row[:n].all()) for row, n in zip(live, state.live3.tolist(), strict=True))
    with torch.no_grad():
        b3 = torch.relu(p3.permute(0, 3, 1, 2).contiguous())  # NCHW as prepare convolves
        r3 = torch.nn.functional.conv2d(b3, path.k3.weight, path.k3.bias, padding=1)
    r3 = r3.flatten(2)[:, :, path.q3.positions].transpose(1, 2)  # in the tier's position order
    assert bool((state.abs3.float() <= r3.abs()).all()) and torch.equal(state.mask3, (r3 > 0).to(torch.uint8))
    assert float((state.abs3.float() / r3.abs().clamp_min(1e-30)).min()) > 0.98
    # the per-image norms ||(W_t - W_j) ⊙ [r > 0]|| it uses, against the direct sum
    vm3, _ = path._active_norms(state, labels)
    w3 = path.W[:, 384:768].double()
    direct = torch.stack([((w3[t] - w3) ** 2) @ state.mask3[i].sum(0).double() for i, t in enumerate(labels.tolist())])
    assert bool((vm3 >= direct.sqrt()).all())
    torch.testing.assert_close(vm3, direct.sqrt(), rtol=2e-3, atol=1e-5)  # atol: the cancellation guard
    assert torch.equal(correct[decided], truth[decided])


def test_one_path_serves_several_ablations(perturbed):
    """Per-ablation caches inside the path never leak from one ablation into the next."""
    model, _, acts, labels = perturbed
    by_channel = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (832, 7, 7))
    by_position = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), acts.mean(0).numpy(), "position", (832, 7, 7))
    feats = list(range(0, 832, 5))

    def tallies(path, ablation):
        bp = bound_pass(path, acts.numpy(), labels.numpy(), feats, ablation, K, VALID, batch_size=3, use_bound=False)
        tally, _ = evaluate_chunk(path, acts.numpy(), labels.numpy(), bp, feats, ablation, K, VALID, pair_batch=256)
        return tally.correct_to_wrong.tolist(), tally.wrong_to_correct.tolist(), tally.mean_delta_logprob.tolist()

    shared = InceptionMixed5aPath(model)
    results = [tallies(shared, a) for a in (by_channel, by_position, by_channel)]
    assert results[0] == results[2] == tallies(InceptionMixed5aPath(model), by_channel)
    assert results[1] == tallies(InceptionMixed5aPath(model), by_position)
    assert results[0] != results[1]


def test_bound_pass_logits_from_the_gradient_pass_equal_the_reference(perturbed):
    """The bound pass takes the baseline logits from the forward pass of its gradient: they must be
    the no-grad reference tail's, bit for bit (they decide each image's baseline correctness)."""
    model, _, acts, labels = perturbed
    path = InceptionMixed5aPath(model)
    z, grad = path.logits_and_grad(acts, labels, VALID)
    with torch.no_grad():
        assert torch.equal(z, reference_tail(model, acts).float())
    assert grad.shape == acts.shape and float(grad.abs().sum()) > 0
    assert not z.requires_grad
