"""Ground-truth concept purity of a set of images from the synthetic world: the demo's answer key.

Every synthetic image carries its generating concepts (shape, colour, texture, ...). For a set
``S`` of ``k`` images (e.g. a feature's top-k dataset examples) and one concept value ``(c, v)``:

* ``fraction(c, v)`` — share of ``S`` whose concept ``c`` equals ``v``;
* ``base_rate(c, v)`` — share of the *whole dataset* with ``c == v`` (what a random set shows);
* ``score(c, v) = (fraction − base_rate) / (1 − base_rate)`` — chance-corrected: 1 when every
  image in ``S`` has ``c == v``, 0 when ``S`` shows ``v`` no more often than the dataset does,
  negative when less often.

The **purity** of ``S`` is ``max`` over all ``(c, v)`` of ``score(c, v)``: how well one concept value
explains the set. It lies in ``[0, 1]`` (for every concept some value has ``fraction ≥ base_rate``)
and is 1 exactly when all images share a value of some concept. Concepts constant across the
dataset (``base_rate = 1``) carry no information and are skipped. A feature that fires on red
circles scores 1 (via ``colour=red`` and via ``shape=circle``); a feature whose top examples are a
random draw scores near ``max_v (1/k − p_v)/(1 − p_v)``-ish noise, typically 0.1–0.3 for k = 8.

Indices are positions in the concept arrays, i.e. *dataset* indices (map cached-activation
indices through ``activations/dataset_index.npy`` first).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from autointerp.errors import DataError


def _check(concepts: dict[str, np.ndarray], indices: np.ndarray) -> int:
    if not concepts:
        raise DataError("purity: the dataset has no concept table (only the synthetic demo dataset has one)")
    lengths = {name: len(values) for name, values in concepts.items()}
    n = next(iter(lengths.values()))
    if len(set(lengths.values())) != 1:
        raise DataError(f"purity: concept arrays differ in length: {lengths}")
    if indices.size == 0:
        raise DataError("purity: empty set of image indices")
    if indices.min() < 0 or indices.max() >= n:
        raise DataError(
            f"purity: image index {int(indices.max() if indices.max() >= n else indices.min())} "
            f"out of range for a dataset of {n} images"
        )
    return n


def concept_scores(concepts: dict[str, np.ndarray], indices: Sequence[int] | np.ndarray) -> list[dict]:
    """Every ``(concept, value)`` present in the set, with fraction, base rate and chance-corrected score.

    Sorted by score (descending), then by concept order and value, so ties break deterministically.
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    _check(concepts, idx)
    rows = []
    for order, (name, values) in enumerate(concepts.items()):
        values = np.asarray(values)
        all_values, all_counts = np.unique(values, return_counts=True)
        if len(all_values) < 2:
            continue  # constant concept: no information
        base = dict(zip(all_values.tolist(), (all_counts / len(values)).tolist(), strict=True))
        set_values, set_counts = np.unique(values[idx], return_counts=True)
        for value, count in zip(set_values.tolist(), set_counts.tolist(), strict=True):
            fraction = count / len(idx)
            p = base[value]
            rows.append(
                {
                    "concept": name,
                    "value": value,
                    "fraction": fraction,
                    "base_rate": p,
                    "score": (fraction - p) / (1.0 - p),
                    "_order": order,
                }
            )
    rows.sort(key=lambda r: (-r["score"], r["_order"], str(r["value"])))
    for r in rows:
        del r["_order"]
    return rows


def purity(concepts: dict[str, np.ndarray], indices: Sequence[int] | np.ndarray) -> float:
    """Chance-corrected concept purity of the image set ``indices`` (see the module docstring), in [0, 1]."""
    rows = concept_scores(concepts, indices)
    return max(0.0, rows[0]["score"]) if rows else 0.0


def best_concept(concepts: dict[str, np.ndarray], indices: Sequence[int] | np.ndarray) -> dict:
    """The best-explaining concept value: ``{"purity", "concept", "value", "fraction", "base_rate",
    "per_concept": {name: best score of that concept}}``."""
    rows = concept_scores(concepts, indices)
    per_concept: dict[str, float] = {}
    for r in rows:  # rows are sorted by score, so the first per concept is its best
        per_concept.setdefault(r["concept"], r["score"])
    if not rows:
        return {"purity": 0.0, "concept": None, "value": None, "fraction": 0.0, "base_rate": 0.0, "per_concept": {}}
    top = rows[0]
    return {
        "purity": max(0.0, top["score"]),
        "concept": top["concept"],
        "value": top["value"],
        "fraction": top["fraction"],
        "base_rate": top["base_rate"],
        "per_concept": {name: per_concept.get(name, 0.0) for name in concepts if name in per_concept},
    }


def purity_table(concepts: dict[str, np.ndarray], topk_idx: np.ndarray) -> dict[int, dict]:
    """Purity of each feature's top examples: ``topk_idx`` (C, k) dataset indices, row = feature.

    Returns ``{feature_ind: best_concept(...)}`` (see :func:`best_concept`).
    """
    topk = np.asarray(topk_idx)
    if topk.ndim != 2:
        raise DataError(f"purity_table: expected top-k indices of shape (features, k), got {topk.shape}")
    return {c: best_concept(concepts, topk[c]) for c in range(topk.shape[0])}


def planted_coherent_set(concepts: dict[str, np.ndarray], k: int = 8, seed: int = 0) -> tuple[np.ndarray, dict]:
    """``k`` dataset indices sharing as many concepts as possible, and the shared ``{concept: value}``.

    Tries all concepts first, then every subset of one fewer concept, and so on; among the subsets of
    the largest size for which some concept combination has at least ``k`` images, it picks one
    (subset, combination) pair and ``k`` of its images at random with ``seed``. Deterministic in
    ``seed``. The set's purity is 1 whenever at least one concept is shared.
    """
    names = list(concepts)
    n = _check(concepts, np.arange(1))
    if not 1 <= k <= n:
        raise DataError(f"planted_coherent_set: k must be between 1 and the dataset size {n}, got {k}")
    rng = np.random.default_rng(seed)
    columns = {name: np.asarray(concepts[name]) for name in names}
    for size in range(len(names), 0, -1):
        candidates: list[tuple[tuple[str, ...], tuple, np.ndarray]] = []
        for subset in combinations(names, size):
            keys = np.stack([np.unique(columns[name], return_inverse=True)[1] for name in subset], axis=1)
            combos, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
            for combo_id in np.flatnonzero(counts >= k):
                members = np.flatnonzero(inverse.ravel() == combo_id)
                values = tuple(columns[name][members[0]] for name in subset)
                candidates.append((subset, values, members))
        if candidates:
            subset, values, members = candidates[int(rng.integers(len(candidates)))]
            chosen = np.sort(rng.choice(members, size=k, replace=False)).astype(np.int64)
            return chosen, {name: _plain(v) for name, v in zip(subset, values, strict=True)}
    chosen = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)  # k > every value count
    return chosen, {}


def planted_coherent_indices(concepts: dict[str, np.ndarray], k: int = 8, seed: int = 0) -> np.ndarray:
    """``k`` dataset indices of a planted, perfectly coherent "feature" (see :func:`planted_coherent_set`)."""
    return planted_coherent_set(concepts, k, seed)[0]


def random_indices(concepts: dict[str, np.ndarray], k: int = 8, seed: int = 0) -> np.ndarray:
    """``k`` distinct dataset indices drawn uniformly with ``seed``: an incoherent control set."""
    n = _check(concepts, np.arange(1))
    if not 1 <= k <= n:
        raise DataError(f"random_indices: k must be between 1 and the dataset size {n}, got {k}")
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)).astype(np.int64)


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
