"""Importance reliability: bootstrap intervals per feature, split-half reliability across features, the
files the stage writes from its saved units, and the reader. Planted cases with known answers; every
statistic is checked against a direct numpy/scipy computation, not the code's own output."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from autointerp.analysis.reliability import (
    ImportanceReliability,
    attenuation_corrected,
    read_importance_reliability,
)
from autointerp.config import config_from_dict
from autointerp.errors import DataError
from autointerp.importance.reliability import (
    MEASURES,
    Units,
    bootstrap,
    half_correlations,
    load_units,
    spearman_brown,
    split_half,
)
from autointerp.models.generic import ModuleAdapter
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations
from autointerp.stages.importance import run_importance


def image_units(flip: np.ndarray, dlp: np.ndarray, features: np.ndarray | None = None) -> Units:
    """Per-image units from per-image flips and Δ log-probabilities (N, F)."""
    n, f = flip.shape
    feats = np.arange(f) if features is None else features
    sums = {"importance": flip.astype(np.float64), "mean_delta_logprob_true": dlp.astype(np.float64)}
    point = {"importance": flip.sum(0).astype(np.float64), "mean_delta_logprob_true": dlp.mean(0)}
    return Units("images", feats, np.ones(n, np.int64), sums, point)


def draw_flips(rng: np.random.Generator, n: int, p_c2w: np.ndarray, p_w2c: np.ndarray) -> np.ndarray:
    """(n, F) flips: +1 with probability p_c2w, -1 with p_w2c, else 0 (per feature)."""
    u = rng.random((n, len(p_c2w)))
    return (u < p_c2w).astype(np.int8) - ((u >= p_c2w) & (u < p_c2w + p_w2c)).astype(np.int8)


# ---------------------------------------------------------------------------------------- formulas


def test_spearman_brown_matches_the_formula_and_a_doubled_test():
    for r in (-0.5, 0.0, 0.25, 0.5, 0.9, 1.0):
        assert spearman_brown(r) == pytest.approx(2 * r / (1 + r))
    assert spearman_brown(-1.0) is None and spearman_brown(float("nan")) is None
    # the formula's meaning, simulated directly: the correlation between two independent full samples of
    # the measure equals the stepped-up correlation between two half samples
    rng = np.random.default_rng(0)
    f, n, noise = 4000, 40, 3.0
    truth = rng.normal(size=f)
    half = [truth + rng.normal(scale=noise, size=(n // 2, f)).mean(0) for _ in range(2)]
    full = [truth + rng.normal(scale=noise, size=(n, f)).mean(0) for _ in range(2)]
    r_half = np.corrcoef(half[0], half[1])[0, 1]
    r_full = np.corrcoef(full[0], full[1])[0, 1]
    assert 0.3 < r_half < 0.8  # a regime where the step-up matters
    assert spearman_brown(r_half) == pytest.approx(r_full, abs=0.03)


def test_attenuation_correction():
    assert attenuation_corrected(0.3, 0.36) == pytest.approx(0.3 / 0.6)
    assert attenuation_corrected(0.4, 0.64, 0.25) == pytest.approx(0.4 / math.sqrt(0.64 * 0.25))
    assert attenuation_corrected(0.9, 0.5) == pytest.approx(0.9 / math.sqrt(0.5))  # > 1: not clipped
    for bad in ((0.3, 0.0), (0.3, -0.2), (0.3, None), (0.3, float("nan")), (None, 0.5), (0.3, 0.5, 0.0)):
        assert attenuation_corrected(*bad) is None


# ---------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("unit", ["images", "segments"])
def test_bootstrap_interval_covers_the_true_effect_about_95_percent(unit):
    """Planted per-image outcomes with known expectations: over repeated samples, each feature's 95 %
    interval covers E[importance] = N (p_c2w - p_w2c) and E[Δlog p] about 95 % of the time."""
    rng = np.random.default_rng(1)
    n, repeats = 240, 250
    p_c2w = np.array([0.02, 0.05, 0.10, 0.20, 0.30])
    p_w2c = np.array([0.01, 0.05, 0.02, 0.05, 0.10])
    mu = np.array([-0.5, 0.0, 0.1, -0.2, -1.0])
    covered = {m: [] for m in MEASURES}
    ratio = []
    for _ in range(repeats):
        flip = draw_flips(rng, n, p_c2w, p_w2c)
        dlp = mu + rng.standard_t(df=5, size=(n, len(mu)))  # heavy-ish tails, mean mu
        units = image_units(flip, dlp)
        if unit == "segments":  # 40 segments of 6 images: sums, as the stage saves them
            seg = lambda a: a.reshape(40, 6, -1).sum(1)  # noqa: E731
            units = Units("segments", units.features, np.full(40, 6), {m: seg(units.sums[m]) for m in MEASURES},
                          units.point)  # fmt: skip
        res = bootstrap(units, 400, rng)
        truth = {"importance": n * (p_c2w - p_w2c), "mean_delta_logprob_true": mu}
        for m in MEASURES:
            covered[m].append((res[m]["ci_low"] <= truth[m]) & (truth[m] <= res[m]["ci_high"]))
        # the bootstrap standard error against the textbook one: sqrt(N var(flip)) and sd(dlp)/sqrt(N)
        ratio.append(res["importance"]["se"] / np.sqrt(n * flip.var(axis=0, ddof=1)))
        ratio.append(res["mean_delta_logprob_true"]["se"] / (dlp.std(axis=0, ddof=1) / np.sqrt(n)))
    # the percentile bootstrap over 40 segments undercovers a little (about 0.935 in 600 repeats)
    low = 0.90 if unit == "images" else 0.89
    for m in MEASURES:
        rate = np.mean(covered[m])
        assert low <= rate <= 0.985, (m, rate)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.06 if unit == "images" else 0.1)


def test_bootstrap_of_the_full_sample_estimate_and_degenerate_cases():
    rng = np.random.default_rng(2)
    flip = draw_flips(rng, 50, np.full(4, 0.2), np.full(4, 0.1))
    units = image_units(flip, rng.normal(size=(50, 4)))
    res = bootstrap(units, 300, rng)
    np.testing.assert_array_equal(res["importance"]["estimate"], flip.sum(0))
    assert (res["importance"]["ci_low"] <= res["importance"]["estimate"]).all()
    assert (res["importance"]["estimate"] <= res["importance"]["ci_high"]).all()
    one = image_units(flip[:1], rng.normal(size=(1, 4)))
    assert np.isnan(bootstrap(one, 300, rng)["importance"]["ci_low"]).all()


def test_a_single_segment_gives_files_that_say_undefined(tmp_path):
    """One saved segment (e.g. fewer images than importance.segment_images on the InceptionV1 path): the
    files are written, with empty intervals and null reliabilities that say why."""
    from autointerp.importance.reliability import write_reliability

    sums = {"importance": np.array([[3.0, 0.0, 1.0, 2.0]]), "mean_delta_logprob_true": np.array([[-2.0, 0, 1, 0]])}
    point = {"importance": sums["importance"][0], "mean_delta_logprob_true": sums["mean_delta_logprob_true"][0] / 40}
    info = write_reliability(tmp_path, Units("segments", np.arange(4), np.array([40]), sums, point), 100, 0)
    assert info["warning"].startswith("few units (1 segments)")
    rel = read_importance_reliability(tmp_path)
    assert (rel.method, rel.n_units, rel.n_images) == ("segments", 1, 40)
    for m in MEASURES:
        assert rel.measures[m]["split_half_spearman_brown"] is None and "at least 2" in rel.measures[m]["reason"]
        assert np.isnan(rel.per_feature[f"{m}_ci_low"]).all() and np.isnan(rel.per_feature[f"{m}_se"]).all()
    np.testing.assert_array_equal(rel.per_feature["importance"], [3, 0, 1, 2])
    np.testing.assert_allclose(rel.per_feature["mean_delta_logprob_true"], [-0.05, 0, 0.025, 0])


def test_segment_estimates_are_ratios_over_unequal_segments():
    """Resampling segments of unequal size: importance = N * (sum of flips drawn) / (images drawn)."""
    rng = np.random.default_rng(3)
    flip = draw_flips(rng, 25, np.full(3, 0.3), np.full(3, 0.1)).astype(np.float64)
    bounds = [(0, 10), (10, 20), (20, 25)]
    units = Units("segments", np.arange(3), np.array([10, 10, 5]),
                  {"importance": np.stack([flip[s:e].sum(0) for s, e in bounds]),
                   "mean_delta_logprob_true": np.stack([flip[s:e].sum(0) * 0.5 for s, e in bounds])},
                  {"importance": flip.sum(0), "mean_delta_logprob_true": flip.mean(0) * 0.5})  # fmt: skip
    weights = np.array([[0.0, 1.0, 2.0]])  # segment 1 once, segment 2 twice: 20 images
    got = units.estimates(weights)
    drawn = flip[10:20].sum(0) + 2 * flip[20:25].sum(0)
    np.testing.assert_allclose(got["importance"][0], 25 * drawn / 20)
    np.testing.assert_allclose(got["mean_delta_logprob_true"][0], 0.5 * drawn / 20)


# -------------------------------------------------------------------------------------- split-half


def test_half_correlations_match_scipy():
    rng = np.random.default_rng(4)
    flip = draw_flips(rng, 60, rng.uniform(0, 0.3, 15), rng.uniform(0, 0.1, 15))
    dlp = rng.normal(size=(60, 15)) + np.linspace(-1, 1, 15)
    units = image_units(flip, dlp)
    halves = np.zeros((3, 60))
    for i in range(3):
        halves[i, rng.permutation(60)[:30]] = 1
    got = half_correlations(units, halves)
    for i in range(3):
        a, b = halves[i] == 1, halves[i] == 0
        for m, x in (("importance", flip), ("mean_delta_logprob_true", dlp)):
            assert got[m]["spearman"][i] == pytest.approx(stats.spearmanr(x[a].sum(0), x[b].sum(0))[0])
            assert got[m]["pearson"][i] == pytest.approx(stats.pearsonr(x[a].mean(0), x[b].mean(0))[0])


def test_odd_even_split_matches_a_direct_computation():
    rng = np.random.default_rng(5)
    flip = draw_flips(rng, 81, rng.uniform(0, 0.4, 20), rng.uniform(0, 0.1, 20))
    dlp = rng.normal(size=(81, 20)) + np.linspace(-1, 1, 20)
    res = split_half(image_units(flip, dlp), 20, rng)
    for m, x in (("importance", flip), ("mean_delta_logprob_true", dlp)):
        even, odd = x[0::2], x[1::2]  # 41 and 40 images: the measure per image count of each half
        rho = stats.spearmanr(even.mean(0), odd.mean(0))[0]
        r = stats.pearsonr(even.mean(0), odd.mean(0))[0]
        assert res[m]["odd_even_raw"] == pytest.approx(rho, abs=1e-5)
        assert res[m]["odd_even"] == pytest.approx(2 * rho / (1 + rho), abs=1e-5)
        assert res[m]["pearson_odd_even"] == pytest.approx(2 * r / (1 + r), abs=1e-5)


def test_split_half_is_near_one_for_distinct_effects_and_near_zero_for_noise():
    rng = np.random.default_rng(6)
    n, f = 400, 40
    strong = draw_flips(rng, n, np.linspace(0.0, 0.5, f), np.full(f, 0.02))
    strong_dlp = np.linspace(-2, 0, f) + 0.5 * rng.normal(size=(n, f))
    res = split_half(image_units(strong, strong_dlp), 100, rng)
    for m in MEASURES:
        assert res[m]["split_half_spearman_brown"] > 0.97, res[m]
        assert res[m]["pearson_split_half_spearman_brown"] > 0.97
        assert res[m]["n_splits"] == res[m]["n_splits_defined"] == 100
    # pure noise: every feature has the same expected effect
    noise = draw_flips(rng, n, np.full(200, 0.1), np.full(200, 0.1))
    noise_dlp = rng.normal(size=(n, 200))
    res = split_half(image_units(noise, noise_dlp), 100, rng)
    for m in MEASURES:
        assert abs(res[m]["split_half_raw"]) < 0.05, res[m]
        assert abs(res[m]["split_half_spearman_brown"]) < 0.1
    # the mean over random splits against a direct loop with scipy
    units = image_units(strong[:60, :12], strong_dlp[:60, :12])
    res = split_half(units, 30, np.random.default_rng(7))
    again = np.random.default_rng(7)
    rhos = []
    for _ in range(30):
        a = np.zeros(60, bool)
        a[again.permutation(60)[:30]] = True
        rhos.append(stats.spearmanr(strong[:60, :12][a].sum(0), strong[:60, :12][~a].sum(0))[0])
    assert res["importance"]["split_half_raw"] == pytest.approx(np.mean(rhos), abs=1e-5)
    assert res["importance"]["split_half_spearman_brown"] == pytest.approx(spearman_brown(np.mean(rhos)), abs=1e-5)


def test_split_half_undefined_cases_say_why():
    rng = np.random.default_rng(8)
    zero = image_units(np.zeros((30, 5), np.int8), rng.normal(size=(30, 5)))
    res = split_half(zero, 10, rng)
    assert res["importance"]["split_half_spearman_brown"] is None and "constant" in res["importance"]["reason"]
    assert res["mean_delta_logprob_true"]["split_half_spearman_brown"] is not None
    assert "reason" not in res["mean_delta_logprob_true"]
    one = split_half(image_units(np.ones((1, 5), np.int8), np.zeros((1, 5))), 10, rng)
    assert one["importance"]["split_half_raw"] is None and "at least 2" in one["importance"]["reason"]
    two = split_half(image_units(np.ones((30, 2), np.int8), np.zeros((30, 2))), 10, rng)
    assert "at least 3" in two["importance"]["reason"]


# ------------------------------------------------------------------------------ the engine's outcomes


def test_engine_per_image_outcomes_on_a_nonlinear_tail_match_direct_ablation():
    """The generic tail path (bound-skipped and evaluated pairs): each pair's flip equals a direct forward
    pass of the ablated activations, and asking for outcomes leaves the tallies as they were."""
    from autointerp.importance.ablation import Ablation
    from autointerp.importance.engine import evaluate_segment
    from autointerp.importance.paths import TailPath
    from autointerp.importance.topk import topk_correct

    gen = torch.Generator().manual_seed(1)
    tail = nn.Sequential(nn.ReLU(), nn.Conv2d(6, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5)).eval()  # fmt: skip
    with torch.no_grad():
        for p in tail.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    acts = torch.randn(64, 6, 4, 4, generator=gen)
    with torch.no_grad():
        z = tail(acts)
    labels = torch.where(torch.rand(64, generator=gen) < 0.7, z.argmax(1), torch.randint(0, 5, (64,), generator=gen))
    valid = torch.ones(5, dtype=torch.bool)
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", (6, 4, 4))
    path = TailPath(tail, example=acts[:1])
    feats = list(range(6))
    plain, _ = evaluate_segment(path, acts.numpy(), labels.numpy(), feats, ablation, 1, valid, batch_size=16)
    tally, stats = evaluate_segment(
        path, acts.numpy(), labels.numpy(), feats, ablation, 1, valid, batch_size=16, per_image=True
    )
    out = stats["outcomes"]
    for name in tally.SUMS:
        np.testing.assert_array_equal(getattr(tally, name), getattr(plain, name))
    base = topk_correct(z, labels, 1, valid).numpy()
    want = np.zeros((64, 6), np.int64)
    for f in feats:
        with torch.no_grad():
            after = topk_correct(tail(ablation.apply(acts, f)), labels, 1, valid).numpy()
        want[:, f] = (base & ~after).astype(int) - (~base & after).astype(int)
    assert np.abs(want).sum() > 10
    np.testing.assert_array_equal(out.flip, want)
    np.testing.assert_array_equal(out.flip.sum(0), tally.importance)
    assert tally.n_skipped.sum() > 0 and tally.n_exact.sum() > 0  # both kinds of pair
    np.testing.assert_allclose(out.delta_logprob.sum(0, dtype=np.float64), tally.sum_delta_logprob, rtol=1e-5)


# --------------------------------------------------------------------------- the stage on a planted run

N_IMAGES, N_FEATURES, N_CLASSES, SIZE = 120, 12, 6, 8


def planted_module() -> nn.Module:
    """1x1 conv (features) -> ReLU -> global pool -> linear; the classifier reads feature c with weight
    scale linspace(0.1, 4)[c], so features have distinct, planted effects."""
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, N_FEATURES, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(N_FEATURES, N_CLASSES)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        model[4].weight.mul_(torch.linspace(0.1, 4.0, N_FEATURES))
    return model.eval()


def _write_images(path: Path, labels: np.ndarray) -> None:
    rng = np.random.default_rng(9)
    colour = rng.integers(0, 256, size=(N_IMAGES, 3, 1, 1))
    images = np.clip(colour + rng.normal(scale=30, size=(N_IMAGES, 3, SIZE, SIZE)), 0, 255).astype(np.uint8)
    np.savez(path, data=images.reshape(N_IMAGES, -1), labels=labels)


def planted_context(root: Path, data: Path, **importance: object) -> RunContext:
    cfg = config_from_dict({
        "seed": 3, "model": {"name": "module"}, "layer": "1", "device": "cpu",
        "dataset": {"type": "npz", "path": str(data), "image_size": SIZE},
        "label_mapping": {"type": "identity"},
        "activations": {"batch_size": 40, "top_k": 3},
        "importance": {"k": 1, "chunk_size": 5, "segment_images": 50, "batch_size": 40, "reliability_boot": 300,
                       **importance},
    })  # fmt: skip
    ctx = RunContext.create(cfg, root)
    ctx.__dict__["model"] = ModuleAdapter(planted_module(), input_size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3)
    return ctx


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> RunContext:
    """A run whose labels are the planted model's top-1 for 3 images in 4 (the rest random)."""
    tmp = tmp_path_factory.mktemp("reliability")
    data = tmp / "data.npz"
    _write_images(data, np.zeros(N_IMAGES, np.int64))
    probe = planted_context(tmp / "probe", data)
    with torch.no_grad():
        top1 = probe.model.forward(probe.dataset.batch(range(N_IMAGES), SIZE)).argmax(1).numpy()
    rng = np.random.default_rng(10)
    labels = np.where(rng.random(N_IMAGES) < 0.75, top1, rng.integers(0, N_CLASSES, N_IMAGES))
    _write_images(data, labels)
    ctx = planted_context(tmp / "run", data)
    run_activations(ctx)
    run_importance(ctx)
    return ctx


def reference_outcomes(ctx: RunContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image flips, exact Δ log p of the true class and its first-order estimate (N, F), by numpy from
    the cache and the planted linear head."""
    acts = np.load(ctx.paths.activations / "acts.npy").astype(np.float64)
    labels = np.load(ctx.paths.activations / "labels.npy")
    mean = np.load(ctx.paths.activations / "mean.npy").astype(np.float64)
    fc = ctx.model.module[4]
    w, b = fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy()
    rows = np.arange(len(labels))

    def outcome(pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        z = pooled @ w.T + b
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return z.argmax(1) == labels, logp[rows, labels], np.exp(logp)

    pooled = acts.mean((2, 3))
    base_ok, base_lp, prob = outcome(pooled)
    grad = w[labels] - prob @ w  # d log p_true / d pooled
    flips, dlp = np.zeros(pooled.shape, np.int64), np.zeros(pooled.shape)
    for f in range(pooled.shape[1]):
        ablated = pooled.copy()
        ablated[:, f] = mean[f]
        ok, lp, _ = outcome(ablated)
        flips[:, f] = (base_ok & ~ok).astype(int) - (~base_ok & ok).astype(int)
        dlp[:, f] = lp - base_lp
    return flips, dlp, grad * (mean[None] - pooled)


def test_stage_saves_per_image_outcomes_that_match_a_direct_computation(planted_run):
    ctx = planted_run
    flips, dlp, first_order = reference_outcomes(ctx)
    assert np.abs(flips).sum() > 50  # the planted effects flip many images
    units = load_units(ctx.paths.importance / "chunks" / "exact", list(range(N_FEATURES)))
    assert units.method == "images" and units.n_units == N_IMAGES
    np.testing.assert_array_equal(units.sums["importance"], flips)
    # each pair's change: exact where the pair was evaluated, first-order where a bound decided it
    saved = units.sums["mean_delta_logprob_true"]
    exact = np.abs(saved - dlp) < 1e-4
    assert (exact | (np.abs(saved - first_order) < 1e-4)).all()
    assert exact[flips != 0].all() and 0 < exact.sum() < exact.size
    table = np.genfromtxt(ctx.paths.importance_csv, delimiter=",", names=True, dtype=None, encoding="utf-8")
    np.testing.assert_allclose(saved.mean(0), table["mean_delta_logprob_true"], rtol=1e-5, atol=1e-7)


def test_stage_writes_bootstrap_and_reliability(planted_run):
    ctx = planted_run
    rel = read_importance_reliability(ctx.paths.importance)
    assert isinstance(rel, ImportanceReliability)
    assert (rel.method, rel.n_images, rel.n_units, rel.n_boot, rel.seed) == ("images", N_IMAGES, N_IMAGES, 300, 3)
    flips, _, _ = reference_outcomes(ctx)
    table = np.genfromtxt(ctx.paths.importance_csv, delimiter=",", names=True, dtype=None, encoding="utf-8")
    np.testing.assert_array_equal(rel.feature_ind, table["feature_ind"])
    np.testing.assert_array_equal(rel.per_feature["importance"], table["importance"])
    np.testing.assert_array_equal(rel.per_feature["importance"], flips.sum(0))
    np.testing.assert_allclose(rel.per_feature["mean_delta_logprob_true"], table["mean_delta_logprob_true"])
    low, high = rel.per_feature["importance_ci_low"], rel.per_feature["importance_ci_high"]
    assert (low <= rel.per_feature["importance"]).all() and (rel.per_feature["importance"] <= high).all()
    se = rel.per_feature["importance_se"]
    np.testing.assert_allclose(se, np.sqrt(N_IMAGES * flips.var(0, ddof=1)), rtol=0.2, atol=0.3)
    # planted distinct effects: both measures rank the features reproducibly
    for m in MEASURES:
        assert rel.measures[m]["split_half_spearman_brown"] > 0.7, rel.measures[m]
    # the odd/even split by scipy from the reference outcomes
    rho = stats.spearmanr(flips[0::2].mean(0), flips[1::2].mean(0))[0]
    assert rel.measures["importance"]["odd_even"] == pytest.approx(2 * rho / (1 + rho), abs=1e-5)


def test_skipped_stage_fills_in_missing_files_and_reports_none_without_units(planted_run, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(planted_run.root, root)
    ctx = RunContext.open(root)
    ctx.__dict__["model"] = planted_run.model
    folder = ctx.paths.importance
    table = folder / "importance.csv"
    before = {p: (folder / p).read_bytes() for p in ("importance.csv", "reliability.json", "bootstrap.csv")}
    mtime = table.stat().st_mtime_ns
    (folder / "reliability.json").unlink()
    (folder / "bootstrap.csv").unlink()
    run_importance(ctx)  # skipped: the table exists; the reliability files come from the saved units
    assert table.stat().st_mtime_ns == mtime
    for name, data in before.items():
        assert (folder / name).read_bytes() == data, name
    # another bootstrap count in the config: recomputed from the units, table untouched
    ctx.config.importance.reliability_boot = 50
    run_importance(ctx)
    assert json.loads((folder / "reliability.json").read_text())["n_boot"] == 50
    assert table.read_bytes() == before["importance.csv"]
    # units gone: nothing is written, readers get None
    shutil.rmtree(folder / "chunks")
    (folder / "reliability.json").unlink()
    (folder / "bootstrap.csv").unlink()
    run_importance(ctx)
    assert read_importance_reliability(folder) is None
    assert not (folder / "bootstrap.csv").exists()


def test_units_without_per_image_outcomes_fall_back_to_segments(planted_run, tmp_path):
    """Units that keep sums only (as the InceptionV1 path's): the estimates are over segments."""
    root = tmp_path / "copy"
    shutil.copytree(planted_run.root, root)
    ctx = RunContext.open(root)
    ctx.__dict__["model"] = planted_run.model
    for path in (ctx.paths.importance / "chunks" / "exact").glob("chunk_*.npz"):
        with np.load(path) as data:
            kept = {k: data[k] for k in data.files if not k.startswith("image_")}
        np.savez(path, **kept)
    (ctx.paths.importance / "reliability.json").unlink()
    run_importance(ctx)
    rel = read_importance_reliability(ctx.paths.importance)
    assert (rel.method, rel.n_units, rel.n_images) == ("segments", 3, N_IMAGES)  # 50 + 50 + 20 images
    assert "warning" in rel.extra
    flips, _, _ = reference_outcomes(ctx)
    np.testing.assert_array_equal(rel.per_feature["importance"], flips.sum(0))
    odd_even = stats.spearmanr(flips[:50].sum(0) + flips[100:].sum(0), flips[50:100].sum(0))[0]  # segments 0+2 vs 1
    assert rel.measures["importance"]["odd_even_raw"] == pytest.approx(odd_even, abs=1e-5)


def test_units_of_another_run_are_not_used(planted_run, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(planted_run.root, root)
    csv_path = root / "importance" / "importance_exact.csv"
    lines = csv_path.read_text().splitlines()
    head = lines[0].split(",")
    row = lines[1].split(",")
    row[head.index("correct_to_wrong")] = str(int(row[head.index("correct_to_wrong")]) + 1)
    csv_path.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    for name in ("reliability.json", "bootstrap.csv"):
        (root / "importance" / name).unlink()
    ctx = RunContext.open(root)
    ctx.__dict__["model"] = planted_run.model
    run_importance(ctx)
    assert read_importance_reliability(root / "importance") is None


# ------------------------------------------------------------------------------------------ the reader


def _good_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    measure = {"split_half_spearman_brown": 0.8, "split_half_raw": 0.67, "odd_even": 0.7, "n_splits": 200}
    info = {"method": "images", "n_images": 10, "n_units": 10, "n_boot": 100, "seed": 0,
            "measures": {"importance": measure, "mean_delta_logprob_true": dict(measure, odd_even=None)}}  # fmt: skip
    (folder / "reliability.json").write_text(json.dumps(info))
    cols = "feature_ind," + ",".join(f"{m}{s}" for m in MEASURES for s in ("", "_ci_low", "_ci_high", "_se"))
    (folder / "bootstrap.csv").write_text(cols + "\n0,3,1,5,1.2,-0.1,-0.2,0,0.05\n4,0,,,,0,0,0,0\n")


def test_reader_parses_files_and_returns_none_when_absent(tmp_path):
    assert read_importance_reliability(tmp_path) is None
    _good_files(tmp_path)
    rel = read_importance_reliability(tmp_path)
    assert rel.reliability() == 0.8 and rel.measures["mean_delta_logprob_true"]["odd_even"] is None
    np.testing.assert_array_equal(rel.feature_ind, [0, 4])
    assert rel.per_feature["importance_ci_high"][0] == 5 and np.isnan(rel.per_feature["importance_ci_low"][1])


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: (d / "reliability.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "reliability.json").write_text("[1, 2]"), "expected a JSON object"),
        (lambda d: _edit_json(d, method="pixels"), "'method' is 'pixels'"),
        (lambda d: _edit_json(d, n_units=-1), "'n_units' is -1"),
        (lambda d: _edit_json(d, measures={"importance": {}}), "'measures' must be"),
        (lambda d: _edit_json(d, measures={m: {"split_half_raw": "high"} for m in MEASURES}), "split_half_raw"),
        (lambda d: (d / "bootstrap.csv").unlink(), "not found"),
        (lambda d: (d / "bootstrap.csv").write_text("feature_ind,importance\n0,1\n"), "missing column"),
        (lambda d: _edit_csv(d, "0,3,1,5,1.2", "x,3,1,5,1.2"), "row 2: feature_ind"),
        (lambda d: _edit_csv(d, "0,3,1,5,1.2", "0,3,lo,5,1.2"), "row 2: importance_ci_low"),
    ],
)
def test_malformed_files_give_one_line_data_errors(tmp_path, edit, match):
    _good_files(tmp_path)
    edit(tmp_path)
    with pytest.raises(DataError, match=match) as info:
        read_importance_reliability(tmp_path)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def _edit_json(folder: Path, **changes: object) -> None:
    info = json.loads((folder / "reliability.json").read_text())
    info.update(changes)
    (folder / "reliability.json").write_text(json.dumps(info))


def _edit_csv(folder: Path, old: str, new: str) -> None:
    path = folder / "bootstrap.csv"
    path.write_text(path.read_text().replace(old, new))
