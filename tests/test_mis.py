"""The ``mis`` rater against an independent implementation of the published algorithm
(Zimmermann, Klindt & Brendel 2024, reference code klindtlab/machine-interpretability), on
planted embeddings.

The world: dataset images encode their own index in their pixels, and the test embedder returns a
planted embedding per index, so the geometry (which images share a direction) is known exactly.
Activation rows map to dataset indices through a non-identity ``dataset_index``. The reference
below re-derives every random draw from the rules written in ``raters/mis.py``'s docstring, with
its own code (Python's stable ``sorted``, scipy's cosine distance, scipy's logistic function).
"""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
from scipy import special, stats
from scipy.spatial.distance import cdist

from autointerp.calibration import null_percentile
from autointerp.config import RunConfig
from autointerp.data.base import ImageDataset
from autointerp.embedders.base import Embedder
from autointerp.errors import ConfigError, DataError
from autointerp.rating import RatingContext, create_rater
from autointerp.runfolder import RunContext

SEED = 4
TAG, NULL = 0x6D6973, 0x6E756C6C
N_ROWS, N_DATA, DIM = 400, 460, 16
# features: 0 planted (its top rows share a direction), 1 A (tiny but consistent evidence), 2 B (large
# but inconsistent evidence), 3 ReLU-like (70 % of rows tied at 0), 4.. random (activation unrelated)
PLANTED, A, B, RELU = 0, 1, 2, 3
RANDOM = list(range(4, 24))


# ------------------------------------------------------------------------------------------ world
class IndexImages(ImageDataset):
    """Image i is a 2×2 patch whose pixels spell i in base 256."""

    name = "index-images"

    def __init__(self, n: int) -> None:
        self.n = n
        self.labels = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def image(self, index: int) -> np.ndarray:
        i = int(index)
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.tile(np.array([i // 65536, (i // 256) % 256, i % 256], dtype=np.uint8), (2, 2, 1))


class PlantedEmbedder(Embedder):
    """Returns the planted embedding of the image's index; counts what it embeds."""

    kind = "planted"

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = table
        self.id = f"planted-{abs(hash(table.tobytes())) % 10**8}"
        self.calls: list[int] = []

    def _embed_batch(self, images):
        idx = [int(img[0, 0, 0]) * 65536 + int(img[0, 0, 1]) * 256 + int(img[0, 0, 2]) for img in images]
        self.calls += idx
        return self.table[idx]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def make_world(tmp_path, seed: int = 0):
    """Activations (N_ROWS × 24), the row → dataset-index map and planted embeddings (N_DATA × DIM)."""
    rng = np.random.default_rng([seed, 11])
    dsi = np.sort(rng.choice(N_DATA, N_ROWS, replace=False))  # rows are a subset of the dataset
    emb = rng.normal(size=(N_DATA, DIM))
    scores = rng.normal(size=(N_ROWS, 24))
    m = 40  # 10 % of 400
    e = np.eye(DIM)
    groups = np.split(rng.permutation(N_ROWS), 10)  # disjoint groups of 40 rows

    def plant(feature: int, top: np.ndarray, bottom: np.ndarray) -> None:
        scores[top, feature] = 10.0 + rng.random(len(top))
        scores[bottom, feature] = -10.0 - rng.random(len(bottom))

    # planted: the top quantile shares direction e0 (plus noise); the bottom is random
    plant(PLANTED, groups[0], groups[1])
    emb[dsi[groups[0]]] = 4.0 * e[0] + 0.5 * rng.normal(size=(m, DIM))
    # A: every top image is a1, every bottom image a2, cos(a1, a2) = 0.95 → evidence 0.1 in every task
    plant(A, groups[2], groups[3])
    emb[dsi[groups[2]]] = e[1]
    emb[dsi[groups[3]]] = 0.95 * e[1] + math.sqrt(1 - 0.95**2) * e[2]
    # B: three quarters of the top images are b1, a quarter b2 like the whole bottom → evidence 0 or ~1.5
    plant(B, groups[4], groups[5])
    emb[dsi[groups[4]]] = np.where(np.arange(m)[:, None] < 30, e[3], e[4])
    emb[dsi[groups[5]]] = e[4]
    # ReLU-like: 280 rows tied at exactly 0, the rest positive
    relu = np.abs(rng.normal(size=N_ROWS)) + 0.01
    relu[rng.permutation(N_ROWS)[:280]] = 0.0
    scores[:, RELU] = relu
    root = tmp_path / "run"
    (root / "activations").mkdir(parents=True)
    np.save(root / "activations" / "scores.npy", scores.astype(np.float32))
    np.save(root / "activations" / "dataset_index.npy", dsi)
    cfg = RunConfig.model_validate(
        {"seed": 0, "dataset": {"type": "synthetic"}, "rate": {"embedder": {"type": "handcrafted"}}}
    )
    return RunContext(root, cfg), scores.astype(np.float32).astype(np.float64), dsi, emb


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    run, scores, dsi, emb = make_world(tmp_path_factory.mktemp("mis"))
    return {"run": run, "scores": scores, "dsi": dsi, "emb": emb, "dataset": IndexImages(N_DATA)}


def context(world, embedder=None):
    return RatingContext(
        world["run"], embedder=embedder or PlantedEmbedder(world["emb"]), dataset=world["dataset"], cache=False
    )


# ------------------------------------------------------------------------------ the reference
def reference_draws(col, key, n_tasks, k, quantile):
    """The documented draw rules, re-implemented with Python's stable sorted()."""
    n = len(col)
    m = int(np.ceil(quantile * n - 1e-9))
    perm = [int(r) for r in np.random.default_rng([*key, 0]).permutation(n)]
    top_pool = sorted(perm, key=lambda r: -col[r])[:m]
    bottom_pool = sorted(perm, key=lambda r: col[r])[:m]
    tasks = []
    for t in range(n_tasks):
        rng = np.random.default_rng([*key, t + 1])
        top = [top_pool[j] for j in rng.choice(m, k + 1, replace=False)]
        bottom = [bottom_pool[j] for j in rng.choice(m, k + 1, replace=False)]
        tasks.append((sorted(top, key=lambda r: -col[r]), sorted(bottom, key=lambda r: col[r])))
    return tasks


def reference_probabilities(col, key, emb_of_row, alpha, n_tasks=20, k=9, quantile=0.1):
    """Per-task probability of the correct choice, sigmoid(α · (d(q₊) − d(q₋)))."""

    def s(q, e):  # mean cosine similarity of one query to a set of explanations
        return float(np.mean(1.0 - cdist(emb_of_row([q]), emb_of_row(e), "cosine")))

    out = []
    for top, bottom in reference_draws(col, key, n_tasks, k, quantile):
        e_plus, q_plus, e_minus, q_minus = top[:k], top[k], bottom[:k], bottom[k]
        d_plus = s(q_plus, e_plus) - s(q_plus, e_minus)
        d_minus = s(q_minus, e_plus) - s(q_minus, e_minus)
        out.append(special.expit(alpha * (d_plus - d_minus)))
    return np.array(out)


def reference_null(n, seed, emb_of_row, alpha, n_null):
    return np.array(
        [
            reference_probabilities(
                np.random.default_rng([seed, NULL, r]).permutation(n).astype(float), (seed, NULL, r), emb_of_row, alpha
            ).mean()
            for r in range(n_null)
        ]
    )


def row_embedder(world):
    return lambda rows: world["emb"][world["dsi"][np.asarray(rows, dtype=np.int64)]]


# ------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("alpha", [None, 5.0])
def test_rater_equals_the_independent_reference(world, alpha):
    feats = [PLANTED, A, B, RELU, RANDOM[0]]
    options = {"n_null": 25} | ({} if alpha is None else {"alpha": alpha})
    table = create_rater("mis", seed=SEED, **options).score(context(world), feats)
    a = 0.16 if alpha is None else alpha
    emb_of_row = row_embedder(world)
    null = reference_null(N_ROWS, SEED, emb_of_row, a, 25)
    for i, f in enumerate(feats):
        probs = reference_probabilities(world["scores"][:, f], (SEED, TAG, f), emb_of_row, a)
        assert table.extras["mis"][i] == pytest.approx(probs.mean(), abs=1e-6), f
        assert table.extras["task_std"][i] == pytest.approx(probs.std(ddof=1), abs=1e-6), f
    np.testing.assert_allclose(table.I, null_percentile(table.extras["mis"], null, "higher"), atol=1e-6)
    assert table.meta["alpha"] == a and table.meta["null_mean"] == pytest.approx(null.mean(), abs=1e-6)


def test_planted_feature_near_one_random_features_near_chance(world):
    ctx = context(world)
    sharp = create_rater("mis", seed=SEED, alpha=20.0, n_null=50).score(ctx, [PLANTED, *RANDOM])
    assert sharp.extras["mis"][0] > 0.97 and sharp.I[0] > 0.99
    assert abs(np.mean(sharp.extras["mis"][1:]) - 0.5) < 0.05
    assert np.all(np.abs(sharp.extras["mis"][1:] - 0.5) < 0.3)  # 20 tasks of a sharp sigmoid: sd ~0.1
    published = create_rater("mis", seed=SEED, n_null=50).score(ctx, [PLANTED, *RANDOM])
    assert published.I[0] > 0.99  # with α = 0.16 MIS barely leaves 0.5, but far beyond the null
    for table in (sharp, published):
        random_i = table.I[1:]
        assert 0.3 < random_i.mean() < 0.7, np.round(random_i, 2)  # percentiles of chance features: ~U(0, 1)
        assert stats.kstest(random_i, "uniform").pvalue > 1e-3


def test_ties_at_zero_are_broken_by_the_seed_not_the_dataset_index(world):
    from raters.mis import task_draws

    col = world["scores"][:, RELU]
    tied = np.flatnonzero(col == 0.0)
    assert len(tied) == 280
    pools = []
    for seed in (0, 1, 2):
        _, bottom = task_draws(col, (seed, TAG, RELU), 20, 9, 0.1)
        drawn = np.unique(bottom)
        assert set(drawn) <= set(tied)
        pools.append(set(drawn))
        # the lowest row / dataset indices among the tied are not favoured: the draws spread over the tie
        assert np.median(drawn) > np.percentile(tied, 25) and drawn.max() > np.percentile(tied, 75)
    assert pools[0] != pools[1] and pools[1] != pools[2]
    lowest = set(tied[:40])  # what a sort by index would take as the bottom quantile
    assert not all(p <= lowest for p in pools)
    # ... and so the rater's score of the tied feature depends on the seed
    ctx = context(world)
    s0 = create_rater("mis", seed=0, n_null=5, alpha=20.0).score(ctx, [RELU]).extras["mis"][0]
    s1 = create_rater("mis", seed=1, n_null=5, alpha=20.0).score(ctx, [RELU]).extras["mis"][0]
    assert s0 != s1


def test_alpha_changes_the_ranking(world):
    """A: evidence 0.1 in every task; B: evidence ~1.5 in most tasks and 0 in the rest. A small α
    ranks by mean evidence (B first), a large one by the fraction of clear wins (A first)."""
    ctx = context(world)
    small = create_rater("mis", seed=SEED, n_null=20).score(ctx, [A, B])
    large = create_rater("mis", seed=SEED, alpha=60.0, n_null=20).score(ctx, [A, B])
    assert small.extras["mis"][1] > small.extras["mis"][0] and small.I[1] > small.I[0]
    assert large.extras["mis"][0] > large.extras["mis"][1] and large.I[0] > large.I[1]


def test_batch_invariance_and_one_null_per_run(world):
    emb = PlantedEmbedder(world["emb"])
    ctx = context(world, emb)
    rater = create_rater("mis", seed=SEED, n_null=30)
    feats = [PLANTED, A, B, RELU, *RANDOM[:4]]
    whole = rater.score(ctx, feats)
    calls = len(emb.calls)
    assert len(set(emb.calls)) == calls  # every image embedded once
    again = rater.score(ctx, feats[::-1][:3])
    assert len(emb.calls) == calls and len(rater._null) == 1  # nothing re-embedded, the null reused
    fresh = create_rater("mis", seed=SEED, n_null=30).score(context(world), feats[3:5])
    np.testing.assert_allclose(again.I, whole.I[::-1][:3])
    np.testing.assert_allclose(fresh.I, whole.I[3:5])
    np.testing.assert_allclose(fresh.extras["mis"], whole.extras["mis"][3:5])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, r"mis\.k = 0; expected an integer ≥ 1"),
        ({"n_tasks": 0}, r"mis\.n_tasks = 0; expected an integer ≥ 1"),
        ({"n_tasks": 2.5}, r"mis\.n_tasks = 2\.5"),
        ({"quantile": 0.0}, r"mis\.quantile = 0\.0; expected a fraction in \(0, 0\.5\]"),
        ({"quantile": 0.6}, r"mis\.quantile = 0\.6"),
        ({"alpha": -1.0}, r"mis\.alpha = -1\.0; expected a number > 0"),
        ({"alpha": 0}, r"mis\.alpha = 0"),
        ({"n_null": 1}, r"mis\.n_null = 1; expected an integer ≥ 2"),
        ({"alpha": 1.0, "choices": "c.csv"}, "set alpha or choices"),
        ({"quantile": 0.01}, r"the 0\.01 quantile of the 400 rated images holds 4, fewer than k \+ 1 = 10"),
        ({"k": 40, "quantile": 0.1}, r"holds 40, fewer than k \+ 1 = 41"),
    ],
)
def test_bad_options_are_one_line_config_errors(world, options, message):
    with pytest.raises(ConfigError, match=message) as info:
        create_rater("mis", **options).score(context(world), [PLANTED])
    assert "\n" not in str(info.value)


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown option 'explanations'; allowed options: alpha, choices, k"):
        create_rater("mis", explanations="visualizations")


# ------------------------------------------------------------------------------ α from choices
def write_choices(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "feature_ind",
                "query_plus_index",
                "query_minus_index",
                "explanation_plus_indices",
                "explanation_minus_indices",
                "correct",
            ]
        )
        w.writerows(rows)


def simulate_choices(world, alpha, n, seed=0):
    """Random 2-AFC trials over the dataset with choices drawn from sigmoid(α · evidence)."""
    rng = np.random.default_rng(seed)
    emb = world["emb"]
    # a direction that half the images share, so that the evidence has spread
    rows = []
    for _ in range(n):
        idx = rng.choice(N_DATA, 2 + 6, replace=False)
        qp, qm, ep, em = idx[0], idx[1], idx[2:5], idx[5:8]

        def s(q, e):
            return float(np.mean(1.0 - cdist(emb[[q]], emb[e], "cosine")))

        delta = s(qp, ep) - s(qp, em) - s(qm, ep) + s(qm, em)
        correct = int(rng.random() < special.expit(alpha * delta))
        rows.append([0, qp, qm, " ".join(map(str, ep)), " ".join(map(str, em)), correct])
    return rows


def test_alpha_fitted_to_simulated_human_choices_recovers_the_planted_alpha(world, tmp_path):
    path = tmp_path / "choices.csv"
    write_choices(path, simulate_choices(world, 6.0, 2000))
    table = create_rater("mis", seed=SEED, choices=str(path), n_null=5).score(context(world), [PLANTED])
    meta = table.meta
    assert meta["alpha"] == pytest.approx(6.0, rel=0.15)
    assert meta["n_choices"] == 2000 and meta["alpha_source"].startswith("fitted to 2000 choices")
    assert meta["alpha_log_likelihood"] > meta["alpha_chance_log_likelihood"]
    # the fitted α is the one used: the same MIS as with that α set directly
    direct = create_rater("mis", seed=SEED, alpha=meta["alpha"], n_null=5).score(context(world), [PLANTED])
    assert table.extras["mis"][0] == pytest.approx(direct.extras["mis"][0])


def test_choices_file_errors_are_one_line(world, tmp_path):
    def run(rows=None, text=None):
        path = tmp_path / "c.csv"
        if text is not None:
            path.write_text(text)
        else:
            write_choices(path, rows)
        create_rater("mis", choices=str(path), n_null=5).score(context(world), [PLANTED])

    few = simulate_choices(world, 5.0, 9)
    with pytest.raises(DataError, match="9 choice\\(s\\); fitting α needs at least 10"):
        run(few)
    with pytest.raises(DataError, match="missing column\\(s\\) correct"):
        run(text="feature_ind,query_plus_index,query_minus_index,explanation_plus_indices,explanation_minus_indices\n")
    bad = simulate_choices(world, 5.0, 12)
    bad[3][5] = "yes"
    with pytest.raises(DataError, match="row 5: correct = 'yes'"):
        run(bad)
    bad = simulate_choices(world, 5.0, 12)
    bad[0][3] = "1 2 x"
    with pytest.raises(DataError, match="row 2, explanation_plus_indices: expected dataset indices"):
        run(bad)
    bad = simulate_choices(world, 5.0, 12)
    bad[6][1] = N_DATA + 3
    with pytest.raises(DataError, match=f"row 8: dataset index {N_DATA + 3} outside the dataset's 0..{N_DATA - 1}"):
        run(bad)
    with pytest.raises(DataError, match="choices file not found"):
        create_rater("mis", choices=str(tmp_path / "nope.csv")).score(context(world), [PLANTED])


def test_fit_alpha_recovers_alpha_and_is_the_maximum():
    from raters.mis import choice_log_likelihood, fit_alpha

    rng = np.random.default_rng(3)
    evidence = rng.uniform(-1, 1, 5000)
    correct = rng.random(5000) < special.expit(4.0 * evidence)
    alpha, loglik = fit_alpha(evidence, correct)
    assert alpha == pytest.approx(4.0, rel=0.1)
    assert loglik == pytest.approx(np.sum(np.log(special.expit(np.where(correct, 1, -1) * alpha * evidence))))
    for other in (alpha * 0.98, alpha * 1.02):
        assert choice_log_likelihood(other, evidence, correct) < loglik


def test_mis_is_fast_on_a_demo_sized_run(tmp_path):
    """2000 images × 32 features (the demo's layer) with the weight-free embedder: seconds."""
    from autointerp import demo
    from autointerp.embedders.handcrafted import HandcraftedEmbedder

    ds = demo.SyntheticDataset(2000, seed=1)
    rng = np.random.default_rng(0)
    root = tmp_path / "run"
    (root / "activations").mkdir(parents=True)
    np.save(root / "activations" / "scores.npy", rng.random((2000, 32)).astype(np.float32))
    cfg = RunConfig.model_validate(
        {"seed": 0, "dataset": {"type": "synthetic"}, "rate": {"embedder": {"type": "handcrafted"}}}
    )
    ctx = RatingContext(RunContext(root, cfg), embedder=HandcraftedEmbedder(), dataset=ds, cache=False)
    t0 = time.perf_counter()
    table = create_rater("mis").score(ctx, list(range(32)))
    seconds = time.perf_counter() - t0
    assert np.isfinite(table.I).all()
    assert seconds < 60, f"mis took {seconds:.1f}s on a demo-sized run"
