"""Export survey answers in the study's CSV format plus a participant column and the study's bookkeeping.

Columns: ``model,layer,neuron,question1,text_question,question3,question4,question5,question6,participant``
— the seed study's ``survey_results.csv`` layout, which ``autointerp.human_answers`` (the ``human``
rater) reads unchanged — followed by ``position`` (0-based place in the participant's sequence),
``step1_at``/``step2_at`` (UTC), ``study_id``/``session_id`` (Prolific), ``consented_at``,
``check_passed`` (the planted check: 1 = answered Q1 = 1, 0 = not, empty = not shown/answered),
``retest_delta`` (largest difference over Q1, Q3, Q4 between the first rating of a feature and its
repeat; empty = no repeat answered) and ``exclude`` (1 when the check failed or ``retest_delta`` is at
least :data:`RETEST_LIMIT`). Only complete answers (Q1–Q6) of rated features are exported; the check
and the repeat themselves only feed the flags.

Text cells a spreadsheet would run as a formula (starting ``= + - @``, tab or CR) get a leading
apostrophe (OWASP's rule; a text that starts with apostrophes before such a character gets one more),
and :func:`autointerp.human_answers.read_answers` removes it again, so the importer reads what was typed.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from autointerp.atomic import write_text
from autointerp.errors import DataError, UserError
from autointerp.survey.access import SECRET_NAME
from autointerp.survey.features import run_model_layer
from autointerp.survey.loader import default_db_path

COLUMNS = (
    "model",
    "layer",
    "neuron",
    "question1",
    "text_question",
    "question3",
    "question4",
    "question5",
    "question6",
    "participant",
)
EXTRA_COLUMNS = (
    "position",
    "step1_at",
    "step2_at",
    "study_id",
    "session_id",
    "consented_at",
    "check_passed",
    "retest_delta",
    "exclude",
)
EXPORT_COLUMNS = COLUMNS + EXTRA_COLUMNS  # what an export writes: the study's columns first
RETEST_LIMIT = 3  # a repeat differing by 3+ points on a 1-5 scale is not the same judgement
FORMULA_STARTS = frozenset("=+-@\t\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would read it as a formula (see the module doc)."""
    if text.lstrip("'")[:1] in FORMULA_STARTS:
        return "'" + text
    return text


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: complete rows, participants, answers left out because Q3–Q6 are missing,
    and participants flagged for exclusion."""

    path: Path
    rows: int
    participants: int
    incomplete: int
    excluded: int = 0


def connect_read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection to a survey database (rows as :class:`sqlite3.Row`)."""
    if not db.is_file():
        raise UserError(f"{db}: no survey database; run `autointerp survey serve` first")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise DataError(f"{db}: cannot open survey database ({exc})") from None
    con.row_factory = sqlite3.Row
    return con


def read_answers(db: str | Path) -> list[dict]:
    """All answer rows of a survey database (read-only) with the participant's record, by participant
    then position."""
    db = Path(db)
    con = connect_read_only(db)
    try:
        return [
            dict(r)
            for r in con.execute(
                "SELECT a.*, p.study_id, p.session_id, p.consented_at FROM answers a "
                "JOIN participants p USING (participant) ORDER BY a.participant, a.position"
            )
        ]
    except sqlite3.Error as exc:
        raise DataError(f"{db}: not a survey database of this version ({exc})") from None
    finally:
        con.close()


def participant_flags(rows: list[dict]) -> dict[str, dict[str, object]]:
    """Per participant: ``check_passed`` (1/0/""), ``retest_delta`` (int/"") and ``exclude`` (1/0) from
    their complete answers."""
    by_person: dict[str, list[dict]] = {}
    for r in rows:
        if r["step2_at"] is not None:
            by_person.setdefault(r["participant"], []).append(r)
    flags: dict[str, dict[str, object]] = {}
    for who, answered in by_person.items():
        check = [r for r in answered if r["kind"] == "check"]
        passed = None if not check else all(r["q1"] == 1 for r in check)
        delta = None
        for rep in (r for r in answered if r["kind"] == "retest"):
            first = next((r for r in answered if r["kind"] == "rate" and r["feature"] == rep["feature"]), None)
            if first is not None:
                delta = max(abs(first[q] - rep[q]) for q in ("q1", "q3", "q4"))
        exclude = passed is False or (delta is not None and delta >= RETEST_LIMIT)
        flags[who] = {
            "check_passed": "" if passed is None else int(passed),
            "retest_delta": "" if delta is None else delta,
            "exclude": int(exclude),
        }
    return flags


def _refuse_unsafe_target(out: Path, db: Path, overwrite: bool) -> None:
    target = out.resolve()
    guarded = {db.resolve(), *(db.resolve().with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))}
    guarded.add(db.resolve().parent / SECRET_NAME)
    if target in guarded:
        raise UserError(f"--out {out}: that is the survey's database or secret; choose another file")
    if target.is_file():
        with target.open("rb") as fh:
            if fh.read(16) == b"SQLite format 3\x00":
                raise UserError(f"--out {out}: that is an SQLite database, not an export; choose another file")
        if not overwrite:
            raise UserError(f"--out {out}: file exists; pass --overwrite to replace it")
    elif target.exists():
        raise UserError(f"--out {out}: exists and is not a file")


def export_answers(
    run: str | Path,
    out: str | Path,
    db: str | Path | None = None,
    overwrite: bool = False,
    drop_excluded: bool = False,
) -> ExportSummary:
    """Write the complete answers of ``RUN/survey/answers.sqlite`` (or ``db``) to ``out`` (atomically).

    An existing ``out`` is replaced only with ``overwrite``; the database (and its WAL files and secret)
    never. ``drop_excluded`` leaves out participants flagged ``exclude``.
    """
    run = Path(run)
    model, layer = run_model_layer(run)
    db = Path(db) if db is not None else default_db_path(run)
    out = Path(out)
    _refuse_unsafe_target(out, db, overwrite)
    rows = read_answers(db)
    flags = participant_flags(rows)
    rated = [r for r in rows if r["kind"] == "rate"]
    complete = [r for r in rated if r["step2_at"] is not None]
    excluded = {who for who, f in flags.items() if f["exclude"] == 1}
    if drop_excluded:
        complete = [r for r in complete if r["participant"] not in excluded]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in complete:
        f = flags.get(r["participant"], {"check_passed": "", "retest_delta": "", "exclude": 0})
        cells = [model, layer, r["feature"], r["q1"], r["q2"], r["q3"], r["q4"], r["q5"], r["q6"], r["participant"]]
        cells += [r["position"], r["step1_at"], r["step2_at"], r["study_id"], r["session_id"], r["consented_at"]]
        cells += [f["check_passed"], f["retest_delta"], f["exclude"]]
        writer.writerow([spreadsheet_safe(c) if isinstance(c, str) else ("" if c is None else c) for c in cells])
    write_text(out, buf.getvalue())
    return ExportSummary(
        out,
        len(complete),
        len({r["participant"] for r in complete}),
        len(rated) - len([r for r in rated if r["step2_at"] is not None]),
        len(excluded),
    )
