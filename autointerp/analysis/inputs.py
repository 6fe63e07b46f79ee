"""What the analysis reads: per-feature importance and each rater's scores, tolerant of bad rows.

The analysis never crashes on imperfect data and never drops a feature silently: unparsable or
NaN values become NaN, duplicated rows are merged (identical) or voided (conflicting), and each
such event is recorded as an :class:`Issue` that the report shows and ``summary.json`` lists.
Structural problems (missing file, missing ``feature_ind``/score column) raise :class:`DataError`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.errors import DataError
from autointerp.human_answers import AnswerTable, HumanScores, decode_text

AGREEMENT_COMPONENTS = ("q1", "q3", "q4", "I")


@dataclass
class Issue:
    """A data problem worth telling the reader about (shown in the page and ``summary.json``).

    Issues that share a ``cause`` (and ``kind``) are merged into one line by :func:`group_issues`,
    listing the ``subject`` (a rater, ``importance``) and ``column`` each came from.
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


def id_list(ids: Sequence[int] | np.ndarray, limit: int = 20) -> str:
    """``"1, 2, 3, … (n more)"``: feature ids for a one-line message."""
    ids = [int(i) for i in ids]
    text = ", ".join(str(i) for i in ids[:limit])
    return text + (f", … ({len(ids) - limit} more)" if len(ids) > limit else "")


def group_issues(issues: Sequence[Issue]) -> list[Issue]:
    """One issue per cause: issues with the same ``kind`` and non-empty ``cause`` become one line.

    The merged message is ``"<cause>: <subjects>: <n> feature(s) (<ids>); ..."`` where subjects
    with the same features share one entry and a subject's columns are listed in parentheses,
    e.g. ``"clip_vis_match (q1q3, q3), auto_I (q4): 1200 feature(s) (…)"``. A cause met once keeps
    its own (more detailed) message. Issues without a cause pass through unchanged, in order.
    """
    out: list[Issue | tuple[str, str]] = []
    groups: dict[tuple[str, str], list[Issue]] = {}
    for issue in issues:
        if not issue.cause:
            out.append(issue)
            continue
        key = (issue.kind, issue.cause)
        if key not in groups:
            groups[key] = []
            out.append(key)
        groups[key].append(issue)
    merged: list[Issue] = []
    for item in out:
        if isinstance(item, Issue):
            merged.append(item)
            continue
        members = groups[item]
        subjects = list(dict.fromkeys(m.subject or "?" for m in members))
        if len(members) == 1:
            one = members[0]
            merged.append(
                Issue(one.kind, one.message, list(one.features), one.subject, one.column, one.cause, subjects)
            )
            continue
        by_features: dict[tuple[int, ...], dict[str, list[str]]] = {}
        for m in members:
            owners = by_features.setdefault(tuple(sorted(set(m.features))), {})
            columns = owners.setdefault(m.subject or "?", [])
            if m.column and m.column not in columns:
                columns.append(m.column)
        parts = []
        for feats, owners in by_features.items():
            who = ", ".join(f"{o} ({', '.join(c)})" if c else o for o, c in owners.items())
            parts.append(f"{who}: {len(feats)} feature(s) ({id_list(feats)})")
        union = sorted({f for m in members for f in m.features})
        merged.append(Issue(item[0], f"{item[1]}: " + "; ".join(parts), union, "", "", item[1], subjects))
    return merged


@dataclass
class Importance:
    """Importance per feature (sorted by ``feature_ind``; NaN where unusable)."""

    feature_ind: np.ndarray
    importance: np.ndarray
    model: str | None = None
    layer: str | None = None
    source: str = ""
    issues: list[Issue] = field(default_factory=list)
    #: further importance measures of the same features (e.g. ``mean_delta_logprob_true``), when the file has them
    measures: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class RaterScores:
    """One rater's per-feature scores (sorted by ``feature_ind``; NaN where unusable).

    ``components`` holds q1/q3/q4/... when the rater has them; ``oof`` holds out-of-fold
    predictions (``<component>_oof`` columns) of calibrated raters; ``answers`` the per-answer
    table of a human rater when known (for the noise ceiling). ``is_reference`` marks a ground-truth
    answer key (``"reference": true`` in ``<rater>.json``, e.g. ``concept_purity`` on the demo): it is
    not a person, but automatic raters are compared with it as with human answers (:attr:`is_target`).
    """

    name: str
    feature_ind: np.ndarray
    I: np.ndarray  # noqa: E741
    components: dict[str, np.ndarray] = field(default_factory=dict)
    oof: dict[str, np.ndarray] = field(default_factory=dict)
    is_human: bool = False
    higher_is_better: bool = True
    calibrated: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    answers: AnswerTable | None = None
    issues: list[Issue] = field(default_factory=list)
    is_reference: bool = False

    @property
    def is_target(self) -> bool:
        """Whether automatic raters are compared with this one: a human rater or a reference answer key."""
        return self.is_human or self.is_reference

    @property
    def scale(self) -> dict[str, Any] | None:
        """The ``"scale"`` entry of ``<rater>.json`` (``{"kind": ..., "calibrated_to_human": ...}``), if any."""
        scale = self.meta.get("scale")
        return scale if isinstance(scale, dict) else None

    @property
    def scale_kind(self) -> str | None:
        """``scale["kind"]`` (e.g. ``null_percentile``, ``probability``, ``human``), None when not stated."""
        kind = (self.scale or {}).get("kind")
        return str(kind) if kind is not None else None

    def on_human_scale_out_of_fold(self, component: str) -> bool:
        """Whether ``component`` has out-of-fold predictions calibrated to the human scale.

        True when the ratings file has a ``<component>_oof`` column and the ``scale`` entry (if any)
        does not say ``"calibrated_to_human": false``. Only then are Krippendorff's alpha and the MAE
        against human answers meaningful.
        """
        if component not in self.oof or not np.isfinite(self.oof[component]).any():
            return False
        return (self.scale or {}).get("calibrated_to_human", True) is not False

    def values(self, component: str, out_of_fold: bool = False) -> np.ndarray | None:
        """Scores of ``component`` ('I', 'q1', ...), the out-of-fold ones when asked and available."""
        if out_of_fold and component in self.oof:
            return self.oof[component]
        if component == "I":
            return self.I
        return self.components.get(component)


# --------------------------------------------------------------------------------------------- CSV tables


def _read_table(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    try:
        text = decode_text(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} file ({exc.strerror})") from None
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: empty {what} file; expected a header row")
    header = [c.strip().lstrip("\ufeff").strip().lower() for c in rows[0]]
    return header, rows[1:]


def _to_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        return math.nan


def _to_feature(text: str) -> int | None:
    value = _to_float(text)
    if not math.isfinite(value) or value != int(value) or value < 0:
        return None
    return int(value)


NAN_CAUSE = "missing or non-numeric values, left out of the statistics that need them"


def _columns_by_feature(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    columns: Sequence[str],
    what: str,
    owner: str = "",
    report: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray], list[Issue], dict[str, str]]:
    """Parse numeric ``columns`` keyed by ``feature_ind``; resolve duplicates and bad values into issues.

    Missing or non-numeric values are reported for the columns in ``report`` (default: all); for
    every reported column but the first, only at features where the first one has a value (a row
    without its main value is one cause, told once). ``owner`` names the rater or file in notes.
    Returns ``(feature_ind, {column: values}, issues, first_text_values)``.
    """
    pos = {name: i for i, name in reversed(list(enumerate(header)))}
    issues: list[Issue] = []
    by_feature: dict[int, list[tuple[int, list[float]]]] = {}
    bad_ids: list[str] = []
    not_numeric: dict[str, list[int]] = {}
    first_text: dict[str, str] = {}
    for row_no, row in enumerate(rows, start=2):
        row = row + [""] * (len(header) - len(row))
        feature = _to_feature(row[pos["feature_ind"]])
        if feature is None:
            bad_ids.append(f"row {row_no} ({row[pos['feature_ind']]!r})")
            continue
        values = []
        for column in columns:
            text = row[pos[column]]
            value = _to_float(text)
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
                "bad_feature_id", f"{path}: {what} rows with an unusable feature_ind were ignored: {', '.join(bad_ids)}"
            )
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


#: continuous importance measures read from importance.csv besides the top-k count ``importance``
IMPORTANCE_MEASURES = ("mean_delta_logprob_true",)


def read_importance_csv(path: str | Path) -> Importance:
    """Read an importance CSV (``model,layer,feature_ind,importance``; ``mean_delta_logprob_true`` is
    kept as a further measure when present, other extra columns are ignored)."""
    path = Path(path)
    header, rows = _read_table(path, "importance")
    for required in ("feature_ind", "importance"):
        if required not in header:
            raise DataError(
                f"{path}: missing column {required!r}; expected columns model,layer,feature_ind,importance "
                f"(found {','.join(header)})"
            )
    extra = [c for c in IMPORTANCE_MEASURES if c in header]
    features, cols, issues, text = _columns_by_feature(
        path, header, rows, ["importance", *extra], "importance", owner="importance"
    )
    return Importance(
        features,
        cols["importance"],
        text.get("model"),
        text.get("layer"),
        str(path),
        issues,
        {c: cols[c] for c in extra},
    )


def read_rating_csv(path: str | Path, meta_path: str | Path | None = None, name: str | None = None) -> RaterScores:
    """Read ``RUN/ratings/<rater>.csv`` (``feature_ind, I, components...``) and its JSON description."""
    path = Path(path)
    meta_path = Path(meta_path) if meta_path is not None else path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(decode_text(meta_path.read_bytes()))
        except json.JSONDecodeError as exc:
            raise DataError(f"{meta_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(meta, dict):
            raise DataError(f"{meta_path}: expected a JSON object with keys rater, higher_is_better, components")
    header, rows = _read_table(path, "ratings")
    for required in ("feature_ind", "i"):
        if required not in header:
            raise DataError(
                f"{path}: missing column {required!r}; expected columns feature_ind,I,<components> "
                f"(found {','.join(header)})"
            )
    # Numeric columns: I, declared components and any column holding at least one number (text extras skipped).
    declared = [str(c).lower() for c in meta.get("components", [])]

    def has_number(col: int) -> bool:
        return any(col < len(r) and math.isfinite(_to_float(r[col])) for r in rows)

    numeric = [
        c
        for i, c in enumerate(header)
        if c not in ("feature_ind", "model", "layer") and (c == "i" or c in declared or has_number(i))
    ]
    numeric = list(dict.fromkeys(numeric))
    rater_name = name or path.stem
    # Notes on missing values: I first, then the components the analysis uses (diagnostic extras and
    # out-of-fold columns, which cover the human-rated features only, are NaN by design).
    used = ["i"] + [c for c in numeric if c != "i" and (c in declared or c in AGREEMENT_COMPONENTS)]
    features, kept, issues, _ = _columns_by_feature(
        path, header, rows, numeric, "rating", owner=rater_name, report=used
    )
    kind = str(meta.get("rater", rater_name))
    scale = meta.get("scale")
    answer_key = isinstance(scale, dict) and scale.get("kind") == "answer_key"
    is_reference = meta.get("reference") in (True, 1, "true", "True") or answer_key
    is_human = not is_reference and (kind.lower().startswith("human") or rater_name.lower().startswith("human"))
    if is_human:  # a survey covers some features only: NaN rows are coverage, reported by the analysis
        issues = [i for i in issues if i.kind != "not_numeric"]
    if "scale" in meta and not isinstance(meta["scale"], dict):
        issues.append(
            Issue(
                "bad_metadata",
                f'{meta_path}: "scale" should be an object like '
                f'{{"kind": "probability", "calibrated_to_human": false}}, got '
                f"{meta['scale']!r}; ignored",
                subject=rater_name,
            )
        )
    components = {c: v for c, v in kept.items() if c != "i" and not c.endswith("_oof")}
    oof = {("I" if c == "i_oof" else c[: -len("_oof")]): v for c, v in kept.items() if c.endswith("_oof")}
    return RaterScores(
        name=rater_name,
        feature_ind=features,
        I=kept["i"],
        components=components,
        oof=oof,
        is_human=is_human,
        is_reference=is_reference,
        higher_is_better=bool(meta.get("higher_is_better", True)),
        calibrated=bool(meta.get("calibrated", False))
        or bool(oof)
        or (isinstance(scale, dict) and scale.get("calibrated_to_human") is True),
        meta=meta,
        issues=issues,
    )


def human_rater(scores: HumanScores, answers: AnswerTable | None = None, name: str = "human") -> RaterScores:
    """Wrap aggregated survey answers as a rater."""
    issues = [Issue("human_answers", note) for note in scores.notes]
    return RaterScores(
        name=name,
        feature_ind=scores.feature_ind,
        I=scores.I,
        components={
            "q1": scores.q1,
            "q3": scores.q3,
            "q4": scores.q4,
            "q5": scores.q5,
            "q6": scores.q6,
            "i_std": scores.I_std,
            "n_raters": scores.n_raters.astype(np.float64),
        },
        is_human=True,
        meta={
            "rater": "human",
            "n_participants": scores.n_participants,
            "scale": {"kind": "human", "calibrated_to_human": True},
        },
        answers=answers,
        issues=issues,
    )


def align(features: np.ndarray, source_features: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values of ``source_features`` placed on ``features`` (NaN where a feature is absent)."""
    out = np.full(len(features), np.nan)
    pos = np.searchsorted(source_features, features)
    pos = np.clip(pos, 0, max(len(source_features) - 1, 0))
    if len(source_features):
        hit = source_features[pos] == features
        out[hit] = values[pos[hit]]
    return out


def read_ablation_curve(path: str | Path) -> dict[str, list[float]] | None:
    """``cumulative_ablation.csv`` (``n_ablated, top1, top5, ...``) as columns, or None when absent."""
    path = Path(path)
    if not path.exists():
        return None
    header, rows = _read_table(path, "cumulative ablation")
    if "n_ablated" not in header:
        raise DataError(f"{path}: missing column 'n_ablated' (found {','.join(header)})")
    cols: dict[str, list[float]] = {h: [] for h in header}
    for row in rows:
        for h, text in zip(header, row + [""] * (len(header) - len(row)), strict=False):
            cols[h].append(_to_float(text))
    return {h: v for h, v in cols.items() if any(math.isfinite(x) for x in v)}
