"""Human survey answers: parse, validate and aggregate the study's CSV format.

A survey file has the columns ``model,layer,neuron,question1,text_question,question3,question4,
question5,question6`` in any order, plus an optional ``participant`` column (the survey app adds it).
Each row is one participant's answers about one feature (``neuron`` = channel index). Answers are
on a 1..5 scale and are normalised as ``q = (Q - 1) / 4``; the interpretability score of one answer
is ``I = (q1 * q3 + q4) / 2``. Per feature, components and ``I`` are averaged over participants
(``I`` is computed per answer first, then averaged) and the spread of ``I`` is reported.

Files without a ``participant`` column count as one participant each (named after the file).
Extra columns (the survey export adds timing and attention-check columns) are ignored, except ``exclude``:
rows flagged ``exclude = 1`` (participants who failed the survey's attention checks) are left out, with a
note. A text answer
written with a leading apostrophe by the survey's spreadsheet guard (``'=...``) is read back as typed
(:func:`unescape_formula`).

Validation problems are collected over all rows and raised together as one :class:`DataError`
naming every offending ``file:row``, column, value and what was expected. The ``invalid`` policy
decides what happens to answers that are outside 1..5 or not numbers:

* ``error`` (default): raise.
* ``drop``: leave out every row with such an answer (listed in :attr:`AnswerTable.notes`).
* ``clip``: clip numeric answers into 1..5 (non-numeric answers still raise).
* ``keep``: keep numeric out-of-range answers as they are (non-numeric answers still raise).
  This reproduces the published study, whose means were computed with three answers of 0.

Duplicate ``(participant, feature)`` rows, a wrong ``layer``/``model`` and missing columns are
always errors.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autointerp.errors import DataError, UserError

QUESTION_COLUMNS = ("question1", "question3", "question4", "question5", "question6")
COMPONENTS = ("q1", "q3", "q4", "q5", "q6")
REQUIRED_COLUMNS = ("model", "layer", "neuron", *QUESTION_COLUMNS)
TEXT_COLUMN = "text_question"
PARTICIPANT_COLUMN = "participant"
EXCLUDE_COLUMN = "exclude"  # the survey export's attention-check verdict per participant (1 = leave out)
INVALID_POLICIES = ("error", "drop", "clip", "keep")
_FEATURE_ALIASES = ("neuron", "feature_ind", "feature", "channel")
SCALE_MIN, SCALE_MAX = 1.0, 5.0


def normalise_answer(answer: np.ndarray | float) -> np.ndarray | float:
    """Map a 1..5 answer to ``q = (Q - 1) / 4`` (1 → 0, 5 → 1)."""
    return (answer - 1.0) / 4.0


def interpretability(q1: np.ndarray | float, q3: np.ndarray | float, q4: np.ndarray | float) -> np.ndarray | float:
    """The study's interpretability score ``I = (q1 * q3 + q4) / 2`` from normalised answers."""
    return (q1 * q3 + q4) / 2.0


@dataclass
class AnswerTable:
    """One row per (participant, feature) answer, after validation and the ``invalid`` policy.

    ``Q1..Q6`` are the raw 1..5 answers; ``q1..q6`` the normalised ones; ``I`` the per-answer score.
    ``source`` is ``file:row`` of each answer (row 1 = header). ``notes`` lists what a ``drop`` or
    ``clip`` policy changed.
    """

    participant: np.ndarray  # str
    feature_ind: np.ndarray  # int64
    Q: dict[str, np.ndarray]  # "question1" -> raw answers (float64)
    text: np.ndarray  # str (free-text answer)
    source: np.ndarray  # str "file:row"
    model: str | None
    layer: str | None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feature_ind)

    def q(self, component: str) -> np.ndarray:
        """Normalised answers of ``component`` ('q1', 'q3', 'q4', 'q5' or 'q6')."""
        column = "question" + component[1:]
        if column not in self.Q:
            raise KeyError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")
        return normalise_answer(self.Q[column])

    @property
    def I(self) -> np.ndarray:  # noqa: E743 - the study's name for the score
        """Per-answer interpretability ``(q1 * q3 + q4) / 2``."""
        return interpretability(self.q("q1"), self.q("q3"), self.q("q4"))

    @property
    def participants(self) -> list[str]:
        """Distinct participant ids, in first-seen order."""
        return list(dict.fromkeys(self.participant.tolist()))

    def matrix(self, component: str = "I") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Participants × features matrix of a component (NaN where a participant did not answer).

        Returns ``(matrix, feature_ind, participants)`` with features sorted ascending.
        """
        values = self.I if component == "I" else self.q(component)
        features = np.unique(self.feature_ind)
        people = self.participants
        out = np.full((len(people), len(features)), np.nan)
        row = {p: i for i, p in enumerate(people)}
        out[[row[p] for p in self.participant], np.searchsorted(features, self.feature_ind)] = values
        return out, features, people


@dataclass
class HumanScores:
    """Per-feature human scores (means over participants), sorted by ``feature_ind``.

    ``q1..q6`` and ``I`` are means of normalised answers; ``I_std`` is the sample standard
    deviation of the per-answer ``I`` over participants (NaN with a single participant);
    ``n_raters`` the number of participants who rated the feature.
    """

    feature_ind: np.ndarray
    q1: np.ndarray
    q3: np.ndarray
    q4: np.ndarray
    q5: np.ndarray
    q6: np.ndarray
    I: np.ndarray  # noqa: E741
    I_std: np.ndarray
    n_raters: np.ndarray
    model: str | None
    layer: str | None
    n_participants: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.feature_ind)

    def as_columns(self) -> dict[str, np.ndarray]:
        """Columns for a ratings CSV: ``feature_ind, I, q1, q3, q4, q5, q6, I_std, n_raters``."""
        return {
            "feature_ind": self.feature_ind,
            "I": self.I,
            "q1": self.q1,
            "q3": self.q3,
            "q4": self.q4,
            "q5": self.q5,
            "q6": self.q6,
            "I_std": self.I_std,
            "n_raters": self.n_raters,
        }


# --------------------------------------------------------------------------------------------- reading


def decode_text(data: bytes) -> str:
    """Decode CSV bytes: UTF-8 (with or without BOM), else cp1252, else latin-1 (never fails)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def unescape_formula(text: str) -> str:
    """Undo the survey export's spreadsheet guard: one leading apostrophe is removed when what follows
    (after any further apostrophes) starts with ``= + - @``, tab or CR. Other texts are returned as is."""
    if text.startswith("'") and text.lstrip("'")[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return text[1:]
    return text


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _canonical_header(header: list[str]) -> dict[str, int]:
    """Map canonical column names to positions; ``neuron`` aliases are accepted."""
    positions: dict[str, int] = {}
    for i, raw in enumerate(header):
        name = raw.strip().lstrip("\ufeff").strip().lower()
        if name in _FEATURE_ALIASES:
            name = "neuron"
        positions.setdefault(name, i)
    return positions


def _parse_answer(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_feature(text: str) -> int | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value != int(value) or value < 0:
        return None
    return int(value)


def read_answers(
    paths: Sequence[str | Path] | str | Path,
    invalid: str = "error",
    layer: str | None = None,
    model: str | None = None,
) -> AnswerTable:
    """Read and validate one or more survey CSV files into an :class:`AnswerTable`.

    ``layer``/``model``, when given, are the expected values of those columns (``model`` is compared
    ignoring case and punctuation). Raises :class:`DataError` listing every offending row.
    """
    if invalid not in INVALID_POLICIES:
        raise UserError(
            f"invalid-answer policy {invalid!r} is not allowed; expected one of {', '.join(INVALID_POLICIES)}"
        )
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserError("no human answer files given")

    participants: list[str] = []
    features: list[int] = []
    answers: dict[str, list[float]] = {c: [] for c in QUESTION_COLUMNS}
    texts: list[str] = []
    sources: list[str] = []
    models: list[str] = []
    layers: list[str] = []
    problems: list[str] = []  # always errors
    bad_answers: list[tuple[str, str, str, bool]] = []  # (where, column, value, numeric) per offending answer
    bad_rows: set[int] = set()  # indices into the accumulated rows with an invalid answer
    excluded: dict[int, str] = {}  # row index -> participant, for rows the survey flagged ``exclude``
    stems = [Path(p).stem for p in paths]

    for file_no, raw_path in enumerate(paths):
        path = Path(raw_path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: human answer file not found") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read human answer file ({exc.strerror})") from None
        rows = list(csv.reader(io.StringIO(decode_text(data), newline="")))
        while rows and not any(cell.strip() for cell in rows[-1]):
            rows.pop()
        if not rows:
            raise DataError(f"{path}: empty file; expected a header with columns {','.join(REQUIRED_COLUMNS)}")
        cols = _canonical_header(rows[0])
        missing = [c for c in REQUIRED_COLUMNS if c not in cols]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; expected columns "
                f"{','.join(REQUIRED_COLUMNS)} (+ optional {TEXT_COLUMN}, {PARTICIPANT_COLUMN}); "
                f"found {','.join(c.strip() for c in rows[0])}"
            )
        has_participant = PARTICIPANT_COLUMN in cols
        # Files without a participant column: one participant per file (disambiguated if stems clash).
        default_participant = stems[file_no] if stems.count(stems[file_no]) == 1 else f"{stems[file_no]}#{file_no + 1}"
        width = max(cols.values()) + 1
        for row_no, row in enumerate(rows[1:], start=2):
            where = f"{path}:{row_no}"
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) < width:
                problems.append(f"{where} has {len(row)} fields, expected at least {width}")
                continue

            def cell(name: str, row: list[str] = row, cols: dict[str, int] = cols) -> str:
                return row[cols[name]].strip()

            feature = _parse_feature(cell("neuron"))
            if feature is None:
                problems.append(f"{where} column neuron = {cell('neuron')!r}, expected a non-negative integer")
                continue
            row_model, row_layer = cell("model"), cell("layer")
            if layer is not None and row_layer != layer:
                problems.append(f"{where} column layer = {row_layer!r}, expected {layer!r}")
            if model is not None and _canonical(row_model) != _canonical(model):
                problems.append(f"{where} column model = {row_model!r}, expected {model!r}")
            who = cell(PARTICIPANT_COLUMN) if has_participant else default_participant
            if has_participant and not who:
                problems.append(f"{where} column participant is empty, expected a participant id")
            index = len(features)
            if EXCLUDE_COLUMN in cols:
                flag = cell(EXCLUDE_COLUMN)
                if flag not in ("", "0", "1"):
                    problems.append(f"{where} column {EXCLUDE_COLUMN} = {flag!r}, expected 0, 1 or empty")
                elif flag == "1":
                    excluded[index] = who
            for column in QUESTION_COLUMNS:
                text = cell(column)
                value = _parse_answer(text)
                if value is None:
                    bad_answers.append((where, column, text, False))
                    bad_rows.add(index)
                    value = math.nan
                elif not SCALE_MIN <= value <= SCALE_MAX:
                    bad_answers.append((where, column, text, True))
                    bad_rows.add(index)
                answers[column].append(value)
            participants.append(who)
            features.append(feature)
            texts.append(unescape_formula(cell(TEXT_COLUMN)) if TEXT_COLUMN in cols else "")
            sources.append(where)
            models.append(row_model)
            layers.append(row_layer)

    # Duplicates: the same participant answering the same feature twice.
    seen: dict[tuple[str, int], str] = {}
    for who, feature, where in zip(participants, features, sources, strict=True):
        key = (who, feature)
        if key in seen:
            problems.append(f"{where} duplicates participant {who!r} feature {feature} (first at {seen[key]})")
        else:
            seen[key] = where
    if layer is None and len(set(layers)) > 1:
        problems.append(f"answers mix layers {', '.join(sorted(set(layers)))}; expected one layer (pass layer=...)")
    if model is None and len({_canonical(m) for m in models}) > 1:
        problems.append(f"answers mix models {', '.join(sorted(set(models)))}; expected one model")

    notes: list[str] = []
    fatal_answers = [b for b in bad_answers if invalid == "error" or not b[3] and invalid in ("clip", "keep")]
    if fatal_answers:
        hint = (
            ""
            if invalid != "error"
            else ("; or set the invalid-answer policy (--human-invalid, rate.human_invalid) to drop, clip or keep")
        )
        what = "answers outside 1..5 or not numbers" if invalid == "error" else "non-numeric answers"
        problems.append(
            f"{len(fatal_answers)} {what} (expected a number from 1 to 5{hint}): "
            + "; ".join(f"{w} column {c} = {v!r}" for w, c, v, _ in fatal_answers)
        )
    if problems:
        raise DataError(f"human answers: {len(problems)} problem(s): " + " | ".join(problems))

    keep = np.ones(len(features), dtype=bool)
    if excluded:  # participants who failed the survey's attention checks (survey export's exclude column)
        keep[list(excluded)] = False
        who = sorted(set(excluded.values()))
        notes.append(
            f"left out {len(excluded)} answer(s) of {len(who)} participant(s) the survey flagged exclude "
            f"(failed attention check or test-retest): {', '.join(who)}"
        )
    q_arrays = {c: np.asarray(v, dtype=np.float64) for c, v in answers.items()}
    if bad_answers:
        listing = "; ".join(f"{w} column {c} = {v!r}" for w, c, v, _ in bad_answers)
        if invalid == "drop":
            keep[list(bad_rows)] = False
            notes.append(f"dropped {len(bad_rows)} row(s) with answers outside 1..5 or not numbers: {listing}")
        elif invalid == "clip":
            for column in QUESTION_COLUMNS:
                np.clip(q_arrays[column], SCALE_MIN, SCALE_MAX, out=q_arrays[column])
            notes.append(f"clipped {len(bad_answers)} answer(s) into 1..5: {listing}")
        else:  # keep
            notes.append(f"kept {len(bad_answers)} answer(s) outside 1..5 as they are: {listing}")

    return AnswerTable(
        participant=np.asarray(participants, dtype=object)[keep].astype(str),
        feature_ind=np.asarray(features, dtype=np.int64)[keep],
        Q={c: v[keep] for c, v in q_arrays.items()},
        text=np.asarray(texts, dtype=object)[keep].astype(str),
        source=np.asarray(sources, dtype=object)[keep].astype(str),
        model=model if model is not None else (models[0] if models else None),
        layer=layer if layer is not None else (layers[0] if layers else None),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------- aggregate


def aggregate(answers: AnswerTable) -> HumanScores:
    """Average each feature's answers over participants (``I`` per answer first, then averaged)."""
    features, inverse, counts = np.unique(answers.feature_ind, return_inverse=True, return_counts=True)

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=values, minlength=len(features)) / counts

    per_answer_I = answers.I
    I_mean = mean(per_answer_I)
    squares = np.bincount(inverse, weights=(per_answer_I - I_mean[inverse]) ** 2, minlength=len(features))
    with np.errstate(invalid="ignore", divide="ignore"):
        I_std = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), np.nan)
    return HumanScores(
        feature_ind=features.astype(np.int64),
        q1=mean(answers.q("q1")),
        q3=mean(answers.q("q3")),
        q4=mean(answers.q("q4")),
        q5=mean(answers.q("q5")),
        q6=mean(answers.q("q6")),
        I=I_mean,
        I_std=I_std,
        n_raters=counts.astype(np.int64),
        model=answers.model,
        layer=answers.layer,
        n_participants=len(answers.participants),
        notes=list(answers.notes),
    )


def load_human_scores(
    paths: Sequence[str | Path] | str | Path,
    invalid: str = "error",
    layer: str | None = None,
    model: str | None = None,
) -> HumanScores:
    """Read, validate and aggregate survey CSV files into per-feature :class:`HumanScores`."""
    answers = read_answers(paths, invalid=invalid, layer=layer, model=model)
    if len(answers) == 0:
        files = ", ".join(str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths))
        raise DataError(f"{files}: no usable answers (every row was empty or dropped)")
    return aggregate(answers)
