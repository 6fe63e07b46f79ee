"""How noisy the importance measures are: bootstrap intervals per feature and split-half reliability.

Both measures of the exact method are sums over images: ``importance`` (the top-k count change) is the
sum of each image's flip (+1 correct→wrong, -1 wrong→correct, 0 unchanged) and
``mean_delta_logprob_true`` the mean of each image's change in true-class log-probability. The images
are an i.i.d. sample, so

* a **bootstrap over images** (resample the images with replacement, recompute each measure) gives each
  feature's standard error and 95 % percentile interval, and
* the **split-half reliability** across features (compute the measure on two random halves of the images,
  correlate the two over features, average the correlation over many random splits and step it up to the
  full sample with the Spearman–Brown formula ``2r / (1 + r)``; also the odd/even split) says how well
  the ranking of features by the measure would reproduce on another sample of images of the same size.

The unit of resampling is the image where the stage saved each pair's outcome (``method: "images"``: the
generic path's units, see :func:`load_units`), else the saved segment of images (``method: "segments"``:
a segment's tallies are sums over i.i.d. images, so resampling segments is valid too, but rough with few
segments). Segments may differ in size (the last one): every estimate is a ratio (sum over the units drawn
/ images in them), scaled to the run's image count for ``importance``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.atomic import write_json, write_text
from autointerp.runfiles import read_unit
from autointerp.runfolder import BOOTSTRAP_CSV, RELIABILITY_JSON, importance_method_csv_name

MEASURES = ("importance", "mean_delta_logprob_true")
#: random splits into halves averaged for the split-half reliability
N_SPLITS = 200
#: below this many units the bootstrap and split-half estimates are computed but flagged as rough
FEW_UNITS = 20
#: bootstrap resamples (or splits) formed at once (bounds the memory of the resampling weights)
BLOCK = 64
BOOTSTRAP_COLUMNS = ["feature_ind"] + [
    f"{m}{suffix}" for m in MEASURES for suffix in ("", "_ci_low", "_ci_high", "_se")
]  # fmt: skip
_UNIT_FILE = re.compile(r"chunk_(\d+)_(\d+)_(\d+)_images_(\d+)_(\d+)\.npz")


class UnitsUnavailable(Exception):
    """The saved units cannot give reliability estimates (the message says why)."""


@dataclass
class Units:
    """Per-unit, per-feature sums of both measures.

    ``sums[m]`` (U, F): for ``importance`` the sum of the unit's image flips, for
    ``mean_delta_logprob_true`` the sum of its images' Δ log-probabilities; ``sizes`` (U,) images per unit
    (1 for ``method == "images"``); ``point[m]`` (F,) the full-sample value as ``importance.csv`` has it."""

    method: str
    features: np.ndarray
    sizes: np.ndarray
    sums: dict[str, np.ndarray]
    point: dict[str, np.ndarray]

    @property
    def n_units(self) -> int:
        return len(self.sizes)

    @property
    def n_images(self) -> int:
        return int(self.sizes.sum())

    def estimates(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Both measures (B, F) for unit weights (B, U) (e.g. bootstrap counts or 0/1 half indicators)."""
        size = (weights @ self.sizes.astype(np.float64))[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):  # products in the sums' precision (float32 per image)
            rate = {m: (weights.astype(self.sums[m].dtype) @ self.sums[m]).astype(np.float64) / size for m in MEASURES}
        return {"importance": rate["importance"] * self.n_images, "mean_delta_logprob_true": rate[MEASURES[1]]}


# -- the statistics ------------------------------------------------------------------------------


def spearman_brown(r: float) -> float | None:
    """The reliability of a test twice as long as one with reliability ``r``: ``2r / (1 + r)``
    (None where undefined: ``r`` NaN or -1)."""
    if r is None or not math.isfinite(r) or r <= -1.0:
        return None
    return 2.0 * r / (1.0 + r)


def bootstrap(units: Units, n_boot: int, rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Per feature and measure: ``estimate`` (the full sample's), ``ci_low``/``ci_high`` (95 % percentile
    interval over ``n_boot`` resamples of the units with replacement) and ``se`` (the resamples' standard
    deviation). NaN intervals with fewer than two units."""
    u, f = units.n_units, len(units.features)
    out = {m: {"estimate": units.point[m].astype(np.float64)} for m in MEASURES}
    if u < 2 or n_boot < 2:
        for m in MEASURES:
            out[m].update({k: np.full(f, np.nan) for k in ("ci_low", "ci_high", "se")})
        return out
    draws: dict[str, list[np.ndarray]] = {m: [] for m in MEASURES}
    for start in range(0, n_boot, BLOCK):
        b = min(BLOCK, n_boot - start)
        weights = rng.multinomial(u, np.full(u, 1.0 / u), size=b).astype(np.float64)
        for m, est in units.estimates(weights).items():
            draws[m].append(est)
    for m in MEASURES:
        d = np.concatenate(draws[m])
        low, high = np.percentile(d, [2.5, 97.5], axis=0)
        out[m].update(ci_low=low, ci_high=high, se=d.std(axis=0, ddof=1))
    return out


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (NaN where a row is constant,
    up to float rounding)."""
    scale_a = np.abs(a).max(1) * np.sqrt(a.shape[1])
    scale_b = np.abs(b).max(1) * np.sqrt(b.shape[1])
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    norm_a, norm_b = np.sqrt((a * a).sum(1)), np.sqrt((b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / (norm_a * norm_b)
    r[(norm_a <= 1e-12 * scale_a) | (norm_b <= 1e-12 * scale_b)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _row_ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=1)  # average ranks for ties, as Spearman's rho


def half_correlations(units: Units, halves: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Correlations over features between the measures on ``halves`` (S, U) 0/1 indicators and on the other
    units: ``{measure: {"spearman": (S,), "pearson": (S,)}}`` (NaN where a half is constant)."""
    first = units.estimates(halves)
    second = units.estimates(1.0 - halves)
    out: dict[str, dict[str, np.ndarray]] = {}
    for m in MEASURES:
        a, b = first[m], second[m]
        out[m] = {"pearson": _row_pearson(a, b), "spearman": _row_pearson(_row_ranks(a), _row_ranks(b))}
    return out


def split_half(units: Units, n_splits: int, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """Split-half reliability of both measures (module doc): per measure, for Spearman's rho (the main
    keys) and Pearson's r (``pearson_`` keys), the mean correlation between the two halves of
    ``n_splits`` random splits of the units (``split_half_raw``) stepped up with the Spearman–Brown
    formula (``split_half_spearman_brown``: of the mean, which stays finite where single splits give r
    near -1), the 2.5–97.5 % spread of the single splits' stepped-up values
    (``split_half_spearman_brown_spread``: how much one split varies, not a confidence interval), and
    the odd/even split (``odd_even``, stepped up; ``odd_even_raw``). Splits where a half is constant
    over features are left out (``n_splits_defined``); undefined values are None, with a ``reason``."""
    u, f = units.n_units, len(units.features)
    keys = ("split_half_spearman_brown", "split_half_raw", "odd_even", "odd_even_raw")
    empty: dict[str, Any] = {"correlation": "spearman", "n_splits": n_splits, "n_splits_defined": 0}
    empty.update({k: None for k in keys}, split_half_spearman_brown_spread=None)
    empty.update({f"pearson_{k}": None for k in keys})
    if u < 2:
        return {m: {**empty, "reason": f"{u} unit(s) of images: at least 2 are needed to split"} for m in MEASURES}
    if f < 3:
        return {m: {**empty, "reason": f"{f} feature(s): at least 3 are needed to correlate"} for m in MEASURES}
    split_r: dict[str, dict[str, list[np.ndarray]]] = {m: {"spearman": [], "pearson": []} for m in MEASURES}
    for start in range(0, n_splits, BLOCK):
        s = min(BLOCK, n_splits - start)
        halves = np.zeros((s, u))
        for i in range(s):
            halves[i, rng.permutation(u)[: u // 2]] = 1.0
        for m, rs in half_correlations(units, halves).items():
            for kind, r in rs.items():
                split_r[m][kind].append(r)
    odd_even = half_correlations(units, (np.arange(u) % 2 == 0).astype(np.float64)[None])
    out: dict[str, dict[str, Any]] = {}
    for m in MEASURES:
        entry = dict(empty)
        reasons = []
        for kind in ("spearman", "pearson"):
            prefix = "" if kind == "spearman" else "pearson_"
            r = np.concatenate(split_r[m][kind])
            ok = r[np.isfinite(r)]
            if len(ok):
                entry[f"{prefix}split_half_raw"] = _num(ok.mean())
                entry[f"{prefix}split_half_spearman_brown"] = _num(spearman_brown(float(ok.mean())))
            else:
                reasons.append(f"{m} is constant over features in one half of every split ({kind})")
            if kind == "spearman":
                entry["n_splits_defined"] = len(ok)
                if len(ok):
                    low, high = np.percentile(ok, [2.5, 97.5])
                    entry["split_half_spearman_brown_spread"] = [_num(spearman_brown(low)), _num(spearman_brown(high))]
            r_oe = float(odd_even[m][kind][0])
            entry[f"{prefix}odd_even_raw"] = _num(r_oe)
            entry[f"{prefix}odd_even"] = _num(spearman_brown(r_oe))
            if not math.isfinite(r_oe):
                reasons.append(f"{m} is constant over features in the odd or the even half ({kind})")
        if reasons:
            entry["reason"] = "; ".join(reasons)
        out[m] = entry
    return out


def _num(v: float | None) -> float | None:
    """A JSON-safe float (None for None/NaN/inf), rounded to 6 significant digits."""
    if v is None or not math.isfinite(float(v)):
        return None
    return float(f"{float(v):.6g}")


def reliability(
    units: Units, n_boot: int, seed: int, n_splits: int = N_SPLITS
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``reliability.json``'s content and ``bootstrap.csv``'s columns (:data:`BOOTSTRAP_COLUMNS`) for
    ``units``; the bootstrap and the random splits draw from their own generators seeded by ``seed``,
    so the output is a function of the units, ``n_boot``, ``seed`` and ``n_splits`` alone."""
    boot_rng, split_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    boot = bootstrap(units, n_boot, boot_rng)
    measures = split_half(units, n_splits, split_rng)
    info: dict[str, Any] = {
        "method": units.method,
        "n_images": units.n_images,
        "n_units": units.n_units,
        "n_features": len(units.features),
        "n_boot": n_boot,
        "seed": seed,
        "ci": 0.95,
        "measures": measures,
    }
    if units.n_units < FEW_UNITS:
        info["warning"] = (
            f"few units ({units.n_units} {units.method}): bootstrap intervals and split-half estimates are rough"
        )
    columns: dict[str, np.ndarray] = {"feature_ind": units.features}
    for m in MEASURES:
        columns[m] = boot[m]["estimate"]
        for k in ("ci_low", "ci_high", "se"):
            columns[f"{m}_{k}"] = boot[m][k]
    return info, columns


# -- the saved units -----------------------------------------------------------------------------


def load_units(chunk_dir: Path, features: list[int], counts: dict[int, tuple[int, int]] | None = None) -> Units:
    """The exact method's saved units (``RUN/importance/chunks/exact/``, written by the stage) for
    ``features``: per image where every unit holds its pairs' outcomes (``image_flip`` and
    ``image_delta_logprob``), else per segment of images. ``counts`` (feature → (correct_to_wrong,
    wrong_to_correct) from ``importance_exact.csv``) is checked against the units' totals, so units of
    another run are never used. Raises :class:`UnitsUnavailable` saying why it cannot."""
    files: dict[tuple[int, ...], dict[tuple[int, int], Path]] = {}
    if not chunk_dir.is_dir():
        raise UnitsUnavailable(f"no saved units in {chunk_dir}")
    by_feature: dict[int, tuple[int, ...]] = {}
    for path in sorted(chunk_dir.glob("chunk_*_images_*.npz")):
        match = _UNIT_FILE.fullmatch(path.name)
        if match is None:
            continue
        a, b, n, s, e = map(int, match.groups())
        feats = tuple(int(v) for v in read_unit(path)["features"])
        if len(feats) != n or feats[0] != a or feats[-1] != b:
            raise UnitsUnavailable(f"{path}: holds features {feats[0]}..{feats[-1]}, not those its name says")
        files.setdefault(feats, {})[(s, e)] = path
        for v in feats:
            by_feature.setdefault(v, feats)
    if not files:
        raise UnitsUnavailable(f"no saved units in {chunk_dir}")
    chunks: list[tuple[int, ...]] = []
    for v in features:
        if v not in by_feature:
            raise UnitsUnavailable(f"{chunk_dir}: no saved unit holds feature {v}")
        if not chunks or chunks[-1] != by_feature[v]:
            chunks.append(by_feature[v])
    if [v for ch in chunks for v in ch] != list(features):
        raise UnitsUnavailable(f"{chunk_dir}: the saved chunks do not hold exactly the table's features")
    segments = sorted(files[chunks[0]])
    if any(sorted(files[ch]) != segments for ch in chunks):
        raise UnitsUnavailable(f"{chunk_dir}: the chunks were saved over different segments of images")
    if segments[0][0] != 0 or any(p[1] != q[0] for p, q in zip(segments, segments[1:], strict=False)):
        raise UnitsUnavailable(f"{chunk_dir}: the saved segments do not cover the images without gaps")
    n_images = segments[-1][1]
    sizes = np.array([e - s for s, e in segments], np.int64)
    seg_flip, seg_dlp, img_flip, img_dlp = [], [], [], []
    c2w_all, w2c_all, sum_dlp_all = [], [], []
    per_image = True
    for ch in chunks:
        c2w = np.zeros(len(ch), np.int64)
        w2c = np.zeros(len(ch), np.int64)
        total_dlp = np.zeros(len(ch), np.float64)
        ch_seg_flip, ch_seg_dlp, ch_img_flip, ch_img_dlp = [], [], [], []
        for s, e in segments:  # in order: the same float sums as the stage's table
            data = read_unit(files[ch][(s, e)])
            c2w += data["correct_to_wrong"]
            w2c += data["wrong_to_correct"]
            total_dlp = total_dlp + data["sum_delta_logprob"]
            ch_seg_flip.append(data["correct_to_wrong"] - data["wrong_to_correct"])
            ch_seg_dlp.append(data["sum_delta_logprob"].astype(np.float64))
            if per_image and "image_flip" in data and "image_delta_logprob" in data:
                if data["image_flip"].shape != (e - s, len(ch)):
                    raise UnitsUnavailable(f"{files[ch][(s, e)]}: image_flip has shape {data['image_flip'].shape}")
                ch_img_flip.append(data["image_flip"])
                ch_img_dlp.append(data["image_delta_logprob"])
            else:
                per_image = False
        c2w_all.append(c2w)
        w2c_all.append(w2c)
        sum_dlp_all.append(total_dlp)
        seg_flip.append(np.stack(ch_seg_flip))
        seg_dlp.append(np.stack(ch_seg_dlp))
        if per_image:
            img_flip.append(np.concatenate(ch_img_flip))
            img_dlp.append(np.concatenate(ch_img_dlp))
    c2w_t, w2c_t = np.concatenate(c2w_all), np.concatenate(w2c_all)
    if counts is not None:
        for i, v in enumerate(features):
            if v not in counts or counts[v] != (int(c2w_t[i]), int(w2c_t[i])):
                raise UnitsUnavailable(
                    f"{chunk_dir}: the saved units' counts for feature {v} differ from "
                    f"{importance_method_csv_name('exact')} "
                    "(units of another run)"
                )
    point = {
        "importance": (c2w_t - w2c_t).astype(np.float64),
        "mean_delta_logprob_true": np.concatenate(sum_dlp_all) / max(n_images, 1),
    }
    feats = np.asarray(features, np.int64)
    if per_image:
        # float32 (exact for the flips' counts): a run's (images x features) outcomes, twice, in memory
        flips = np.concatenate(img_flip, axis=1).astype(np.float32)
        if not np.array_equal(flips.sum(0, dtype=np.float64), point["importance"]):
            raise UnitsUnavailable(f"{chunk_dir}: the saved per-image flips do not add up to the counts")
        sums = {"importance": flips, "mean_delta_logprob_true": np.concatenate(img_dlp, axis=1).astype(np.float32)}
        return Units("images", feats, np.ones(n_images, np.int64), sums, point)
    sums = {
        "importance": np.concatenate(seg_flip, axis=1).astype(np.float64),
        "mean_delta_logprob_true": np.concatenate(seg_dlp, axis=1),
    }
    return Units("segments", feats, sizes, sums, point)


# -- the files -----------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return ""
    return f"{v:.6g}"


def write_reliability(importance_dir: Path, units: Units, n_boot: int, seed: int) -> dict[str, Any]:
    """Write ``bootstrap.csv`` then ``reliability.json`` (each atomically) into ``importance_dir``; returns
    the JSON content."""
    info, columns = reliability(units, n_boot, seed)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(BOOTSTRAP_COLUMNS)
    for i in range(len(units.features)):
        writer.writerow(
            [str(int(columns["feature_ind"][i]))] + [_fmt(float(columns[c][i])) for c in BOOTSTRAP_COLUMNS[1:]]
        )
    write_text(importance_dir / BOOTSTRAP_CSV, buf.getvalue())
    write_json(importance_dir / RELIABILITY_JSON, info)
    return info


def summary_line(info: dict[str, Any]) -> str:
    """One line for the console: the split-half reliabilities (Spearman–Brown) of both measures."""
    parts = []
    for m in MEASURES:
        v = info["measures"][m].get("split_half_spearman_brown")
        parts.append(f"{m} {v:.3f}" if v is not None else f"{m} undefined")
    return f"split-half reliability (Spearman-Brown, over {info['n_units']} {info['method']}): " + ", ".join(parts)
