"""Reading the importance stage's reliability estimates, and correcting correlations for them.

The importance stage writes ``RUN/importance/reliability.json`` (split-half reliability of ``importance``
and ``mean_delta_logprob_true`` across features) and ``bootstrap.csv`` (per-feature bootstrap intervals);
see :mod:`autointerp.importance.reliability` and ``docs/importance.md``. :func:`read_importance_reliability`
reads both; :func:`attenuation_corrected` applies Spearman's correction for attenuation to a correlation
with a measure of known reliability.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.errors import DataError
from autointerp.runfiles import read_json
from autointerp.runfolder import BOOTSTRAP_CSV, RELIABILITY_JSON

METHODS = ("images", "segments")
MEASURES = ("importance", "mean_delta_logprob_true")
#: bootstrap.csv's columns after ``feature_ind``
BOOTSTRAP_VALUE_COLUMNS = [f"{m}{suffix}" for m in MEASURES for suffix in ("", "_ci_low", "_ci_high", "_se")]


@dataclass
class ImportanceReliability:
    """What the importance stage says about the noise of its measures.

    ``method``: the unit of resampling, ``"images"`` or ``"segments"`` (saved segments of images, where the
    path kept no per-image outcomes); ``n_images``, ``n_units`` (images or segments); ``measures``: per
    measure (``importance``, ``mean_delta_logprob_true``) the JSON's dict (``split_half_spearman_brown``,
    ``split_half_raw``, ``odd_even``, ``n_splits``, the ``pearson_`` variants; None values with a
    ``reason``); ``per_feature``: ``bootstrap.csv``'s columns (``importance``, ``importance_ci_low``,
    ``importance_ci_high``, ``importance_se``, the same for ``mean_delta_logprob_true``; NaN where
    undefined), aligned with ``feature_ind``."""

    method: str
    n_images: int
    n_units: int
    measures: dict[str, dict]
    per_feature: dict[str, np.ndarray]
    feature_ind: np.ndarray
    n_boot: int | None = None
    seed: int | None = None
    warning: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def reliability(self, measure: str = "importance") -> float | None:
        """The split-half (Spearman–Brown corrected, Spearman's rho) reliability of ``measure``, or None."""
        value = self.measures.get(measure, {}).get("split_half_spearman_brown")
        return float(value) if value is not None else None


def attenuation_corrected(r: float, reliability_x: float, reliability_y: float = 1.0) -> float | None:
    """Spearman's correction for attenuation: ``r / sqrt(reliability_x * reliability_y)``, the correlation
    that ``r`` (observed between two noisy measures) would be between their noise-free versions.

    None where ``r`` or a reliability is None or not finite, or a reliability is <= 0 (undefined). The
    result is not clipped: ``|r_c| > 1`` is possible and is a sign that the reliabilities are themselves
    noisy (underestimated, e.g. split-half estimates from few images or few features), not a correlation
    beyond 1. ``reliability_y = 1`` corrects for the noise of one measure only.
    """
    values = (r, reliability_x, reliability_y)
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    if reliability_x <= 0 or reliability_y <= 0:
        return None
    return float(r) / math.sqrt(float(reliability_x) * float(reliability_y))


def read_importance_reliability(importance_dir: Path) -> ImportanceReliability | None:
    """``reliability.json`` and ``bootstrap.csv`` of ``importance_dir`` (``RUN/importance``); None when
    ``reliability.json`` is absent (the stage had no saved units to estimate from, or has not run); a
    one-line :class:`DataError` naming the file and what is wrong when either file is malformed."""
    importance_dir = Path(importance_dir)
    json_path = importance_dir / RELIABILITY_JSON
    if not json_path.exists():
        return None
    info = read_json(json_path, "a JSON object with method, n_images, n_units, measures")
    method = info.get("method")
    if method not in METHODS:
        raise DataError(f"{json_path}: 'method' is {method!r}; expected one of {', '.join(METHODS)}")
    counts = {}
    for key in ("n_images", "n_units"):
        value = info.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"{json_path}: {key!r} is {value!r}; expected a non-negative integer")
        counts[key] = value
    measures = info.get("measures")
    if not isinstance(measures, dict) or any(not isinstance(measures.get(m), dict) for m in MEASURES):
        raise DataError(f"{json_path}: 'measures' must be an object with objects for {' and '.join(MEASURES)}")
    for m in MEASURES:
        for key, value in measures[m].items():
            if key.startswith(("split_half", "odd_even", "pearson_")) and not _is_number_or_none(value, key):
                raise DataError(f"{json_path}: measures.{m}.{key} is {value!r}; expected a number or null")
    feature_ind, per_feature = _read_bootstrap(importance_dir / BOOTSTRAP_CSV)
    return ImportanceReliability(
        method=method,
        n_images=counts["n_images"],
        n_units=counts["n_units"],
        measures={m: dict(v) for m, v in measures.items() if isinstance(v, dict)},
        per_feature=per_feature,
        feature_ind=feature_ind,
        n_boot=info.get("n_boot") if isinstance(info.get("n_boot"), int) else None,
        seed=info.get("seed") if isinstance(info.get("seed"), int) else None,
        warning=info.get("warning") if isinstance(info.get("warning"), str) else None,
        extra={k: v for k, v in info.items() if k not in {"method", "n_images", "n_units", "measures"}},
    )


def _is_number_or_none(value: Any, key: str) -> bool:
    if value is None:
        return True
    if key.endswith("_spread"):
        return isinstance(value, list) and all(_is_number_or_none(v, "") for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_bootstrap(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: not found next to {RELIABILITY_JSON} (rerun `autointerp importance`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    if not rows:
        raise DataError(f"{path}: empty; expected a header row")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in ["feature_ind", *BOOTSTRAP_VALUE_COLUMNS] if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    index = {c: header.index(c) for c in ["feature_ind", *BOOTSTRAP_VALUE_COLUMNS]}
    features: list[int] = []
    values: dict[str, list[float]] = {c: [] for c in BOOTSTRAP_VALUE_COLUMNS}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: row {line} has {len(row)} fields; expected {len(header)}")
        text_f = row[index["feature_ind"]].strip()
        if not text_f.isdigit():
            raise DataError(f"{path}: row {line}: feature_ind {text_f!r} is not a non-negative integer")
        features.append(int(text_f))
        for c in BOOTSTRAP_VALUE_COLUMNS:
            cell = row[index[c]].strip()
            try:
                values[c].append(float(cell) if cell else math.nan)
            except ValueError:
                raise DataError(f"{path}: row {line}: {c} {cell!r} is not a number") from None
    if len(set(features)) != len(features):
        raise DataError(f"{path}: feature_ind values repeat")
    return np.asarray(features, np.int64), {c: np.asarray(v, np.float64) for c, v in values.items()}
