"""``mis``: the Machine Interpretability Score (Zimmermann, Klindt & Brendel, 2024), with our embedder.

It simulates the 2-AFC task of Borowski et al.: a participant sees K maximally activating and K
minimally activating *explanation* images of a feature, and two *queries* — one from the top and
one from the bottom activation quantile of the dataset — and must say which query is the strongly
activating one. The machine compares the queries with the explanations in embedding space:

    d(q)  = mean cos(q, E₊) − mean cos(q, E₋)        (E₋ omitted when there are none)
    P_t   = sigmoid(α · (d(q₊) − d(q₋)))             (probability of the correct choice)
    MIS   = mean over N tasks of P_t

(The paper uses DreamSim distances, hence the opposite sign there; α is a free parameter that the
paper fitted to human choices.) E₊ are the feature's top examples (or its visualisations), E₋ its
bottom examples (else the K lowest-scoring dataset images); queries never repeat an explanation.
Every task is drawn from a generator seeded by (seed, feature): batch-invariant and reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autointerp.errors import ConfigError
from autointerp.progress import track
from autointerp.rating import Rater, RatingContext, ScoreTable, register_rater
from raters._similarity import l2_normalize


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def query_evidence(queries: np.ndarray, pos: np.ndarray, neg: np.ndarray | None) -> np.ndarray:
    """d(q) = mean cosine to the positive explanations minus mean cosine to the negative ones."""
    q = l2_normalize(queries)
    d = (q @ l2_normalize(pos).T).mean(axis=1)
    if neg is not None and len(neg):
        d = d - (q @ l2_normalize(neg).T).mean(axis=1)
    return d


def mis_probabilities(q_plus: np.ndarray, q_minus: np.ndarray, pos: np.ndarray, neg: np.ndarray | None,
                      alpha: float) -> np.ndarray:
    """Per-task probability of the correct choice, sigmoid(α·(d(q₊) − d(q₋)))."""
    return sigmoid(alpha * (query_evidence(q_plus, pos, neg) - query_evidence(q_minus, pos, neg)))


def sample_queries(scores: np.ndarray, exclude: np.ndarray, quantile: float, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``scores`` (one feature's column) for ``n`` top-quantile and ``n`` bottom-quantile
    queries, never an excluded row; sampled without replacement when the quantile is big enough."""
    order = np.argsort(-scores, kind="stable")
    order = order[~np.isin(order, exclude)]
    m = max(1, int(round(len(scores) * quantile)))
    top, bottom = order[:m], order[::-1][:m]

    def draw(pool: np.ndarray) -> np.ndarray:
        return rng.choice(pool, size=n, replace=len(pool) < n)

    return draw(top), draw(bottom)


@register_rater
class MisRater(Rater):
    """Machine Interpretability Score from simulated 2-AFC tasks."""

    name = "mis"
    description = "Machine Interpretability Score: simulated 2-AFC tasks (top- vs bottom-quantile query), embedder"
    needs = frozenset({"examples", "activations", "dataset", "embedder"})
    components = ("mis",)
    defaults = {"k": 8, "n_tasks": 20, "quantile": 0.1, "alpha": 20.0, "explanations": "examples"}

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        k, n, q, alpha = (int(self.options["k"]), int(self.options["n_tasks"]), float(self.options["quantile"]),
                          float(self.options["alpha"]))
        source = self.options["explanations"]
        if source not in ("examples", "visualizations"):
            raise ConfigError(f"rate.options.mis.explanations = {source!r}; expected examples or visualizations")
        if not 0.0 < q <= 0.5:
            raise ConfigError(f"rate.options.mis.quantile = {q}; expected a fraction in (0, 0.5]")
        if k < 1 or n < 1:
            raise ConfigError("rate.options.mis: k and n_tasks must be at least 1")
        scores, dsi = ctx.scores, ctx.dataset_index
        out = np.full(len(features), np.nan)
        sd = np.full(len(features), np.nan)
        for i, f in enumerate(track(features, "mis", len(features), "features")):
            f = int(f)
            if f >= scores.shape[1]:
                continue
            top_idx = ctx.example_dataset_indices(f, "top")
            pos_paths = ctx.vis_paths(f) if source == "visualizations" else ctx.example_paths(f, "top")
            if not len(pos_paths):
                continue
            pos = ctx.embed_paths(pos_paths[:k])
            col = np.asarray(scores[:, f], dtype=np.float64)
            bottom_idx = ctx.example_dataset_indices(f, "bottom")
            if len(bottom_idx):
                neg = ctx.embed_paths(ctx.example_paths(f, "bottom")[:k])
            else:
                low_rows = np.argsort(col, kind="stable")[:k]
                bottom_idx = dsi[low_rows]
                neg = ctx.embed_dataset(bottom_idx)
            exclude_rows = np.flatnonzero(np.isin(dsi, np.concatenate([top_idx[:k], bottom_idx[:k]])))
            rng = np.random.default_rng([self.seed, f, 0x6D6973])
            qp_rows, qm_rows = sample_queries(col, exclude_rows, q, n, rng)
            probs = mis_probabilities(ctx.embed_dataset(dsi[qp_rows]), ctx.embed_dataset(dsi[qm_rows]), pos, neg,
                                      alpha)
            out[i], sd[i] = probs.mean(), probs.std(ddof=1) if n > 1 else np.nan
        return self.table(features, I=out, components={"mis": out}, extras={"task_std": sd})
