"""Export survey answers in the study's CSV format plus a ``participant`` column.

Columns: ``model,layer,neuron,question1,text_question,question3,question4,question5,question6,participant``
— the seed study's ``survey_results.csv`` layout, which ``autointerp.human_answers`` (the ``human``
rater) reads unchanged. Only complete answers (Q1–Q6) are exported.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from autointerp.atomic import write_text
from autointerp.errors import DataError, UserError
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


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: complete rows, participants, and answers left out because Q3–Q6 are missing."""

    path: Path
    rows: int
    participants: int
    incomplete: int


def read_answers(db: str | Path) -> list[dict]:
    """All answer rows of a survey database (read-only), by participant then position."""
    db = Path(db)
    if not db.is_file():
        raise UserError(f"{db}: no survey database; run `autointerp survey serve` first")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise DataError(f"{db}: cannot open survey database ({exc})") from None
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM answers ORDER BY participant, position")]
    except sqlite3.Error as exc:
        raise DataError(f"{db}: not a survey database ({exc})") from None
    finally:
        con.close()


def export_answers(run: str | Path, out: str | Path, db: str | Path | None = None) -> ExportSummary:
    """Write the complete answers of ``RUN/survey/answers.sqlite`` (or ``db``) to ``out`` (atomically)."""
    run = Path(run)
    model, layer = run_model_layer(run)
    rows = read_answers(db if db is not None else default_db_path(run))
    complete = [r for r in rows if r["step2_at"] is not None]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in complete:
        writer.writerow(
            [model, layer, r["feature"], r["q1"], r["q2"], r["q3"], r["q4"], r["q5"], r["q6"], r["participant"]]
        )
    out = Path(out)
    write_text(out, buf.getvalue())
    return ExportSummary(out, len(complete), len({r["participant"] for r in complete}), len(rows) - len(complete))
