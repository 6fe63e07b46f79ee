"""Survey storage: one SQLite database (WAL mode) per survey, one row per (participant, feature).

Every write is one ``BEGIN IMMEDIATE`` transaction that re-checks the participant's state before
writing, so concurrent requests (several participants, or one participant's double click) are
serialised by SQLite: an answer is never lost, never duplicated, and never stored out of order.
The table's primary key ``(participant, feature)`` and its CHECK constraints guard the same rules
a second time inside the database itself.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from autointerp.errors import DataError, UserError
from autointerp.survey.features import participant_order
from autointerp.survey.questions import LIKERT_MAX, LIKERT_MIN, check_phrases

PARTICIPANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SCHEMA_VERSION = "1"

_LIKERT = f"BETWEEN {LIKERT_MIN} AND {LIKERT_MAX}"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    participant TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    participant TEXT NOT NULL REFERENCES participants(participant),
    feature INTEGER NOT NULL,
    position INTEGER NOT NULL,
    q1 INTEGER NOT NULL CHECK (q1 {_LIKERT}),
    q2 TEXT NOT NULL,
    q3 INTEGER CHECK (q3 {_LIKERT}),
    q4 INTEGER CHECK (q4 {_LIKERT}),
    q5 INTEGER CHECK (q5 {_LIKERT}),
    q6 INTEGER CHECK (q6 {_LIKERT}),
    step1_at TEXT NOT NULL,
    step2_at TEXT,
    PRIMARY KEY (participant, feature),
    UNIQUE (participant, position),
    CHECK ((q3 IS NULL) = (step2_at IS NULL) AND (q4 IS NULL) = (step2_at IS NULL)
           AND (q5 IS NULL) = (step2_at IS NULL) AND (q6 IS NULL) = (step2_at IS NULL))
);
"""


class AnswerRejected(Exception):
    """A submission that breaks the protocol; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class ParticipantState:
    """Where a participant stands: their blinded order and what they answered so far."""

    participant: str
    order: list[int]
    answers: dict[int, dict] = field(default_factory=dict)  # feature -> stored row

    @property
    def done(self) -> int:
        """Number of features fully answered (Q1–Q6)."""
        return sum(1 for a in self.answers.values() if a["step2_at"] is not None)

    @property
    def current(self) -> int | None:
        """The feature to answer next (None when finished)."""
        for f in self.order:
            row = self.answers.get(f)
            if row is None or row["step2_at"] is None:
                return f
        return None

    @property
    def step(self) -> int | None:
        """1 = Q1–Q2 due for :attr:`current`, 2 = Q3–Q6 due, None = finished."""
        f = self.current
        if f is None:
            return None
        return 1 if f not in self.answers else 2


def check_participant(participant: str) -> str:
    """Validate a participant id; returns it. Raises :class:`AnswerRejected` (400)."""
    if not isinstance(participant, str) or not PARTICIPANT_RE.fullmatch(participant):
        raise AnswerRejected(
            400, "participant id: 1-64 characters, letters, digits and _ . @ - (starting with a letter or digit)"
        )
    return participant


def check_likert(name: str, value: object) -> int:
    """Validate one 1–5 answer; returns it. Raises :class:`AnswerRejected` (422)."""
    if type(value) is not int or not LIKERT_MIN <= value <= LIKERT_MAX:
        raise AnswerRejected(422, f"{name}: expected an integer from {LIKERT_MIN} to {LIKERT_MAX}, got {value!r}")
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class SurveyStore:
    """The answers of one survey (a fixed feature set and seed) in a SQLite file.

    Opening an existing database checks it belongs to the same survey: answers collected for one
    feature set are never mixed with another (use another ``--db`` for a new survey).
    """

    def __init__(
        self,
        path: str | Path,
        features: Sequence[int],
        seed: int = 0,
        groups: dict[int, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.features = sorted(int(f) for f in features)
        if not self.features:
            raise UserError("survey: no features to survey")
        self._feature_set = frozenset(self.features)
        self.seed = int(seed)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.path.parent}: cannot create survey folder ({exc.strerror})") from None
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DataError(f"{self.path}: SQLite cannot use WAL mode here (got {mode!r}); use a local disk")
            con.executescript(SCHEMA)
            self._check_meta(con, groups or {})

    # -- connections -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DataError(f"{self.path}: cannot open survey database ({exc})") from None
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout = 30000")
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA synchronous = FULL")  # an acknowledged answer survives a power cut
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One serialised write transaction (``BEGIN IMMEDIATE``); rolled back on any error."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _check_meta(self, con: sqlite3.Connection, groups: dict[int, str]) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            meta = {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}
            n_answers = con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            want = {"features": json.dumps(self.features), "seed": str(self.seed)}
            if n_answers and meta.get("features") is not None:
                for key, value in want.items():
                    if meta.get(key) != value:
                        raise UserError(
                            f"{self.path}: this survey database holds {n_answers} answers for a different {key} "
                            f"({meta.get(key)} instead of {value}); serve with the same options or use another --db"
                        )
            want.update(
                schema=SCHEMA_VERSION,
                groups=json.dumps({str(k): v for k, v in sorted(groups.items())}),
            )
            con.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(want.items()))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # -- reads -------------------------------------------------------------------------------------
    def _state(self, con: sqlite3.Connection, participant: str) -> ParticipantState:
        rows = con.execute("SELECT * FROM answers WHERE participant = ?", (participant,)).fetchall()
        return ParticipantState(
            participant,
            participant_order(self.features, participant, self.seed),
            {r["feature"]: dict(r) for r in rows},
        )

    def _known(self, con: sqlite3.Connection, participant: str) -> bool:
        row = con.execute("SELECT 1 FROM participants WHERE participant = ?", (participant,)).fetchone()
        return row is not None

    def start(self, participant: str) -> ParticipantState:
        """Register ``participant`` (idempotent) and return their state: a new participant or a returning one."""
        check_participant(participant)
        with self._write() as con:
            con.execute(
                "INSERT OR IGNORE INTO participants(participant, created_at) VALUES (?, ?)", (participant, _now())
            )
            return self._state(con, participant)

    def state(self, participant: str) -> ParticipantState:
        """The state of a registered participant (:class:`AnswerRejected` 404 if unknown)."""
        check_participant(participant)
        with self._connect() as con:
            if not self._known(con, participant):
                raise AnswerRejected(404, f"unknown participant {participant!r}; start from the survey's home page")
            return self._state(con, participant)

    def rows(self, complete_only: bool = True) -> list[dict]:
        """All stored answers, by participant then position in their order."""
        where = "WHERE step2_at IS NOT NULL" if complete_only else ""
        with self._connect() as con:
            cur = con.execute(f"SELECT * FROM answers {where} ORDER BY participant, position")
            return [dict(r) for r in cur]

    def meta(self) -> dict[str, str]:
        """The survey's stored settings (features, seed, groups, schema)."""
        with self._connect() as con:
            return {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}

    # -- writes ------------------------------------------------------------------------------------
    def _expect_current(self, state: ParticipantState, feature: int, step: int) -> None:
        if feature not in self._feature_set:
            raise AnswerRejected(404, f"feature {feature} is not part of this survey")
        row = state.answers.get(feature)
        if step == 1 and row is not None:
            raise AnswerRejected(409, f"Q1-Q2 for feature {feature} were already answered; answers cannot change")
        if step == 2 and row is not None and row["step2_at"] is not None:
            raise AnswerRejected(409, f"Q3-Q6 for feature {feature} were already answered; answers cannot change")
        if step == 2 and row is None:
            raise AnswerRejected(409, f"answer Q1-Q2 for feature {feature} before Q3-Q6")
        if state.current != feature:
            raise AnswerRejected(409, f"feature {feature} is not the participant's current feature; reload the page")

    def submit_step1(self, participant: str, feature: int, q1: object, q2: object) -> ParticipantState:
        """Store Q1 (1–5) and Q2 (0–4 comma-separated phrases) for the participant's current feature."""
        check_participant(participant)
        q1 = check_likert("q1", q1)
        if not isinstance(q2, str):
            raise AnswerRejected(422, "q2: expected text (0-4 phrases separated by commas)")
        try:
            phrases = check_phrases(q2)
        except ValueError as exc:
            raise AnswerRejected(422, str(exc)) from None
        with self._write() as con:
            if not self._known(con, participant):
                raise AnswerRejected(404, f"unknown participant {participant!r}; start from the survey's home page")
            state = self._state(con, participant)
            self._expect_current(state, feature, 1)
            con.execute(
                "INSERT INTO answers(participant, feature, position, q1, q2, step1_at) VALUES (?, ?, ?, ?, ?, ?)",
                (participant, feature, state.order.index(feature), q1, ", ".join(phrases), _now()),
            )
            return self._state(con, participant)

    def submit_step2(
        self, participant: str, feature: int, q3: object, q4: object, q5: object, q6: object
    ) -> ParticipantState:
        """Store Q3–Q6 (each 1–5) for a feature whose Q1–Q2 are stored; Q3 must be 1 when Q2 was empty."""
        check_participant(participant)
        values = [check_likert(name, v) for name, v in (("q3", q3), ("q4", q4), ("q5", q5), ("q6", q6))]
        with self._write() as con:
            if not self._known(con, participant):
                raise AnswerRejected(404, f"unknown participant {participant!r}; start from the survey's home page")
            state = self._state(con, participant)
            self._expect_current(state, feature, 2)
            if state.answers[feature]["q2"] == "" and values[0] != 1:
                raise AnswerRejected(422, "q3: must be 1 when no phrases were given in q2")
            cur = con.execute(
                "UPDATE answers SET q3 = ?, q4 = ?, q5 = ?, q6 = ?, step2_at = ? "
                "WHERE participant = ? AND feature = ? AND step2_at IS NULL",
                (*values, _now(), participant, feature),
            )
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; never write silently
                raise AnswerRejected(409, f"Q3-Q6 for feature {feature} were already answered")
            return self._state(con, participant)
