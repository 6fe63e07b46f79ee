"""What the analysis reads: per-feature importance and each rater's scores, tolerant of bad rows.

The analysis never crashes on imperfect data and never drops a feature silently: unparsable or
NaN values become NaN, duplicated rows are merged (identical) or voided (conflicting), and each
such event is recorded as an :class:`Issue` that the report shows and ``summary.json`` lists.
Structural problems (missing file, missing ``feature_ind``/score column) raise :class:`DataError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.human_answers import AnswerTable, HumanScores
from autointerp.runfiles import (
    IMPORTANCE_MEASURES,
    Issue,
    columns_by_feature,
    read_ablation_curve,
    read_importance,
    read_ratings,
    to_float,
)

__all__ = [
    "AGREEMENT_COMPONENTS",
    "Importance",
    "Issue",
    "RaterScores",
    "align",
    "group_issues",
    "human_rater",
    "id_list",
    "read_ablation_curve",
    "read_importance_csv",
    "read_rating_csv",
]

AGREEMENT_COMPONENTS = ("q1", "q3", "q4", "I")


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


def read_importance_csv(path: str | Path) -> Importance:
    """An importance CSV (``model,layer,feature_ind,importance``; ``mean_delta_logprob_true`` is kept as a
    further measure when present, other extra columns are ignored), parsed by
    :func:`autointerp.runfiles.read_importance`; its row problems become data notes."""
    table = read_importance(path)
    extra = [c for c in IMPORTANCE_MEASURES if c in table.columns]
    return Importance(
        table.feature_ind,
        table.importance,
        table.model,
        table.layer,
        str(table.path),
        _notes(table.issues),
        {c: table.columns[c] for c in extra},
    )


def _notes(issues: list[Issue]) -> list[Issue]:
    """The row problems the analysis shows (a cell that is not a number is already a ``not_numeric`` note)."""
    return [i for i in issues if i.kind != "bad_value"]


def read_rating_csv(path: str | Path, meta_path: str | Path | None = None, name: str | None = None) -> RaterScores:
    """Read ``RUN/ratings/<rater>.csv`` (``feature_ind, I, components...``) and its JSON description."""
    file = read_ratings(path, meta_path)
    path, meta_path, meta = file.path, file.meta_path, file.meta
    header, rows = [h.lower() for h in file.header], file.rows
    # Numeric columns: I, declared components and any column holding at least one number (text extras skipped).
    declared = [str(c).lower() for c in meta.get("components", [])]

    def has_number(col: int) -> bool:
        return any(col < len(r) and math.isfinite(to_float(r[col])) for _, r in rows)

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
    features, kept, issues, _ = columns_by_feature(path, header, rows, numeric, "rating", owner=rater_name, report=used)
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
    issues = _notes(issues)
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
