"""Typed readers and writers of the run folder's artifacts: each artifact is read by one function and written
by one function, here (names and layout: :mod:`autointerp.runfolder` and docs/ARCHITECTURE.md).

One error policy: a missing or malformed file is a one-line :class:`~autointerp.errors.DataError` naming the
file (and the row, column or key) and what was expected; no reader skips a bad row silently. The CSV tables
(importance, ratings) are parsed once into a table that records each row problem (:class:`Issue`); stages
call ``check()`` to turn the first into that error, the analysis shows them as data notes instead (it reads
study CSVs from elsewhere too, and never drops a feature unannounced).

JSON is written through :func:`autointerp.atomic.write_json`, the one place NaN/inf become ``null``.
The importance stage's split-half reliability files are read by
:func:`autointerp.analysis.reliability.read_importance_reliability` and written by
:func:`autointerp.importance.reliability.write_reliability`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autointerp.atomic import write_json, write_text
from autointerp.errors import DataError
from autointerp.human_answers import decode_text
from autointerp.runfolder import META_JSON, RunPaths, report_paths

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.rating import ScoreTable

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "EXACT_COLUMNS",
    "STUDY_COLUMNS",
    "ImportanceTable",
    "Issue",
    "RatingsFile",
    "load_array",
    "read_ablation_curve",
    "read_activation_meta",
    "read_feature_entries",
    "read_importance",
    "read_importance_summary",
    "read_index",
    "read_json",
    "read_ratings",
    "read_report_summary",
    "read_topk",
    "write_ablation_curve",
    "write_activation_meta",
    "write_feature_entry",
    "write_importance",
    "write_importance_summary",
    "write_index",
    "write_json",
    "write_ratings",
    "write_report_summary",
]


# -- JSON ----------------------------------------------------------------------------------------------
def read_json(path: str | Path, expected: str = "a JSON object", missing: str | None = None) -> Any:
    """The content of a JSON file; a one-line :class:`DataError` when it is missing (``missing`` says what
    to do), unreadable, not JSON, or (for ``expected`` starting with "a JSON object") not an object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} not found" + (f": {missing}" if missing else f"; expected {expected}")) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); expected {expected}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected {expected}") from None
    if expected.startswith("a JSON object") and not isinstance(data, dict):
        raise DataError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


# -- activation cache ----------------------------------------------------------------------------------
def read_activation_meta(paths: RunPaths) -> dict[str, Any]:
    """``RUN/activations/meta.json``; a one-line error when the activation stage has not run."""
    return read_json(
        paths.activations_meta,
        "a JSON object with model, layer, channels, ...",
        missing=f"run `autointerp activations {paths.root}` (or `autointerp run`) first",
    )


def write_activation_meta(folder: Path, meta: Mapping[str, Any]) -> None:
    """Write the activation cache's ``meta.json`` into ``folder`` (the stage's partial folder)."""
    write_json(folder / META_JSON, dict(meta))


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """A ``.npy`` file of the activation cache (memory-mapped when ``mmap``); one-line error when missing or
    unreadable."""
    if not path.exists():
        raise DataError(f"{path} not found: the activation cache is incomplete; rerun `autointerp activations`")
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None


def write_unit(path: Path, features: Sequence[int], arrays: Mapping[str, np.ndarray]) -> None:
    """One saved unit of the importance stage (``RUN/importance/chunks/<method>/chunk_*.npz``): its features
    and result arrays, atomically."""
    from autointerp.atomic import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, features=np.asarray(list(features), np.int64), **arrays)


def read_unit(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a unit written by :func:`write_unit` (``features`` included); one-line error when unreadable."""
    import zipfile

    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable unit file ({exc}); delete it and rerun the importance stage") from None


def read_topk(paths: RunPaths) -> dict[str, np.ndarray]:
    """The arrays of ``RUN/activations/topk.npz`` (``top_idx``, ``top_val``, maybe ``bottom_idx``/``_val``)."""
    path = paths.topk
    if not path.exists():
        raise DataError(f"{path} not found: the activation cache is incomplete; rerun `autointerp activations`")
    try:
        with np.load(path) as data:
            out = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for key in ("top_idx", "top_val"):
        if key not in out:
            raise DataError(f"{path}: missing array {key!r}; expected top_idx, top_val (C, k)")
    return out


# -- examples and visualisation indexes ----------------------------------------------------------------
def read_index(path: Path, required: str | None = None) -> dict[int, dict[str, Any]]:
    """``{feature: entry}`` of ``RUN/examples/index.json`` or ``RUN/visualizations/index.json``.

    A missing file gives ``{}``, or a one-line error saying ``required`` (what to run) when given."""
    if not path.exists() and required is None:
        return {}
    data = read_json(path, "a JSON object with a 'features' mapping", missing=required)
    feats = data.get("features")
    if not isinstance(feats, dict):
        raise DataError(f"{path}: expected an object with a 'features' mapping")
    out: dict[int, dict[str, Any]] = {}
    for key, entry in feats.items():
        try:
            feature = int(key)
        except ValueError:
            feature = -1
        if feature < 0:
            raise DataError(f"{path}: feature key {key!r} is not a non-negative integer")
        if not isinstance(entry, dict):
            raise DataError(f"{path}: features.{key} is {type(entry).__name__}; expected an object")
        out[feature] = entry
    return out


def write_index(path: Path, entries: Mapping[int | str, Any], **fields: Any) -> None:
    """Write an index (``fields`` first, then ``"features"`` keyed by feature, in feature order)."""
    features = {str(f): entries[f] for f in sorted(entries, key=int)}
    write_json(path, {**fields, "features": features})


def read_feature_entries(folder: Path) -> dict[int, dict[str, Any]]:
    """``{feature: entry}`` from every feature folder (``NNNN/meta.json``) under ``folder``, in feature order.

    Feature folders are swapped in whole (``autointerp.atomic.atomic_dir``), so one without a readable entry
    is damage, not a crash's litter: a one-line error naming it."""
    out: dict[int, dict[str, Any]] = {}
    if folder.exists():
        for meta in folder.glob(f"[0-9][0-9][0-9][0-9]*/{META_JSON}"):
            if not meta.parent.name.isdigit():
                continue  # not a feature folder
            out[int(meta.parent.name)] = read_json(
                meta, "a JSON object (the feature's entry; delete its folder to redo it)"
            )
    return {f: out[f] for f in sorted(out)}


def write_feature_entry(feature_folder: Path, entry: Mapping[str, Any]) -> None:
    """Write a feature folder's ``meta.json`` (its index entry)."""
    write_json(feature_folder / META_JSON, dict(entry))


# -- CSV tables: one parser, problems recorded ---------------------------------------------------------
@dataclass
class Issue:
    """A data problem worth telling the reader about (shown in the report page and its ``summary.json``).

    Issues that share a ``cause`` (and ``kind``) are merged into one line by
    :func:`autointerp.analysis.inputs.group_issues`, listing the ``subject`` (a rater, ``importance``) and
    ``column`` each came from.
    """

    kind: str  # e.g. "duplicate", "not_numeric", "missing_feature", "coverage", "undefined", "groups"
    message: str
    features: list[int] = field(default_factory=list)
    subject: str = ""  # which rater / file it concerns
    column: str = ""  # which column, when the cause is per column
    cause: str = ""  # the same text for the same cause; empty = never merged
    subjects: list[str] = field(default_factory=list)  # filled when issues were merged

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "message": self.message, "features": self.features}
        if self.subjects:
            out["subjects"] = self.subjects
        return out


#: row problems that make a pipeline-written table unusable for a stage (``check()``)
FATAL_KINDS = ("bad_feature_id", "duplicate_conflict", "bad_value")

NAN_CAUSE = "missing or non-numeric values, left out of the statistics that need them"


def _read_rows(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header as written, stripped; ``[(line number, cells)]`` of the non-blank rows)."""
    try:
        text = decode_text(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} file ({exc.strerror})") from None
    rows = [
        (n, r) for n, r in enumerate(csv.reader(io.StringIO(text, newline="")), start=1) if any(c.strip() for c in r)
    ]
    if not rows:
        raise DataError(f"{path}: empty {what} file; expected a header row")
    header = [c.strip().lstrip("\ufeff").strip() for c in rows[0][1]]
    return header, rows[1:]


def to_float(text: str) -> float:
    """A cell as a number; NaN when it is empty or not a number."""
    try:
        return float(text.strip())
    except ValueError:
        return math.nan


def _is_number_text(text: str) -> bool:
    """Whether a cell is a number, empty, or ``nan`` (how the pipeline writes a missing value)."""
    text = text.strip()
    if not text:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_feature(text: str) -> int | None:
    value = to_float(text)
    if not math.isfinite(value) or value != int(value) or value < 0:
        return None
    return int(value)


def columns_by_feature(
    path: Path,
    header: list[str],
    rows: list[tuple[int, list[str]]],
    columns: Sequence[str],
    what: str,
    owner: str = "",
    report: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Issue], dict[str, str]]:
    """Parse numeric ``columns`` (lower-case names in ``header``) keyed by ``feature_ind``; record duplicates
    and bad values as issues.

    Missing or non-numeric values become NaN and are reported for the columns in ``report`` (default: all);
    for every reported column but the first, only at features where the first one has a value (a row
    without its main value is one cause, told once). Text that is not a number is also a ``bad_value``
    issue (fatal for stages). ``owner`` names the rater or file in notes.
    Returns ``(feature_ind, {column: values}, issues, first_text_values)``.
    """
    pos = {name: i for i, name in reversed(list(enumerate(header)))}
    issues: list[Issue] = []
    by_feature: dict[int, list[tuple[int, list[float]]]] = {}
    bad_ids: list[str] = []
    bad_values: list[str] = []
    not_numeric: dict[str, list[int]] = {}
    first_text: dict[str, str] = {}
    for row_no, row in rows:
        row = row + [""] * (len(header) - len(row))
        feature = _to_feature(row[pos["feature_ind"]])
        if feature is None:
            bad_ids.append(f"row {row_no} ({row[pos['feature_ind']]!r})")
            continue
        values = []
        for column in columns:
            text = row[pos[column]]
            value = to_float(text)
            if not _is_number_text(text):
                bad_values.append(f"row {row_no} column {column} ({text.strip()!r})")
            if not math.isfinite(value):
                not_numeric.setdefault(column, []).append(feature)
                value = math.nan
            values.append(value)
        for key in ("model", "layer"):
            if key in pos and key not in first_text and row[pos[key]].strip():
                first_text[key] = row[pos[key]].strip()
        by_feature.setdefault(feature, []).append((row_no, values))
    if bad_ids:
        issues.append(
            Issue(
                "bad_feature_id",
                f"{path}: {what} rows with an unusable feature_ind (expected a non-negative integer) were "
                f"ignored: {', '.join(bad_ids)}",
            )
        )
    if bad_values:
        issues.append(
            Issue("bad_value", f"{path}: {what} cells that are not numbers: {', '.join(bad_values[:10])}", [])
        )
    features = np.array(sorted(by_feature), dtype=np.int64)
    out = {c: np.full(len(features), np.nan) for c in columns}
    identical: list[int] = []
    conflicting: list[str] = []
    conflicting_ids: list[int] = []
    for i, feature in enumerate(features.tolist()):
        entries = by_feature[feature]
        first = np.array(entries[0][1])
        if len(entries) > 1:
            same = all(np.allclose(np.array(v), first, equal_nan=True) for _, v in entries[1:])
            if same:
                identical.append(feature)
            else:
                conflicting.append(f"{feature} (rows {', '.join(str(r) for r, _ in entries)})")
                conflicting_ids.append(feature)
                continue  # values stay NaN: we cannot tell which row is right
        for j, column in enumerate(columns):
            out[column][i] = first[j]
    if identical:
        issues.append(
            Issue(
                "duplicate",
                f"{path}: {len(identical)} feature(s) appear on several identical {what} rows; counted once",
                identical,
            )
        )
    if conflicting:
        issues.append(
            Issue(
                "duplicate_conflict",
                f"{path}: {len(conflicting)} feature(s) have conflicting "
                f"duplicate {what} rows and are left out of the statistics: "
                f"{'; '.join(conflicting)}",
                conflicting_ids,
            )
        )
    report = list(columns if report is None else report)
    primary = report[0] if report else None
    has_primary = set(features[np.isfinite(out[primary])].tolist()) if primary in out else set()
    for column in report:
        ids = sorted(set(not_numeric.get(column, [])))
        if column != primary:
            ids = [f for f in ids if f in has_primary]
        if not ids:
            continue
        label = "I" if column == "i" else column
        issues.append(
            Issue(
                "not_numeric",
                f"{path}: {len(ids)} feature(s) have a missing or non-numeric {label} "
                f"(NaN); they are left out of statistics that need it",
                ids,
                subject=owner or path.name,
                column=label,
                cause=NAN_CAUSE,
            )
        )
    return features, out, issues, first_text


def _check_issues(issues: Iterable[Issue]) -> None:
    fatal = [i for i in issues if i.kind in FATAL_KINDS]
    if fatal:
        more = f" (and {len(fatal) - 1} more problem(s))" if len(fatal) > 1 else ""
        raise DataError(fatal[0].message + more)


# -- importance tables ---------------------------------------------------------------------------------
#: importance.csv's columns: the study's four, then the method's (docs/ARCHITECTURE.md)
STUDY_COLUMNS = ["model", "layer", "feature_ind", "importance"]
EXACT_COLUMNS = STUDY_COLUMNS + [
    "correct_to_wrong", "wrong_to_correct", "mean_delta_logprob_true", "n_skipped", "n_bounded", "n_exact", "method",
]  # fmt: skip
ATTRIBUTION_COLUMNS = STUDY_COLUMNS + ["mean_delta_logprob_true", "method"]
#: continuous importance measures besides the top-k count ``importance`` (the analysis reports them too)
IMPORTANCE_MEASURES = ("mean_delta_logprob_true",)


@dataclass
class ImportanceTable:
    """An importance table (``RUN/importance/importance.csv``, ``importance_<method>.csv``, or a study CSV):
    features sorted, NaN where a value is missing; ``columns`` holds every other numeric column by its
    lower-case name (``mean_delta_logprob_true``, ``correct_to_wrong``, ...); ``issues`` the row problems."""

    path: Path
    feature_ind: np.ndarray
    importance: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    model: str | None = None
    layer: str | None = None
    issues: list[Issue] = field(default_factory=list)

    def check(self) -> ImportanceTable:
        """This table, or a one-line :class:`DataError` naming the file and the first bad row (an unusable
        ``feature_ind``, a cell that is not a number, conflicting duplicate rows)."""
        _check_issues(self.issues)
        return self

    def values(self, finite: bool = False) -> dict[int, float]:
        """``feature_ind -> importance`` (only finite values when ``finite``)."""
        return {
            int(f): float(v)
            for f, v in zip(self.feature_ind, self.importance, strict=True)
            if not finite or math.isfinite(v)
        }

    def column(self, name: str) -> np.ndarray:
        """A further numeric column; one-line error naming the file when it has none of that name."""
        if name not in self.columns:
            raise DataError(f"{self.path}: missing column {name!r} (found {', '.join(self.columns) or 'none'})")
        return self.columns[name]


def read_importance(path: str | Path, missing: str | None = None) -> ImportanceTable:
    """Parse an importance CSV (``model,layer,feature_ind,importance`` then any numeric columns).

    A missing file (``missing``: what to run), an empty file or a missing ``feature_ind``/``importance``
    column is a one-line error; row problems are recorded in ``issues`` (call :meth:`ImportanceTable.check`
    to refuse them)."""
    path = Path(path)
    if missing is not None and not path.exists():
        raise DataError(f"{path} not found: {missing}")
    header, rows = _read_rows(path, "importance")
    header = [h.lower() for h in header]
    for required in ("feature_ind", "importance"):
        if required not in header:
            raise DataError(
                f"{path}: missing column {required!r}; expected columns model,layer,feature_ind,importance "
                f"(found {','.join(header)})"
            )
    other = [
        h
        for i, h in enumerate(header)
        if h not in ("model", "layer", "feature_ind", "importance", "method")
        and (h in IMPORTANCE_MEASURES or any(i < len(r) and r[i].strip() and _is_number_text(r[i]) for _, r in rows))
    ]
    other = list(dict.fromkeys(other))
    report = ["importance", *(c for c in IMPORTANCE_MEASURES if c in other)]
    features, cols, issues, text = columns_by_feature(
        path, header, rows, ["importance", *other], "importance", owner="importance", report=report
    )
    return ImportanceTable(
        path, features, cols["importance"], {c: cols[c] for c in other}, text.get("model"), text.get("layer"), issues
    )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_importance(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write an importance table: the study's columns, then the method's (exact/naive, attribution, or none);
    floats with 6 significant digits, so identical inputs give identical bytes."""
    first = rows[0] if rows else {}
    columns = (
        EXACT_COLUMNS
        if "correct_to_wrong" in first
        else ATTRIBUTION_COLUMNS
        if "mean_delta_logprob_true" in first
        else STUDY_COLUMNS
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_fmt(r[c]) for c in columns])
    write_text(path, buf.getvalue())


def read_importance_summary(paths: RunPaths) -> dict[str, Any]:
    """``RUN/importance/summary.json`` (per method), ``{}`` when absent."""
    path = paths.importance_summary
    if not path.exists():
        return {}
    return read_json(path, "a JSON object keyed by importance method")


def write_importance_summary(paths: RunPaths, summaries: Mapping[str, Any]) -> None:
    """Write ``RUN/importance/summary.json``."""
    write_json(paths.importance_summary, dict(summaries))


def write_ablation_curve(path: Path, table: Sequence[Mapping[str, Any]]) -> None:
    """Write ``cumulative_ablation.csv`` (``n_ablated``, accuracies, ...; one row per step)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(table[0].keys()))
    for r in table:
        writer.writerow([_fmt(v) for v in r.values()])
    write_text(path, buf.getvalue())


def read_ablation_curve(path: str | Path) -> dict[str, list[float]] | None:
    """``cumulative_ablation.csv`` (``n_ablated, top1, top5, ...``) as columns, or None when absent; a
    cell that is not a number is a one-line error naming the row."""
    path = Path(path)
    if not path.exists():
        return None
    header, rows = _read_rows(path, "cumulative ablation")
    header = [h.lower() for h in header]
    if "n_ablated" not in header:
        raise DataError(f"{path}: missing column 'n_ablated' (found {','.join(header)})")
    cols: dict[str, list[float]] = {h: [] for h in header}
    for row_no, row in rows:
        for h, text in zip(header, row + [""] * (len(header) - len(row)), strict=False):
            if not _is_number_text(text):
                raise DataError(f"{path}: row {row_no} column {h}: expected a number, got {text.strip()!r}")
            cols[h].append(to_float(text))
    return {h: v for h, v in cols.items() if any(math.isfinite(x) for x in v)}


# -- ratings -------------------------------------------------------------------------------------------
@dataclass
class RatingsFile:
    """``RUN/ratings/<rater>.csv`` and its ``<rater>.json`` as read: the header as written, the non-blank
    rows with their line numbers, and the JSON description (``{}`` when there is none)."""

    path: Path
    meta_path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]
    meta: dict[str, Any]

    def check_ragged(self) -> RatingsFile:
        """This file, or a one-line error naming the first row whose cell count differs from the header's."""
        for row_no, row in self.rows:
            if len(row) != len(self.header):
                raise DataError(f"{self.path}: row {row_no} has {len(row)} cells, expected {len(self.header)}")
        return self


def read_ratings(path: str | Path, meta_path: str | Path | None = None) -> RatingsFile:
    """Read a ratings CSV (``feature_ind, I, components..., extras...``) and its JSON description (default:
    the ``.json`` next to it). A missing CSV, a header without ``feature_ind`` and ``I``, or a JSON that is
    not an object is a one-line error."""
    path = Path(path)
    meta_path = Path(meta_path) if meta_path is not None else path.with_suffix(".json")
    meta = (
        read_json(meta_path, "a JSON object with keys rater, higher_is_better, components")
        if meta_path.exists()
        else {}
    )
    header, rows = _read_rows(path, "ratings")
    lower = [h.lower() for h in header]
    for required in ("feature_ind", "i"):
        if required not in lower:
            name = "I" if required == "i" else required
            raise DataError(
                f"{path}: expected a header with columns feature_ind,I,<components>; missing column {name!r} "
                f"(found {','.join(header)})"
            )
    return RatingsFile(path, meta_path, header, rows, meta)


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    if value is None:
        return ""
    return str(value)


def write_ratings_csv(path: str | Path, table: ScoreTable) -> None:
    """Write a score table as CSV (atomically): feature_ind, I, components, extras; NaN as an empty cell."""
    from autointerp.atomic import atomic_path

    cols = [(name, table.column(name)) for name in table.columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([name for name, _ in cols])
        for i in range(len(table)):
            writer.writerow([_cell(values[i]) for _, values in cols])


def write_ratings(paths: RunPaths, rater: str, table: ScoreTable, meta: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``RUN/ratings/<rater>.csv`` then ``<rater>.json``; returns both paths."""
    csv_path, json_path = paths.rating_csv(rater), paths.rating_json(rater)
    write_ratings_csv(csv_path, table)
    write_json(json_path, dict(meta))
    return csv_path, json_path


def rating_files(paths: RunPaths) -> list[Path]:
    """Every ``RUN/ratings/<rater>.csv``, sorted by name."""
    return sorted(paths.ratings.glob("*.csv")) if paths.ratings.is_dir() else []


# -- report --------------------------------------------------------------------------------------------
def write_report_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    """Write a report folder's ``summary.json`` (NaN/inf as null)."""
    write_json(report_paths(folder)[1], dict(summary))


def read_report_summary(folder: Path) -> dict[str, Any]:
    """A report folder's ``summary.json``."""
    return read_json(report_paths(folder)[1], "a JSON object (the report's summary)", missing="run `autointerp report`")
