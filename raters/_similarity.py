"""Pure numpy helpers shared by the similarity raters: cosine statistics, null sets, calibration."""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args

import numpy as np
from pydantic import BeforeValidator

from autointerp.rating import RaterOptions, option

CalibrationName = Literal["percentile", "ecdf", "z"]
CALIBRATIONS: tuple[str, ...] = get_args(CalibrationName)
RANGE_REMOVED = (
    "'range' was removed: it tied every feature below the null median at 0 and was not comparable across raters; "
    "use 'percentile' (the default)"
)


def _refuse_range(value: object) -> object:
    if value == "range":
        raise ValueError(RANGE_REMOVED)
    return value


#: The type of a similarity rater's ``calibration`` option (``'range'`` gets its own message).
CalibrationOption = Annotated[CalibrationName, BeforeValidator(_refuse_range)]


class NullSetOptions(RaterOptions):
    """Options every rater with a null of random example-sized sets shares (``n_null``, ``null_pool``,
    ``calibration``); a rater's ``Options`` subclasses it and adds its own."""

    n_null: int = option(500, "random example sets in each feature's null", ge=2)
    null_pool: int = option(256, "dataset images the random sets are drawn from", ge=2)
    calibration: CalibrationOption = option(
        "percentile", "raw statistic → [0, 1]: percentile (the common scale), ecdf or z"
    )


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, eps)


def mean_pairwise_cosine(emb: np.ndarray) -> float:
    """Mean cosine similarity over the unordered pairs of rows (NaN for fewer than two rows)."""
    n = len(emb)
    if n < 2:
        return float("nan")
    z = l2_normalize(emb)
    g = z @ z.T
    return float((g.sum() - np.trace(g)) / (n * (n - 1)))


def random_subsets(n_pool: int, k: int, n_sets: int, rng: np.random.Generator) -> np.ndarray:
    """(n_sets, k) indices into a pool of ``n_pool``; each row without repeats."""
    if k > n_pool:
        raise ValueError(f"cannot draw sets of {k} from a pool of {n_pool} images")
    keys = rng.random((n_sets, n_pool))
    return np.argsort(keys, axis=1)[:, :k]


def subset_coherence(gram: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """Mean off-diagonal entry of ``gram`` restricted to each subset (one value per row of subsets)."""
    k = subsets.shape[1]
    blocks = gram[subsets[:, :, None], subsets[:, None, :]]  # (S, k, k)
    total = blocks.sum(axis=(1, 2)) - np.trace(blocks, axis1=1, axis2=2)
    return total / (k * (k - 1))


def calibrate(value: float, null: np.ndarray, method: str = "percentile") -> float:
    """Map a raw statistic (higher = more interpretable) to [0, 1] against its null distribution.

    * ``percentile`` (default, the common scale of every rater): the null percentile of
      :func:`autointerp.calibration.null_percentile` — strictly increasing, so raw ranks are kept;
    * ``ecdf``: fraction of null values below ``value`` (ties count half; ties at 0 and 1 beyond the null);
    * ``z``: standard normal CDF of the z-score against the null.
    """
    if not np.isfinite(value):
        return float("nan")
    null = np.asarray(null, dtype=np.float64)
    if method == "percentile":
        from autointerp.calibration import null_percentile

        return float(null_percentile(value, null, "higher"))
    if method == "ecdf":
        return float(((null < value).sum() + 0.5 * (null == value).sum()) / len(null))
    if method == "z":
        sd = float(null.std(ddof=1))
        if sd <= 0:
            return float(value > null.mean())
        return 0.5 * (1.0 + math.erf((value - float(null.mean())) / sd / math.sqrt(2.0)))
    raise ValueError(f"unknown calibration {method!r}; expected one of {', '.join(CALIBRATIONS)}")


def null_summary(value: float, null: np.ndarray) -> tuple[float, float, float, float]:
    """(null mean, null std, z-score, one-sided permutation p-value (1 + #null ≥ value)/(1 + n))."""
    null = np.asarray(null, dtype=np.float64)
    mean, sd = float(null.mean()), float(null.std(ddof=1)) if len(null) > 1 else float("nan")
    if not np.isfinite(value):
        return mean, sd, float("nan"), float("nan")
    z = (value - mean) / sd if sd and sd > 0 else float("nan")
    p = (1.0 + float((null >= value).sum())) / (1.0 + len(null))
    return mean, sd, z, p
