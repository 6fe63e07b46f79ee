"""The study's group comparison: the most important features vs the features around the median.

Features are sorted by importance. The *top* group is the ``top_n`` highest; the *middle* group is
the ``middle_n`` consecutive positions centred on the median position, i.e. sorted positions
``(n - middle_n) // 2 .. (n - middle_n) // 2 + middle_n - 1`` (for the study's 832 features:
positions 396..435, mean importance 13.025 — the published 13.0).

Ties: which importance *values* a group holds is fixed by those positions, but when a boundary
value is shared by more features than the group has slots for, the choice between them is
arbitrary. We then prefer features that have more ratings (a human survey covers only the
features the study picked), then lower ``feature_ind``; with the study's own data this selects
exactly the 80 surveyed features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Groups:
    """Feature ids of the two groups and notes on how they were chosen."""

    top: np.ndarray
    middle: np.ndarray
    top_n: int
    middle_n: int
    notes: list[str] = field(default_factory=list)


def _fill_window(
    features: np.ndarray, importance: np.ndarray, priority: np.ndarray, start: int, stop: int, notes: list[str]
) -> np.ndarray:
    """Features at sorted positions ``start:stop``, resolving boundary ties by priority."""
    order = np.lexsort((features, importance))
    window_values = importance[order[start:stop]]
    chosen: list[int] = []
    for value in np.unique(window_values):
        slots = int(np.count_nonzero(window_values == value))
        candidates = np.flatnonzero(importance == value)
        if len(candidates) > slots:
            ranked = candidates[np.lexsort((features[candidates], -priority[candidates]))]
            pick = ranked[:slots]
            notes.append(
                f"{len(candidates)} features share importance {value:g} at a group boundary; "
                f"{slots} chosen preferring rated features"
            )
        else:
            pick = candidates
        chosen.extend(pick.tolist())
    return np.sort(features[np.array(chosen, dtype=np.int64)]) if chosen else np.array([], dtype=np.int64)


def select_groups(
    features: np.ndarray,
    importance: np.ndarray,
    top_n: int = 40,
    middle_n: int = 40,
    priority: np.ndarray | None = None,
) -> Groups:
    """Choose the top and middle groups among features with a finite importance.

    ``priority`` (same length as ``features``, e.g. the number of raters that scored each feature)
    breaks ties at group boundaries. When there are too few features for two disjoint groups of
    the asked sizes (``2 * top_n + middle_n > n``), both are shrunk proportionally and a note says so.
    """
    features = np.asarray(features, dtype=np.int64)
    importance = np.asarray(importance, dtype=np.float64)
    priority = np.zeros(len(features)) if priority is None else np.asarray(priority, dtype=np.float64)
    ok = np.isfinite(importance)
    features, importance, priority = features[ok], importance[ok], priority[ok]
    n = len(features)
    notes: list[str] = []
    top, middle = top_n, middle_n
    if 2 * top + middle > n:
        scale = n / (2 * top + middle)
        top, middle = int(top * scale), int(middle * scale)
        notes.append(
            f"only {n} features with an importance: groups shrunk from {top_n}/{middle_n} to {top}/{middle} "
            "so that the top group and the median group do not overlap"
        )
    if top == 0 or middle == 0:
        empty = np.array([], dtype=np.int64)
        notes.append(f"only {n} features with an importance: too few for a group comparison")
        return Groups(empty, empty, top, middle, notes)
    start = (n - middle) // 2
    middle_ids = _fill_window(features, importance, priority, start, start + middle, notes)
    top_ids = _fill_window(features, importance, priority, n - top, n, notes)
    return Groups(top_ids, middle_ids, top, middle, notes)
