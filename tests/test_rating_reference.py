"""Each rater's pure scoring function equals an independent reference (scipy / numpy / sklearn /
torchmetrics) on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, special, stats
from scipy.spatial.distance import cdist, pdist

from raters._similarity import calibrate, mean_pairwise_cosine, null_summary, random_subsets, subset_coherence
from raters.auto_i import agreement, cross_validated_calibration
from raters.clip_coherence import coherence_scores
from raters.clip_label import label_match, label_probabilities
from raters.clip_vis_match import vis_match
from raters.fid import frechet_distance, kernel_inception_distance
from raters.mis import choice_log_likelihood, fit_alpha, mis_probabilities, sigmoid, task_draws, task_evidence

RNG = np.random.default_rng(1234)


def test_mean_pairwise_cosine_matches_scipy_pdist():
    x = RNG.normal(size=(8, 33))
    assert mean_pairwise_cosine(x) == pytest.approx(np.mean(1 - pdist(x, "cosine")), abs=1e-12)
    assert np.isnan(mean_pairwise_cosine(x[:1]))


def test_subset_coherence_matches_a_loop():
    x = RNG.normal(size=(30, 5))
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    subsets = random_subsets(30, 6, 50, np.random.default_rng(0))
    assert all(len(set(row)) == 6 for row in subsets) and subsets.max() < 30
    ref = [np.mean(1 - pdist(x[s], "cosine")) for s in subsets]
    np.testing.assert_allclose(subset_coherence(z @ z.T, subsets), ref, atol=1e-12)


def test_calibrations_match_scipy():
    null = RNG.normal(0.3, 0.05, size=400)
    for v in (0.2, 0.31, 0.5):
        assert calibrate(v, null, "ecdf") == pytest.approx(stats.percentileofscore(null, v, kind="mean") / 100)
        z = (v - null.mean()) / null.std(ddof=1)
        assert calibrate(v, null, "z") == pytest.approx(stats.norm.cdf(z))
    for v in null[::37]:  # at a null value the percentile is scipy's mean percentile of that value
        assert calibrate(v, null, "percentile") == pytest.approx(stats.percentileofscore(null, v, kind="mean") / 100)
    mean, sd, z, p = null_summary(0.4, null)
    assert p == pytest.approx((1 + (null >= 0.4).sum()) / 401) and z == pytest.approx((0.4 - mean) / sd)
    with pytest.raises(ValueError, match="unknown calibration"):
        calibrate(0.1, null, "nope")


@pytest.mark.parametrize("center", ["none", "pool"])
def test_coherence_scores_reference(center):
    pool = RNG.normal(size=(60, 16)) + 3.0  # a common offset: every image shares it, as embedder cones do
    sets = [
        RNG.normal(size=(8, 16)) + 3.0,
        np.repeat(RNG.normal(size=(1, 16)), 8, axis=0) + 1e-3 * RNG.normal(size=(8, 16)),
    ]
    res = coherence_scores(sets, pool, n_null=200, seed=5, center=center)
    shift = pool.mean(axis=0) if center == "pool" else 0.0
    subsets = random_subsets(60, 8, 200, np.random.default_rng([5, 8, 0x636F68]))
    null = np.array([np.mean(1 - pdist(pool[s] - shift, "cosine")) for s in subsets])
    for i, s in enumerate(sets):
        raw = np.mean(1 - pdist(s - shift, "cosine"))
        assert res["coherence"][i] == pytest.approx(raw)
        assert res["q4"][i] == pytest.approx(calibrate(raw, null, "percentile"))
    assert 1 - 0.5 / 200 < res["q4"][1] < 1 and res["p_value"][1] == pytest.approx(1 / 201)
    if center == "pool":  # centred, a random set's coherence is near 0; plain, the shared offset dominates it
        assert abs(res["coherence"][0]) < 0.2
    else:
        assert res["coherence"][0] > 0.8


def test_vis_match_reference():
    pool, vis, ex = RNG.normal(size=(50, 12)), RNG.normal(size=(4, 12)), RNG.normal(size=(8, 12))
    subsets = random_subsets(50, 8, 100, np.random.default_rng(0))
    res = vis_match(vis, ex, pool, subsets)
    raw = np.mean(1 - cdist(vis, ex, "cosine"))
    null = np.array([np.mean(1 - cdist(vis, pool[s], "cosine")) for s in subsets])
    assert res["match"] == pytest.approx(raw)
    assert res["null_mean"] == pytest.approx(null.mean())
    assert res["q1q3"] == pytest.approx(calibrate(raw, null, "percentile"))


def test_label_match_reference():
    text = RNG.normal(size=(10, 6))
    vis, ex, pool = RNG.normal(size=(4, 6)), RNG.normal(size=(8, 6)), RNG.normal(size=(40, 6))
    p_vis, p_ex, p_pool = (label_probabilities(a, text, 20.0) for a in (vis, ex, pool))
    ref = special.softmax(20.0 * (1 - cdist(vis, text, "cosine")), axis=1)
    np.testing.assert_allclose(p_vis, ref, atol=1e-12)
    subsets = random_subsets(40, 8, 64, np.random.default_rng(1))
    top = np.argsort(-p_vis.mean(0))[:3]
    res = label_match(p_vis, p_ex, p_pool, subsets, 3, match="label_mass")
    assert res["match"] == pytest.approx(p_ex[:, top].sum(1).mean())
    assert list(res["label_idx"]) == list(top)
    res = label_match(p_vis, p_ex, p_pool, subsets, 3, match="distribution")
    assert res["match"] == pytest.approx(np.mean(1 - cdist(p_ex, p_vis.mean(0)[None], "cosine")))


def test_frechet_distance_with_shrinkage_matches_sklearn_and_scipy_sqrtm():
    from sklearn.covariance import LedoitWolf

    x, y = RNG.normal(size=(4, 40)), RNG.normal(size=(8, 40)) * 1.3 + 0.2

    def ref(s1, s2):
        d = x.mean(0) - y.mean(0)
        return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)

    lw = ref(LedoitWolf().fit(x).covariance_, LedoitWolf().fit(y).covariance_)
    assert frechet_distance(x, y) == pytest.approx(lw, rel=1e-8)
    fixed = 0.3

    def shrunk(a):
        s = np.cov(a, rowvar=False, bias=True)
        return (1 - fixed) * s + fixed * np.trace(s) / s.shape[0] * np.eye(s.shape[0])

    assert frechet_distance(x, y, fixed) == pytest.approx(ref(shrunk(x), shrunk(y)), rel=1e-8)
    assert frechet_distance(x, x, "ledoit_wolf") == pytest.approx(0.0, abs=1e-8)


def test_raw_frechet_distance_and_kid_match_torchmetrics():
    """Where torchmetrics' settings coincide with ours (no shrinkage, unbiased covariance; KID over
    one subset of the full, equal-size sets) the numbers agree."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 16

        def forward(self, x):
            return x

    x, y = RNG.normal(size=(24, 16)), RNG.normal(size=(24, 16)) + 0.4
    fid = FrechetInceptionDistance(feature=Identity(), normalize=True)
    fid.update(torch.tensor(x, dtype=torch.float64), real=True)
    fid.update(torch.tensor(y, dtype=torch.float64), real=False)
    assert frechet_distance(x, y, 0.0, ddof=1) == pytest.approx(float(fid.compute()), rel=1e-5)

    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=24, normalize=True)
    kid.update(torch.tensor(x, dtype=torch.float64), real=True)
    kid.update(torch.tensor(y, dtype=torch.float64), real=False)
    assert kernel_inception_distance(y, x) == pytest.approx(float(kid.compute()[0]), rel=1e-5)
    # the kernel scale fid uses on L2-normalised embeddings (γ = 1: k = (cos + 1)³)
    xn, yn = x / np.linalg.norm(x, axis=1, keepdims=True), y / np.linalg.norm(y, axis=1, keepdims=True)
    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=24, gamma=1.0, normalize=True)
    kid.update(torch.tensor(xn, dtype=torch.float64), real=True)
    kid.update(torch.tensor(yn, dtype=torch.float64), real=False)
    assert kernel_inception_distance(yn, xn, gamma=1.0) == pytest.approx(float(kid.compute()[0]), rel=1e-5)


def test_fid_handles_four_vs_eight_in_high_dimension():
    """Raw FD on 4 vs 8 samples in 512-d is dominated by sampling noise; the shrunk estimate ranks a
    closer distribution closer."""
    base = RNG.normal(size=(1, 512))
    near = [base + 0.3 * RNG.normal(size=(n, 512)) for n in (4, 8)]
    far = base + 1.0 + 0.3 * RNG.normal(size=(8, 512))
    assert frechet_distance(near[0], near[1]) < frechet_distance(near[0], far)


def test_mis_reference():
    assert np.allclose(sigmoid(np.array([-800.0, -1.0, 0.0, 3.0, 800.0])), special.expit([-800, -1, 0, 3, 800]))
    rng = np.random.default_rng(5)  # own generator: the other tests' data do not depend on these
    top, bottom = rng.normal(size=(7, 6, 9)), rng.normal(size=(7, 6, 9))  # 7 tasks, K = 5 explanations + query

    def s(q, e):  # mean cosine similarity of each task's query to its explanations
        return np.array([np.mean(1 - cdist(q[t][None], e[t], "cosine")) for t in range(len(q))])

    ep, qp, em, qm = top[:, :5], top[:, 5], bottom[:, :5], bottom[:, 5]
    ref = (s(qp, ep) - s(qp, em)) - (s(qm, ep) - s(qm, em))
    np.testing.assert_allclose(task_evidence(top, bottom), ref, atol=1e-12)
    np.testing.assert_allclose(mis_probabilities(ref, 7.0), special.expit(7.0 * ref))


def test_mis_draws_come_from_the_activation_quantiles():
    scores = np.random.default_rng(6).permutation(100).astype(float)  # distinct activations: exact quantiles
    top, bottom = task_draws(scores, (0, 1, 2), 30, 4, 0.1)
    assert top.shape == bottom.shape == (30, 5)
    assert set(scores[top.ravel()]) <= set(range(90, 100)) and set(scores[bottom.ravel()]) <= set(range(10))
    assert all(len(set(row)) == 5 for row in np.concatenate([top, bottom]))  # without replacement
    assert np.all(np.diff(scores[top], axis=1) < 0) and np.all(np.diff(scores[bottom], axis=1) > 0)


def test_mis_alpha_fit_matches_sklearn_logistic_regression():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(7)
    evidence = rng.normal(0.0, 0.3, 400)
    correct = rng.random(400) < special.expit(5.0 * evidence)
    ref = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-12, max_iter=10_000)  # no penalty
    ref.fit(evidence[:, None], correct)
    alpha, loglik = fit_alpha(evidence, correct)
    assert alpha == pytest.approx(float(ref.coef_[0, 0]), rel=1e-5)
    assert loglik == pytest.approx(-400 * log_loss(correct, ref.predict_proba(evidence[:, None])[:, 1]), rel=1e-7)
    assert choice_log_likelihood(0.0, evidence, correct) == pytest.approx(-400 * np.log(2))


def test_auto_i_cross_validation_matches_sklearn():
    """Out-of-fold calibrations on the human scale (not clipped: human I can be negative under keep)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import KFold, cross_val_predict

    x = RNG.random(60)
    y = x**2 - 0.2 + 0.1 * RNG.normal(size=60)  # some below 0
    ours = cross_validated_calibration(x, y, "isotonic", 5, seed=3)
    ref = cross_val_predict(IsotonicRegression(out_of_bounds="clip"), x, y, cv=KFold(5, shuffle=True, random_state=3))
    np.testing.assert_allclose(ours, ref)
    assert (ours < 0).any()
    lin = cross_validated_calibration(x, y, "linear", 4, seed=0)
    for train, test in KFold(4, shuffle=True, random_state=0).split(x):
        slope, icpt = stats.linregress(x[train], y[train])[:2]
        np.testing.assert_allclose(lin[test], slope * x[test] + icpt)
    # a falling line would invert the common scale's direction: the calibration is then the mean
    falling = cross_validated_calibration(x, 1 - x, "linear", 3, seed=0)
    for train, test in KFold(3, shuffle=True, random_state=0).split(x):
        np.testing.assert_allclose(falling[test], np.mean(1 - x[train]))
    a = agreement(ours, y)
    assert a["spearman"] == pytest.approx(stats.spearmanr(ours, y).statistic)
    assert a["pearson"] == pytest.approx(stats.pearsonr(ours, y).statistic)
    assert a["mae"] == pytest.approx(np.mean(np.abs(ours - y)))


def test_coherence_center_option_is_checked():
    from autointerp.errors import ConfigError
    from autointerp.rating import create_rater

    with pytest.raises(ConfigError, match=r"clip_coherence.center = 'mean'; expected one of pool, none"):
        create_rater("clip_coherence", center="mean").score(None, [0])
