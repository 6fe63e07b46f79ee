"""``mis``: the Machine Interpretability Score (Zimmermann, Klindt & Brendel, 2024), as published.

The score simulates the 2-AFC task of Borowski et al. / Zimmermann et al.: a participant sees K
strongly and K weakly activating *explanation* images of a feature and two *queries* (one strongly,
one weakly activating) and must say which query is the strongly activating one. The machine
answers from image similarities. Per feature, each of ``n_tasks`` tasks is drawn afresh:

1. **Pools.** ``m = ⌈quantile · n⌉`` of the ``n`` rows of ``RatingContext.scores`` (the images the
   activation pass saw) form the top pool (highest activations) and ``m`` the bottom pool (lowest).
   Ties in activation are broken by a seeded random permutation of the rows, taken before a stable
   sort — never by dataset index.
2. **Draws.** Task ``t`` draws ``K + 1`` rows without replacement from each pool; each draw is
   sorted by activation (top: descending, bottom: ascending; stable, so ties keep the random draw
   order). The first ``K`` are the task's explanations ``E₊`` (``E₋``), the last its query ``q₊``
   (``q₋``): the query is the least extreme image of its draw, as in the reference code.
3. **Answer.** With ``s(q, E)`` the mean cosine similarity of ``q`` to the images of ``E`` in the
   configured embedder's space,

       d(q)  = s(q, E₊) − s(q, E₋)
       P_t   = sigmoid(α · (d(q₊) − d(q₋)))        (probability of the correct choice)
       MIS   = mean over the tasks of P_t

   For DreamSim, whose distance is ``1 − cos`` of its (normalised) embeddings, ``d`` is the
   reference's difference of DreamSim similarities, i.e. ``D(q, E₋) − D(q, E₊)`` in distances: a
   query closer to the positive explanations has ``d > 0``. α = 0.16 is the reference code's value.

Random draws, exactly (so a test or another implementation can reproduce them): for feature ``f``
the key is ``(seed, 0x6D6973, f)``; the tie-breaking permutation is
``np.random.default_rng([*key, 0]).permutation(n)``; task ``t`` (0-based) draws with
``rng = np.random.default_rng([*key, t + 1])`` first ``rng.choice(m, K + 1, replace=False)`` into
the top pool (pool order: rows sorted by activation, descending, after the permutation), then the
same into the bottom pool (ascending). A feature's tasks depend only on (seed, feature): scores are
batch-invariant and adding tasks does not change the earlier ones.

``I`` is the **null percentile** of MIS (:func:`autointerp.calibration.null_percentile`): the
null is MIS computed by the same algorithm on ``n_null`` random rankings of the same rows (replicate
``r``: activation column ``np.random.default_rng([seed, 0x6E756C6C, r]).permutation(n)``, key
``(seed, 0x6E756C6C, r)``), i.e. for a feature whose activation says nothing about the images. It
depends on the rows, options, embedder and seed, never on the feature, and is computed once per run.

α can be fitted to human 2-AFC choices (option ``choices``; :func:`fit_alpha`, :func:`read_choices`).

Deviations from the paper (also in ``docs/raters.md``, section "mis"):

* the similarity is the cosine of the configured embedder (DreamSim through the ``dreamsim``
  embedder; any other embedder otherwise, e.g. the weight-free ``handcrafted`` one in the demo);
* α = 0.16 is used for every embedder's cosines unless fitted: cosine differences have the units of
  DreamSim distance differences, but embedders spread similarities differently, so with another
  embedder the published α is not calibrated to human choices (fit it with ``choices``);
* 0.16 is the reference code's default multiplier of DreamSim cosine differences; with it the
  sigmoid is nearly linear (MIS ≈ 0.5 + 0.04 · mean evidence) and MIS stays close to 0.5, which is
  hard to square with the paper's reported MIS values — whether the paper's α multiplies or divides
  could not be checked against its text;
* the pools are the images of the activation pass (the paper: the ImageNet training set), and the
  explanations are dataset images only (the paper also studies feature visualisations);
* ``I`` is the null percentile of MIS, not MIS itself (MIS is the ``mis`` column; chance ≈ 0.5 in both);
* ``m = ⌈quantile · n⌉`` is computed robustly to float rounding (the reference takes 201 of 2000 at 0.1).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.calibration import null_percentile
from autointerp.errors import ConfigError, DataError
from autointerp.progress import Progress, track
from autointerp.rating import Rater, RaterOptions, RatingContext, ScoreTable, option, register_rater
from raters._similarity import l2_normalize, null_summary

#: the reference code's α for (cosine) similarities of DreamSim embeddings
PUBLISHED_ALPHA = 0.16
#: seed-sequence tags of a feature's draws and of the null replicates
FEATURE_TAG = 0x6D6973  # "mis"
NULL_TAG = 0x6E756C6C  # "null"
#: fewest human choices an α fit accepts
MIN_CHOICES = 10
#: search interval of the fitted α
ALPHA_BOUNDS = (1e-6, 1e4)
#: dataset images embedded per call (the context holds a call's images in memory at once)
EMBED_CHUNK = 256

CHOICE_COLUMNS = (
    "feature_ind",
    "query_plus_index",
    "query_minus_index",
    "explanation_plus_indices",
    "explanation_minus_indices",
    "correct",
)


# --------------------------------------------------------------------------------------------
# pure functions
# --------------------------------------------------------------------------------------------
def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Numerically stable logistic function."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def pool_size(n: int, quantile: float) -> int:
    """``⌈quantile · n⌉`` rows, robust to float rounding (0.1 · 2000 is 200, not 201)."""
    return int(math.ceil(round(quantile * n, 9)))


def task_draws(
    col: np.ndarray, key: Sequence[int], n_tasks: int, k: int, quantile: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``n_tasks`` tasks of one activation column (see the module docstring).

    Returns ``(top, bottom)``, each (n_tasks, k + 1): row indices into ``col``, each task's draw
    sorted by activation (top: descending, bottom: ascending), so ``[:, :k]`` are the explanations
    and ``[:, k]`` the query.
    """
    col = np.asarray(col, dtype=np.float64)
    n = len(col)
    m = pool_size(n, quantile)
    if m < k + 1:
        raise ConfigError(
            f"rate.options.mis: the {quantile:g} quantile of {n} images holds {m}, fewer than k + 1 = "
            f"{k + 1} images per draw; lower k or raise quantile"
        )
    perm = np.random.default_rng([*key, 0]).permutation(n)
    top_pool = perm[np.argsort(-col[perm], kind="stable")][:m]
    bottom_pool = perm[np.argsort(col[perm], kind="stable")][:m]
    top = np.empty((n_tasks, k + 1), dtype=np.int64)
    bottom = np.empty((n_tasks, k + 1), dtype=np.int64)
    for t in range(n_tasks):
        rng = np.random.default_rng([*key, t + 1])
        up = top_pool[rng.choice(m, k + 1, replace=False)]
        down = bottom_pool[rng.choice(m, k + 1, replace=False)]
        top[t] = up[np.argsort(-col[up], kind="stable")]
        bottom[t] = down[np.argsort(col[down], kind="stable")]
    return top, bottom


def mean_similarity(queries: np.ndarray, explanations: np.ndarray) -> np.ndarray:
    """s(q, E): mean cosine of each query (T, D) to its explanations (T, K, D) → (T,)."""
    q = l2_normalize(queries)
    e = l2_normalize(explanations)
    return np.einsum("td,tkd->t", q, e) / e.shape[1]


def task_evidence(top_emb: np.ndarray, bottom_emb: np.ndarray) -> np.ndarray:
    """d(q₊) − d(q₋) per task from the embeddings of sorted draws (T, K + 1, D): ``[:, :K]``
    explanations, ``[:, K]`` query; d(q) = s(q, E₊) − s(q, E₋)."""
    k = top_emb.shape[1] - 1
    e_plus, q_plus = top_emb[:, :k], top_emb[:, k]
    e_minus, q_minus = bottom_emb[:, :k], bottom_emb[:, k]
    d_plus = mean_similarity(q_plus, e_plus) - mean_similarity(q_plus, e_minus)
    d_minus = mean_similarity(q_minus, e_plus) - mean_similarity(q_minus, e_minus)
    return d_plus - d_minus


def mis_probabilities(evidence: np.ndarray, alpha: float) -> np.ndarray:
    """P_t = sigmoid(α · (d(q₊) − d(q₋))), the probability of the correct choice per task."""
    return sigmoid(alpha * np.asarray(evidence, dtype=np.float64))


def choice_log_likelihood(alpha: float, evidence: np.ndarray, correct: np.ndarray) -> float:
    """Σ log P(observed choice) under P(correct) = sigmoid(α · evidence)."""
    y = np.where(np.asarray(correct, dtype=bool), 1.0, -1.0)
    z = alpha * y * np.asarray(evidence, dtype=np.float64)
    return float(-np.logaddexp(0.0, -z).sum())


def fit_alpha(
    evidence: np.ndarray, correct: np.ndarray, bounds: tuple[float, float] = ALPHA_BOUNDS
) -> tuple[float, float]:
    """Maximum-likelihood α of P(correct) = sigmoid(α · evidence) (1-D logistic, no intercept).

    Returns ``(alpha, log_likelihood)``; α is searched in ``bounds`` (on a log scale; the
    likelihood is concave in α, so the search finds the single maximum or a bound).
    """
    from scipy.optimize import minimize_scalar

    evidence = np.asarray(evidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(
        lambda la: -choice_log_likelihood(math.exp(la), evidence, correct),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10, "maxiter": 500},
    )
    alpha = math.exp(float(res.x))
    return alpha, choice_log_likelihood(alpha, evidence, correct)


def _index_list(text: str, where: str) -> list[int]:
    parts = text.replace(";", " ").replace(",", " ").split()
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise DataError(f"{where}: expected dataset indices separated by spaces, got {text!r}") from None
    if not values:
        raise DataError(f"{where}: expected at least one dataset index")
    return values


def read_choices(path: str | Path) -> list[dict[str, Any]]:
    """Human 2-AFC choices from a CSV with columns :data:`CHOICE_COLUMNS` (see ``docs/raters.md``).

    One row per trial: the dataset indices of the two queries and of the explanations (space-
    separated lists), and ``correct`` = 1 when the participant picked the strongly activating query.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in CHOICE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(CHOICE_COLUMNS)}")
            rows = list(enumerate(reader, start=2))
    except FileNotFoundError:
        raise DataError(f"{path}: choices file not found (rate.options.mis.choices)") from None
    out: list[dict[str, Any]] = []
    for r, row in rows:
        where = f"{path}: row {r}"
        try:
            feature, q_plus, q_minus = (int(row[c]) for c in CHOICE_COLUMNS[:3])
        except (TypeError, ValueError):
            raise DataError(f"{where}: feature_ind, query_plus_index and query_minus_index must be integers") from None
        correct = (row["correct"] or "").strip().lower()
        if correct not in ("0", "1", "true", "false"):
            raise DataError(f"{where}: correct = {row['correct']!r}; expected 1 (chose the top query) or 0")
        out.append(
            {
                "feature_ind": feature,
                "query_plus": q_plus,
                "query_minus": q_minus,
                "explanation_plus": _index_list(
                    row["explanation_plus_indices"] or "", f"{where}, explanation_plus_indices"
                ),
                "explanation_minus": _index_list(
                    row["explanation_minus_indices"] or "", f"{where}, explanation_minus_indices"
                ),
                "correct": correct in ("1", "true"),
            }
        )
    return out


def choice_evidence(choices: Sequence[dict[str, Any]], embed: Any) -> np.ndarray:
    """d(q₊) − d(q₋) of each human trial; ``embed(indices)`` returns embeddings of dataset images."""
    indices = sorted(
        {
            int(i)
            for c in choices
            for i in (c["query_plus"], c["query_minus"], *c["explanation_plus"], *c["explanation_minus"])
        }
    )
    z = l2_normalize(embed(indices))
    pos = {idx: j for j, idx in enumerate(indices)}
    out = np.empty(len(choices))
    for i, c in enumerate(choices):
        qp, qm = z[pos[c["query_plus"]]], z[pos[c["query_minus"]]]
        ep = z[[pos[j] for j in c["explanation_plus"]]]
        em = z[[pos[j] for j in c["explanation_minus"]]]
        out[i] = (qp @ ep.T).mean() - (qp @ em.T).mean() - (qm @ ep.T).mean() + (qm @ em.T).mean()
    return out


# --------------------------------------------------------------------------------------------
# the rater
# --------------------------------------------------------------------------------------------
def _check_options(options: dict[str, Any]) -> tuple[int, int, float, int, float | None, str | None]:
    """``(k, n_tasks, quantile, n_null, alpha, choices)`` of validated options, refusing alpha with choices."""
    alpha, choices = options["alpha"], options["choices"]
    if alpha is not None and choices is not None:
        raise ConfigError("rate.options.mis: set alpha or choices (α fitted to human choices), not both")
    return (
        int(options["k"]),
        int(options["n_tasks"]),
        float(options["quantile"]),
        int(options["n_null"]),
        None if alpha is None else float(alpha),
        None if choices is None else str(choices),
    )


def _resolve(ctx: RatingContext, path: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists() and (ctx.root / p).exists():
        p = ctx.root / p
    return p


@register_rater
class MisRater(Rater):
    """Machine Interpretability Score from simulated 2-AFC tasks, on the null-percentile scale."""

    name = "mis"
    description = "Machine Interpretability Score: simulated 2-AFC tasks from activation quantiles, null percentile"
    needs = frozenset({"activations", "dataset", "embedder"})
    components = ()
    scale = "null_percentile"
    raw_statistic = "mis"
    raw_direction = "higher"

    class Options(RaterOptions):
        """Options of ``mis`` (``rate.options.mis``)."""

        n_tasks: int = option(20, "tasks per feature (N)", ge=1)
        k: int = option(9, "explanations per side and task (K)", ge=1)
        quantile: float = option(
            0.1, "fraction of the images in each pool", gt=0, le=0.5, expected="a fraction in (0, 0.5]"
        )
        alpha: float | None = option(
            None,
            f"α of the sigmoid (null: {PUBLISHED_ALPHA}, the reference code's, unless choices is given)",
            gt=0,
            allow_inf_nan=False,
            expected=f"a number > 0 (or null: {PUBLISHED_ALPHA}, or fitted to choices)",
        )
        choices: str | Path | None = option(
            None,
            "CSV of human 2-AFC choices to fit α to; exclusive with alpha",
            expected="the path of a choices CSV (or null)",
        )
        n_null: int = option(200, "null replicates", ge=2)

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        self._null: dict[tuple, np.ndarray] = {}

    # -- pieces ---------------------------------------------------------------------------
    def resolve_alpha(self, ctx: RatingContext) -> tuple[float, dict[str, Any]]:
        """α and its provenance (published, option, or fitted to ``choices``) for the meta."""
        _, _, _, _, alpha, choices = _check_options(self.options)
        if alpha is not None:
            return alpha, {"alpha": alpha, "alpha_source": "option"}
        if choices is None:
            return PUBLISHED_ALPHA, {"alpha": PUBLISHED_ALPHA, "alpha_source": "published (reference code)"}
        path = _resolve(ctx, choices)
        rows = read_choices(path)
        if len(rows) < MIN_CHOICES:
            raise DataError(f"{path}: {len(rows)} choice(s); fitting α needs at least {MIN_CHOICES}")
        n_data = len(ctx.dataset)
        for r, c in enumerate(rows, start=2):
            bad = [
                i
                for i in (c["query_plus"], c["query_minus"], *c["explanation_plus"], *c["explanation_minus"])
                if not 0 <= i < n_data
            ]
            if bad:
                raise DataError(f"{path}: row {r}: dataset index {bad[0]} outside the dataset's 0..{n_data - 1}")
        evidence = choice_evidence(rows, ctx.embed_dataset)
        correct = np.array([c["correct"] for c in rows])
        fitted, loglik = fit_alpha(evidence, correct)
        at_bound = not ALPHA_BOUNDS[0] * 1.01 < fitted < ALPHA_BOUNDS[1] / 1.01
        if at_bound:
            warnings.warn(
                f"{path}: the fitted α ({fitted:.3g}) is at the search bound: the choices are perfectly "
                "(or inversely) explained by the similarity",
                stacklevel=2,
            )
        return fitted, {
            "alpha": fitted,
            "alpha_source": f"fitted to {len(rows)} choices in {path}",
            "alpha_log_likelihood": loglik,
            "alpha_chance_log_likelihood": -len(rows) * math.log(2.0),
            "alpha_at_bound": at_bound,
            "n_choices": len(rows),
        }

    def null(self, ctx: RatingContext, n_rows: int, alpha: float, embed_rows: Any) -> np.ndarray:
        """MIS of ``n_null`` random rankings of the rows (computed once per rater instance and setting)."""
        k, n_tasks, q, n_null, _, _ = _check_options(self.options)
        key = (ctx.embedder.embedder.id, n_rows, ctx.dataset_index.tobytes(), k, n_tasks, q, n_null, alpha, self.seed)
        if key not in self._null:
            draws = [
                task_draws(
                    np.random.default_rng([self.seed, NULL_TAG, r]).permutation(n_rows).astype(np.float64),
                    (self.seed, NULL_TAG, r),
                    n_tasks,
                    k,
                    q,
                )
                for r in range(n_null)
            ]
            rows = np.unique(np.concatenate([np.concatenate([t.ravel(), b.ravel()]) for t, b in draws]))
            z = embed_rows(rows)
            self._null[key] = np.array(
                [
                    mis_probabilities(
                        task_evidence(z[np.searchsorted(rows, t)], z[np.searchsorted(rows, b)]), alpha
                    ).mean()
                    for t, b in draws
                ]
            )
        return self._null[key]

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        k, n_tasks, q, n_null, _, _ = _check_options(self.options)
        scores, dsi = ctx.scores, ctx.dataset_index
        n_rows = int(scores.shape[0])
        m = pool_size(n_rows, q)
        if m < k + 1:
            raise ConfigError(
                f"rate.options.mis: the {q:g} quantile of the {n_rows} rated images holds {m}, fewer "
                f"than k + 1 = {k + 1} images per draw; lower k or raise quantile"
            )
        alpha, alpha_meta = self.resolve_alpha(ctx)

        cache: dict[int, np.ndarray] = {}

        def embed_rows(rows: np.ndarray) -> np.ndarray:
            """Unit embeddings (float64) of sorted unique ``rows``; each image embedded once (context cache)."""
            todo = [int(r) for r in rows if int(r) not in cache]
            if todo:
                with Progress(f"mis: embedding images ({ctx.embedder.embedder.id})", len(todo), "images") as bar:
                    for start in range(0, len(todo), EMBED_CHUNK):  # chunks: the context loads a call's images at once
                        chunk = todo[start : start + EMBED_CHUNK]
                        emb = l2_normalize(ctx.embed_dataset(dsi[chunk])).astype(np.float32)
                        cache.update(zip(chunk, emb, strict=True))
                        bar.advance(len(chunk))
            return np.stack([cache[int(r)] for r in rows]).astype(np.float64)

        draws: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for f in features:
            f = int(f)
            if 0 <= f < scores.shape[1]:
                col = np.asarray(scores[:, f], dtype=np.float64)
                if np.isfinite(col).all():
                    draws[f] = task_draws(col, (self.seed, FEATURE_TAG, f), n_tasks, k, q)
        if draws:
            rows = np.unique(np.concatenate([np.concatenate([t.ravel(), b.ravel()]) for t, b in draws.values()]))
            embed_rows(rows)  # one batch for every feature
        null = self.null(ctx, n_rows, alpha, embed_rows)

        out = {name: np.full(len(features), np.nan) for name in ("mis", "task_std", "z", "p_value")}
        for i, f in enumerate(track([int(f) for f in features], "mis", len(features), "features")):
            if f not in draws:
                continue
            top, bottom = draws[f]
            rows = np.unique(np.concatenate([top.ravel(), bottom.ravel()]))
            z = embed_rows(rows)
            probs = mis_probabilities(
                task_evidence(z[np.searchsorted(rows, top)], z[np.searchsorted(rows, bottom)]), alpha
            )
            out["mis"][i] = probs.mean()
            out["task_std"][i] = probs.std(ddof=1) if n_tasks > 1 else np.nan
            _, _, out["z"][i], out["p_value"][i] = null_summary(out["mis"][i], null)
        I = null_percentile(out["mis"], null, self.raw_direction)  # noqa: E741
        meta = {
            **alpha_meta,
            "pool_size": m,
            "n_rows": n_rows,
            "null_mean": float(null.mean()),
            "null_std": float(null.std(ddof=1)),
            "similarity": f"cosine of {ctx.embedder.embedder.id} embeddings",
        }
        return self.table(features, I=I, extras=out, meta=meta)
