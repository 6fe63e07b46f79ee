"""One scale for every rater: raw statistics mapped to [0, 1] against a null distribution.

A rater's raw statistic (a mean cosine, a kernel distance, an MIS probability, ...) has its own
units, direction and chance level, so raw values cannot be compared across raters or layers. Every
built-in automatic rater reports ``I`` as the feature's **null percentile**: where its raw statistic
falls within the same statistic computed for random image sets of the same sizes from the same
dataset (the *null*), oriented so that higher is more interpretable:

* ``I ≈ 0.5``: the feature looks like random images (chance);
* ``I ≈ 0.95``: it beats 95 % of random image sets;
* between the null's smallest and largest values the map is the empirical distribution function
  with the null's sorted values at plotting positions ``(i + 0.5)/n``, linearly interpolated (ties
  in the null averaged), so it is continuous and strictly increasing;
* beyond the null's extremes a heavy tail ``(0.5/n)·(1 + x/τ)^-2`` (``x``: distance past the
  extreme, ``τ``: the null's standard deviation) continues the map, so features far beyond every
  random set keep their order (ranks, and so rank correlations and AUROC, are those of the raw
  statistic) instead of tying at 1.

Raw statistics stay in the ratings table as extra columns. A rater declares its raw statistic's
direction (``"higher"`` or ``"lower"`` is more interpretable); :func:`null_percentile` refuses any
other value, so a distance can never be used the wrong way round by accident.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIRECTIONS = ("higher", "lower")


def check_direction(direction: str, what: str = "raw statistic") -> str:
    """``direction`` if it is ``"higher"`` or ``"lower"``; a one-line ValueError otherwise."""
    if direction not in DIRECTIONS:
        raise ValueError(f"{what}: direction {direction!r} is unknown; expected 'higher' or 'lower' (is better)")
    return direction


def null_percentile(
    raw: float | Sequence[float] | np.ndarray, null: Sequence[float] | np.ndarray, direction: str = "higher"
) -> np.ndarray:
    """Map raw statistics to [0, 1] by their percentile within ``null`` (see the module docstring).

    ``raw`` may be a scalar or an array (NaN stays NaN; ±inf map to 1 or 0); ``null`` needs at least two finite values.
    ``direction`` says whether a larger raw value is more interpretable (``"higher"``) or a smaller
    one (``"lower"``, e.g. a distance). The result is strictly increasing in the oriented raw value.
    """
    check_direction(direction)
    sign = 1.0 if direction == "higher" else -1.0
    x = sign * np.asarray(raw, dtype=np.float64)
    ref = sign * np.asarray(null, dtype=np.float64).reshape(-1)
    ref = np.sort(ref[np.isfinite(ref)])
    n = len(ref)
    if n < 2:
        raise ValueError(f"a null distribution needs at least 2 finite values, got {n}")
    values, first = np.unique(ref, return_index=True)
    counts = np.diff(np.append(first, n))
    positions = (first + (counts - 1) / 2.0 + 0.5) / n  # mid plotting position of each tied run
    tau = float(ref.std(ddof=1))
    if not tau > 0:
        tau = max(abs(float(ref[0])), 1.0) * 1e-6
    out = np.full(x.shape, np.nan)
    ok = ~np.isnan(x)  # ±inf lie beyond every null value: I = 1 or 0
    xv = x[ok]
    res = np.empty_like(xv)
    lo, hi = xv < values[0], xv > values[-1]
    mid = ~(lo | hi)
    if len(values) == 1:
        res[mid] = 0.5
    else:
        res[mid] = np.interp(xv[mid], values, positions)
    # Tails: continuous at the extremes (which sit at positions[0] / positions[-1]) and strictly monotone beyond.
    res[hi] = 1.0 - (1.0 - positions[-1]) * (1.0 + (xv[hi] - values[-1]) / tau) ** -2
    res[lo] = positions[0] * (1.0 + (values[0] - xv[lo]) / tau) ** -2
    out[ok] = res
    return out if out.ndim else out[()]
