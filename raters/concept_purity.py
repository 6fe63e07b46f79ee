"""``concept_purity``: the ground-truth answer key of a dataset with known concepts (the synthetic demo).

Not an automatic rater but a **reference**: it reads the generating concepts of every image
(``ctx.dataset.concepts``), which no real dataset has, and scores how well one concept value explains
each feature's most activating images. Its ``<rater>.json`` carries ``"reference": true``, so the
report compares every automatic rater with it the way it compares them with human answers.

Graded purity (the ``I`` column)
--------------------------------
The demo helper's purity (:func:`autointerp.demo.purity.purity`: chance-corrected share of the top-8
set showing its best concept value) is 1 for most channels of the trained demo CNN: eight images
sharing a colour is easy for a colour detector, so the answer key ties almost every feature and a
Spearman correlation with it says little. Two changes make it graded without changing what it means:

* **a deeper set** — the ``k`` (default 64) most activating images of the feature, ranked by the
  cached per-image score (``RUN/activations/scores.npy``, the same stable order the examples stage
  uses, so its first 8 are the dataset examples the raters see). A feature that stays on one concept
  value 64 images deep is purer than one that drifts after the first few;
* **every depth counts** — for a concept value ``v`` with base rate ``p_v`` (its share among the
  cached images, i.e. what a random set shows) and ``prec_r(v)`` the share of the top ``r`` images
  showing ``v``::

      G(v) = mean over r = 1..k of (prec_r(v) − p_v) / (1 − p_v)

  the chance-corrected precision averaged over every prefix of the ranking (average precision of
  ``v`` within the top ``k``, chance-corrected). Images near the top weigh more (they are in more
  prefixes), as they do for a person looking at the examples. ``I = max(0, max_v G(v))`` over all
  values of all non-constant concepts.

``I`` is 1 exactly when all ``k`` images share one concept value, 0 (or less, clipped) when the
best value shows up no more often than chance, and in between it grades how deep and how
consistently the best value holds. Ties between values break by concept order, then by value.

Extra columns: ``purity_k8`` (the demo helper's definition on the top 8, i.e. on the examples the
raters see), ``purity_topk`` (the helper's definition on the top ``k``), ``concept`` (the
best-explaining value as ``name=value``, e.g. ``colour=red``) and ``fraction`` (its share of the top ``k``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autointerp.errors import DataError, UserError
from autointerp.rating import Rater, RaterOptions, RatingContext, ScoreTable, option, register_rater

#: the set size of the demo helper's purity (the run's dataset examples)
EXAMPLES_K = 8


def encode_concepts(
    concepts: Mapping[str, Sequence[Any] | np.ndarray],
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Integer-code each non-constant concept: ``{name: (values, codes (N,), base_rate per value)}``.

    Constant concepts (one value over the images) carry no information and are left out.
    """
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    lengths = {name: len(v) for name, v in concepts.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"concept_purity: concept arrays differ in length: {lengths}")
    for name, column in concepts.items():
        values, codes, counts = np.unique(np.asarray(column), return_inverse=True, return_counts=True)
        if len(values) < 2:
            continue
        out[name] = (values, codes.reshape(-1).astype(np.int64), counts / counts.sum())
    return out


def graded_purity(
    encoded: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], ranked: Sequence[int] | np.ndarray
) -> dict[str, Any]:
    """Graded purity of a ranked image set (see the module docstring).

    ``encoded`` comes from :func:`encode_concepts`; ``ranked`` are positions into its arrays, most
    activating first. Returns ``{"purity", "concept", "value", "fraction", "per_concept"}`` where
    ``purity`` = ``max(0, max_v G(v))``, ``fraction`` the best value's share of the set and
    ``per_concept`` the best ``G`` of each concept (unclipped).
    """
    idx = np.asarray(ranked, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise DataError("concept_purity: empty ranked set")
    ranks = np.arange(1, len(idx) + 1, dtype=np.float64)[:, None]
    best: dict[str, Any] = {"purity": 0.0, "concept": None, "value": None, "fraction": 0.0, "per_concept": {}}
    best_g = -np.inf
    for name, (values, codes, base) in encoded.items():
        present = np.unique(codes[idx])  # values never shown cannot explain the set
        hits = codes[idx][:, None] == present[None, :]  # (k, V)
        precision = np.cumsum(hits, axis=0) / ranks
        p = base[present]
        g = ((precision - p) / (1.0 - p)).mean(axis=0)
        j = int(np.argmax(g))  # first maximum: lowest value code on ties
        best["per_concept"][name] = float(g[j])
        if g[j] > best_g + 1e-12:
            best_g = float(g[j])
            best.update(concept=name, value=_plain(values[present[j]]), fraction=float(hits[:, j].mean()))
    best["purity"] = max(0.0, best_g) if np.isfinite(best_g) else 0.0
    return best


def set_purity(
    encoded: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], indices: Sequence[int] | np.ndarray
) -> float:
    """The demo helper's purity (:func:`autointerp.demo.purity.purity`) of an unordered set, on encoded concepts:
    ``max(0, max_v (fraction(v) − p_v) / (1 − p_v))``."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise DataError("concept_purity: empty image set")
    best = 0.0
    for _values, codes, base in encoded.values():
        counts = np.bincount(codes[idx], minlength=len(base)) / len(idx)
        present = counts > 0
        best = max(best, float(((counts[present] - base[present]) / (1.0 - base[present])).max()))
    return best


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@register_rater
class ConceptPurityRater(Rater):
    """Reference answer key: graded, chance-corrected concept purity of each feature's top-k images."""

    name = "concept_purity"
    description = "reference answer key (datasets with known concepts, e.g. the demo): graded concept purity of top-k"
    needs = frozenset({"activations", "dataset"})
    components = ()
    scale = "answer_key"

    class Options(RaterOptions):
        """Options of ``concept_purity`` (``rate.options.concept_purity``)."""

        k: int = option(64, "most activating images per feature the purity is graded over", ge=1)

    def metadata(self) -> dict[str, Any]:
        """Marks the ratings as a reference (``"reference": true``): the report treats them as ground truth."""
        return {**super().metadata(), "reference": True, "reference_kind": "ground truth"}

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        concepts = getattr(ctx.dataset, "concepts", None)
        if not concepts:
            raise UserError(
                f"rater 'concept_purity' needs ground-truth concepts, and dataset "
                f"{getattr(ctx.dataset, 'name', type(ctx.dataset).__name__)!r} has none (only datasets "
                "with a concept table, like the synthetic demo, have them); remove it from rate.raters"
            )
        scores = ctx.scores
        rows = ctx.dataset_index
        n_concept = len(next(iter(concepts.values())))
        if len(rows) != scores.shape[0]:
            raise DataError(
                f"{ctx.paths.dataset_index}: {len(rows)} rows, but {ctx.paths.scores.name} has {scores.shape[0]}"
            )
        if len(rows) and (rows.min() < 0 or rows.max() >= n_concept):
            raise DataError(
                f"{ctx.paths.dataset_index}: index {int(rows.max())} out of range "
                f"for a concept table of {n_concept} images"
            )
        # chance = a random draw from the images that were ranked (the cached ones)
        encoded = encode_concepts({name: np.asarray(v)[rows] for name, v in concepts.items()})
        k = min(int(self.options["k"]), scores.shape[0])
        n_features = scores.shape[1]
        out: dict[str, list[Any]] = {c: [] for c in ("I", "purity_k8", "purity_topk", "concept", "fraction")}
        for f in features:
            if not 0 <= int(f) < n_features:
                raise DataError(
                    f"{ctx.paths.scores}: feature {int(f)} out of range (the cache has {n_features} channels)"
                )
            column = np.asarray(scores[:, int(f)], dtype=np.float64)
            ranked = np.argsort(-column, kind="stable")[:k]  # the activation stage's order
            res = graded_purity(encoded, ranked)
            out["I"].append(res["purity"])
            out["purity_k8"].append(set_purity(encoded, ranked[:EXAMPLES_K]))
            out["purity_topk"].append(set_purity(encoded, ranked))
            out["concept"].append("" if res["concept"] is None else f"{res['concept']}={res['value']}")
            out["fraction"].append(res["fraction"])
        extras = {
            name: np.asarray(out[name], dtype=object if name == "concept" else np.float64)
            for name in ("purity_k8", "purity_topk", "concept", "fraction")
        }
        return self.table(features, I=out["I"], extras=extras, meta={"k": k, "n_ranked_images": int(scores.shape[0])})
