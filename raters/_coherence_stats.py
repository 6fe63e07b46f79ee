"""Candidate coherence statistics of a feature's example embeddings (pure numpy; for ``clip_coherence``).

Every function takes the embeddings of one feature's examples ``emb`` (k, D) and of a pool of random dataset
images ``pool`` (n, D) — the rater's null pool — and returns one number, larger = the examples look more alike
than random images do. ``NaN`` for fewer than two examples.

Why more than the mean pairwise cosine: image embedders such as the Coral MobileNetV1 (post-ReLU pooled features)
put every image in one narrow cone, so the cosine of *any* two images is high (≈ 0.43 for random ImageNet pairs)
and is dominated by what all images share — brightness, blur, texture energy — rather than by what the examples
share with each other. Statistics that remove the common part (centring on the pool mean, per-dimension
standardisation) or that compare each similarity with the image's similarities to the pool (ranks, z-scores,
nearest neighbours) measure the shared *content*. ``benchmarks/rater_validity.py`` measures them against known
interpretable and uninterpretable directions of a real network (numbers in ``docs/validity.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from raters._similarity import l2_normalize, mean_pairwise_cosine


def _check(emb: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e, p = np.asarray(emb, dtype=np.float64), np.asarray(pool, dtype=np.float64)
    if e.ndim != 2 or p.ndim != 2 or (len(e) and len(p) and e.shape[1] != p.shape[1]):
        raise ValueError(f"expected (k, D) examples and (n, D) pool embeddings, got {e.shape} and {p.shape}")
    if len(p) < 2:
        raise ValueError(f"the pool needs at least two images, got {len(p)}")
    return e, p


def _unit_vectors(emb: np.ndarray, pool: np.ndarray, centre: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Examples and pool as unit vectors, first centred on the pool mean when ``centre``; None for < 2 examples."""
    e, p = _check(emb, pool)
    if len(e) < 2:
        return None
    if centre:
        mu = p.mean(axis=0)
        e, p = e - mu, p - mu
    return l2_normalize(e), l2_normalize(p)


def _off_diagonal_mean(g: np.ndarray) -> float:
    k = len(g)
    return float((g.sum() - np.trace(g)) / (k * (k - 1)))


def _without_members(z: np.ndarray, zp: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Pool rows (unit vectors) that are not copies of an example (cosine 1 to one of them)."""
    dup = (zp @ z.T).max(axis=1) > 1.0 - tol
    return zp[~dup] if (~dup).sum() >= 2 else zp


def raw_cosine(emb: np.ndarray, pool: np.ndarray) -> float:
    """The current statistic: mean cosine over the example pairs (the pool is not used)."""
    e, _ = _check(emb, pool)
    return mean_pairwise_cosine(e) if len(e) >= 2 else float("nan")


def centred_cosine(emb: np.ndarray, pool: np.ndarray) -> float:
    """Mean pairwise cosine after subtracting the pool's mean embedding from every example.

    Random sets score ≈ 0 whatever the embedder's common direction; a set scores high when its examples agree
    on how they differ from a typical image.
    """
    e, p = _check(emb, pool)
    if len(e) < 2:
        return float("nan")
    return mean_pairwise_cosine(e - p.mean(axis=0))


def standardised_cosine(emb: np.ndarray, pool: np.ndarray, eps: float = 1e-6) -> float:
    """Mean pairwise cosine after standardising each embedding dimension on the pool (mean 0, sd 1)."""
    e, p = _check(emb, pool)
    if len(e) < 2:
        return float("nan")
    sd = p.std(axis=0)
    return mean_pairwise_cosine((e - p.mean(axis=0)) / (sd + eps * max(float(sd.max()), 1e-12)))


def whitening(pool: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The pool's whitening: ``(mean, basis (r, D) of its span, 1/sqrt(eigenvalue + floor) per basis vector,
    1/sqrt(floor) outside the span)``; the covariance is shrunk by ``floor = shrinkage · tr(Σ)/D``."""
    p = np.asarray(pool, dtype=np.float64)
    mu = p.mean(axis=0)
    _, s, vt = np.linalg.svd(p - mu, full_matrices=False)  # eigen-decomposition in the pool's span (n ≤ D)
    ev = s**2 / max(len(p) - 1, 1)
    floor = shrinkage * float(ev.sum()) / p.shape[1] + 1e-12
    return mu, vt, 1.0 / np.sqrt(ev + floor), 1.0 / math.sqrt(floor)


def whitened_cosine(
    emb: np.ndarray,
    pool: np.ndarray,
    shrinkage: float = 0.1,
    transform: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None,
) -> float:
    """Mean pairwise cosine after whitening with the pool's covariance, shrunk towards its mean eigenvalue.

    ``transform``: :func:`whitening` of the pool, computed once for many sets (else computed here).
    """
    e, p = _check(emb, pool)
    if len(e) < 2:
        return float("nan")
    mu, vt, inside_scale, outside_scale = transform if transform is not None else whitening(p, shrinkage)
    x = e - mu
    inside = x @ vt.T  # coordinates in the pool's span
    outside = x - inside @ vt
    return mean_pairwise_cosine(np.concatenate([inside * inside_scale, outside * outside_scale], axis=1))


def contrast_cosine(emb: np.ndarray, pool: np.ndarray) -> float:
    """Mean cosine within the set minus the examples' mean cosine to the pool images."""
    e, p = _check(emb, pool)
    if len(e) < 2:
        return float("nan")
    z, zp = l2_normalize(e), l2_normalize(p)
    return _off_diagonal_mean(z @ z.T) - float((z @ _without_members(z, zp).T).mean())


def rank_coherence(emb: np.ndarray, pool: np.ndarray, centre: bool = True) -> float:
    """Mean over ordered example pairs (a, b) of the fraction of pool images less similar to a than b is.

    0.5 for a random set; 1 when every example is closer to each other example than to any pool image.
    ``centre``: cosines after subtracting the pool mean (as :func:`centred_cosine`).
    """
    unit = _unit_vectors(emb, pool, centre)
    if unit is None:
        return float("nan")
    z, zp = unit
    zp = _without_members(z, zp)
    g = z @ z.T  # (k, k)
    gp = np.sort(z @ zp.T, axis=1)  # (k, n) sorted similarities of each example to the pool
    below = np.stack([np.searchsorted(gp[i], g[i], side="left") for i in range(len(z))]) / gp.shape[1]
    return _off_diagonal_mean(below)


def z_coherence(emb: np.ndarray, pool: np.ndarray, centre: bool = True) -> float:
    """Mean over ordered example pairs (a, b) of cos(a, b) as a z-score among a's cosines to the pool."""
    unit = _unit_vectors(emb, pool, centre)
    if unit is None:
        return float("nan")
    z, zp = unit
    gp = z @ _without_members(z, zp).T
    sd = gp.std(axis=1, ddof=1, keepdims=True)
    zz = ((z @ z.T) - gp.mean(axis=1, keepdims=True)) / np.maximum(sd, 1e-12)
    return _off_diagonal_mean(zz)


def knn_coherence(emb: np.ndarray, pool: np.ndarray, n_neighbours: int = 10, centre: bool = True) -> float:
    """Share of each example's ``n_neighbours`` nearest images (among the other examples and the pool) that are
    examples, chance-corrected to 0 for a random set and 1 for a set that is its own neighbourhood."""
    unit = _unit_vectors(emb, pool, centre)
    if unit is None:
        return float("nan")
    z, zp = unit
    k = len(z)
    zp = _without_members(z, zp)
    m = min(int(n_neighbours), k - 1 + len(zp))
    sims = np.concatenate([z @ z.T, z @ zp.T], axis=1)
    np.fill_diagonal(sims[:, :k], -np.inf)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :m]
    share = float((nearest < k).mean())
    chance = (k - 1) / (k - 1 + len(zp))
    return (share - chance) / (1.0 - chance)


#: name → statistic(emb, pool); the order is the order of the benchmark's table
CANDIDATES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "raw": raw_cosine,
    "centred": centred_cosine,
    "standardised": standardised_cosine,
    "whitened": whitened_cosine,
    "contrast": contrast_cosine,
    "rank": rank_coherence,
    "z": z_coherence,
    "knn": knn_coherence,
}


def candidate_scores(sets: list[np.ndarray], pool: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each candidate statistic (``names``, default all) for every example set: ``{name: (n_sets,) array}``."""
    chosen = list(CANDIDATES) if names is None else names
    unknown = [n for n in chosen if n not in CANDIDATES]
    if unknown:
        raise ValueError(f"unknown coherence statistic {unknown[0]!r}; known: {', '.join(CANDIDATES)}")
    out = {}
    for n in chosen:
        if n == "whitened":  # the pool's whitening once, not once per set
            tr = whitening(np.asarray(pool, dtype=np.float64))
            out[n] = np.array([whitened_cosine(s, pool, transform=tr) for s in sets], dtype=np.float64)
        else:
            out[n] = np.array([CANDIDATES[n](s, pool) for s in sets], dtype=np.float64)
    return out


__all__ = [
    "CANDIDATES",
    "candidate_scores",
    "centred_cosine",
    "contrast_cosine",
    "knn_coherence",
    "rank_coherence",
    "raw_cosine",
    "standardised_cosine",
    "whitened_cosine",
    "whitening",
    "z_coherence",
]
