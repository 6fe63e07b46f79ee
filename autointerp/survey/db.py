"""Survey storage: one SQLite database (WAL mode) per survey.

Tables: ``participants`` (registration order, Prolific study/session ids, consent), ``items`` (each
participant's assignment: the features to rate in their order, plus attention-check items), ``answers``
(one row per answered item), ``withdrawn`` (keyed hashes of withdrawn ids) and ``meta`` (the design).

Every write is one ``BEGIN IMMEDIATE`` transaction that re-checks the participant's state before
writing, so concurrent requests (several participants, or one participant's double click) are
serialised by SQLite: an answer is never lost, never duplicated, and never stored out of order, and
two participants registering at once never get the same place in the balanced assignment.
The tables' keys and CHECK constraints guard the same rules a second time inside the database itself.

Balanced assignment: a new participant gets the ``per_participant`` features that have been assigned
least so far (ties broken by a seeded draw per participant), so after P participants every feature has
been assigned ``floor(P*M/N)`` or ``ceil(P*M/N)`` times; their order is counterbalanced (each feature
goes to the place where it has been shown least, ties in a seeded shuffle of the participant's own).
With attention checks, a planted check item (blank grey images: the right answer to Q1 is 1) is put
at a random position inside the sequence, and the participant's first feature is repeated at the end
(test-retest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
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
SCHEMA_VERSION = "2"
KINDS = ("rate", "check", "retest")
CHECK_FEATURE = -1  # the planted check item is no feature of the run

_LIKERT = f"BETWEEN {LIKERT_MIN} AND {LIKERT_MAX}"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    participant TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    study_id TEXT,
    session_id TEXT,
    consented_at TEXT,
    consent_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS items (
    participant TEXT NOT NULL REFERENCES participants(participant),
    position INTEGER NOT NULL CHECK (position >= 0),
    feature INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rate', 'check', 'retest')),
    PRIMARY KEY (participant, position)
);
CREATE INDEX IF NOT EXISTS items_by_feature ON items(kind, feature);
CREATE TABLE IF NOT EXISTS answers (
    participant TEXT NOT NULL,
    position INTEGER NOT NULL,
    feature INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rate', 'check', 'retest')),
    q1 INTEGER NOT NULL CHECK (q1 {_LIKERT}),
    q2 TEXT NOT NULL,
    q3 INTEGER CHECK (q3 {_LIKERT}),
    q4 INTEGER CHECK (q4 {_LIKERT}),
    q5 INTEGER CHECK (q5 {_LIKERT}),
    q6 INTEGER CHECK (q6 {_LIKERT}),
    step1_at TEXT NOT NULL,
    step2_at TEXT,
    PRIMARY KEY (participant, position),
    FOREIGN KEY (participant, position) REFERENCES items(participant, position),
    CHECK ((q3 IS NULL) = (step2_at IS NULL) AND (q4 IS NULL) = (step2_at IS NULL)
           AND (q5 IS NULL) = (step2_at IS NULL) AND (q6 IS NULL) = (step2_at IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS one_rating_per_feature ON answers(participant, feature) WHERE kind = 'rate';
CREATE TABLE IF NOT EXISTS withdrawn (key TEXT PRIMARY KEY, withdrawn_at TEXT NOT NULL, rows_deleted INTEGER NOT NULL);
"""


class AnswerRejected(Exception):
    """A submission that breaks the protocol; ``status`` is the HTTP status to answer with (4xx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Item:
    """One page of a participant's sequence: a feature to rate, the planted check, or the retest repeat."""

    position: int
    feature: int
    kind: str


@dataclass
class ParticipantState:
    """Where a participant stands: their assigned items in order and what they answered so far."""

    participant: str
    items: list[Item]
    answers: dict[int, dict] = field(default_factory=dict)  # position -> stored row
    consented: bool = True

    @property
    def order(self) -> list[int]:
        """The features of the participant's items, in order (the check item shows as -1)."""
        return [it.feature for it in self.items]

    @property
    def done(self) -> int:
        """Number of items fully answered (Q1–Q6)."""
        return sum(1 for a in self.answers.values() if a["step2_at"] is not None)

    @property
    def current(self) -> int | None:
        """The position of the item to answer next (None when finished)."""
        for it in self.items:
            row = self.answers.get(it.position)
            if row is None or row["step2_at"] is None:
                return it.position
        return None

    @property
    def current_item(self) -> Item | None:
        """The item to answer next (None when finished)."""
        pos = self.current
        return None if pos is None else self.items[pos]

    @property
    def step(self) -> int | None:
        """1 = Q1–Q2 due for :attr:`current`, 2 = Q3–Q6 due, None = finished."""
        pos = self.current
        if pos is None:
            return None
        return 1 if pos not in self.answers else 2


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


def _rng(seed: int, participant: str, what: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00{participant}\x00{what}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def counterbalanced_order(
    chosen: Sequence[int], place_counts: dict[tuple[int, int], int], participant: str, seed: int
) -> list[int]:
    """Order ``chosen`` so each feature goes where it has been shown least so far (``place_counts``:
    (feature, place) -> times), ties kept in the participant's seeded shuffle (:func:`participant_order`).

    One assignment problem per participant (scipy's ``linear_sum_assignment``); with every feature rated
    by everyone this builds Latin squares: after N participants each feature was at each place once.
    """
    from scipy.optimize import linear_sum_assignment

    base = participant_order(chosen, participant, seed)
    n = len(base)
    if not place_counts:
        return base
    cost = [[place_counts.get((f, k), 0) + (0.0 if k == i else 0.5 / n) for k in range(n)] for i, f in enumerate(base)]
    rows, cols = linear_sum_assignment(cost)
    order = [0] * n
    for i, k in zip(rows, cols, strict=True):
        order[k] = base[i]
    return order


def plan_items(
    features: Sequence[int],
    counts: dict[int, int],
    participant: str,
    seed: int,
    per_participant: int,
    checks: bool,
    place_counts: dict[tuple[int, int], int] | None = None,
) -> list[Item]:
    """A new participant's sequence: the ``per_participant`` least-assigned features (``counts``), ordered
    by :func:`counterbalanced_order`; with ``checks`` a planted check item inside and the first feature
    repeated last."""
    draw = _rng(seed, participant, "assign")
    ranked = sorted(features, key=lambda f: (counts.get(f, 0), draw.random()))
    order = counterbalanced_order(ranked[:per_participant], place_counts or {}, participant, seed)
    entries = [(f, "rate") for f in order]
    if checks:
        where = _rng(seed, participant, "check").randint(1, len(entries))
        entries.insert(where, (CHECK_FEATURE, "check"))
        entries.append((order[0], "retest"))
    return [Item(i, f, kind) for i, (f, kind) in enumerate(entries)]


class SurveyStore:
    """The answers of one survey (a fixed design: features, seed, subset size, checks) in a SQLite file.

    Opening an existing database checks it belongs to the same design: answers collected for one
    design are never mixed with another (use another ``--db`` for a new survey). ``consent_sha256``
    (the hash of the consent text) makes consent required before the first answer.
    """

    def __init__(
        self,
        path: str | Path,
        features: Sequence[int],
        seed: int = 0,
        groups: dict[int, str] | None = None,
        per_participant: int | None = None,
        attention_checks: bool = False,
        consent_sha256: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.features = sorted(int(f) for f in features)
        if not self.features:
            raise UserError("survey: no features to survey")
        if min(self.features) < 0:
            raise UserError(f"survey: feature indices must be non-negative, got {min(self.features)}")
        self._feature_set = frozenset(self.features)
        self.seed = int(seed)
        n = len(self.features)
        self.per_participant = n if per_participant is None else int(per_participant)
        if not 1 <= self.per_participant <= n:
            raise UserError(
                f"--per-participant: expected 1 to {n} (the number of surveyed features), got {per_participant}"
            )
        self.attention_checks = bool(attention_checks)
        self.consent_sha256 = consent_sha256
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{self.path.parent}: cannot create survey folder ({exc.strerror})") from None
        with self._connect() as con:
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DataError(f"{self.path}: SQLite cannot use WAL mode here (got {mode!r}); use a local disk")
            self._check_schema(con)
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

    def _check_schema(self, con: sqlite3.Connection) -> None:
        cols = {r["name"] for r in con.execute("PRAGMA table_info(answers)")}
        if cols and "kind" not in cols:
            raise UserError(
                f"{self.path}: survey database from an older version of autointerp (no assignments table); "
                "export it with that version, or serve this survey with a new --db"
            )

    def design(self) -> dict[str, str]:
        """The settings a database is bound to once it holds answers."""
        return {
            "features": json.dumps(self.features),
            "seed": str(self.seed),
            "per_participant": str(self.per_participant),
            "attention_checks": "1" if self.attention_checks else "0",
            "consent": "1" if self.consent_sha256 else "0",  # the text itself may be corrected
        }

    def _check_meta(self, con: sqlite3.Connection, groups: dict[int, str]) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            meta = {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}
            n_people = con.execute("SELECT COUNT(*) FROM participants").fetchone()[0]
            want = self.design()
            want["groups"] = json.dumps({str(k): v for k, v in sorted(groups.items())})
            if n_people and meta.get("features") is not None:
                for key, value in want.items():
                    if meta.get(key, value) != value:
                        raise UserError(
                            f"{self.path}: this survey database holds {n_people} participant(s) for a different "
                            f"{key} ({meta.get(key)} instead of {value}); serve with the same options or use "
                            "another --db"
                        )
            want["schema"] = SCHEMA_VERSION
            # written once: a study's design and group labels are never replaced while it has participants
            verb = "INSERT OR IGNORE" if n_people else "INSERT OR REPLACE"
            con.executemany(f"{verb} INTO meta(key, value) VALUES (?, ?)", list(want.items()))
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # -- meta --------------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The survey's stored settings (features, seed, groups, schema, image hashes)."""
        with self._connect() as con:
            return {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}

    def set_meta(self, key: str, value: str) -> None:
        """Store one setting (used to pin the images' hashes)."""
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def n_participants(self) -> int:
        """Number of registered participants."""
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM participants").fetchone()[0])

    # -- reads -------------------------------------------------------------------------------------
    def _state(self, con: sqlite3.Connection, participant: str) -> ParticipantState:
        items = [
            Item(r["position"], r["feature"], r["kind"])
            for r in con.execute("SELECT * FROM items WHERE participant = ? ORDER BY position", (participant,))
        ]
        rows = con.execute("SELECT * FROM answers WHERE participant = ?", (participant,)).fetchall()
        person = con.execute("SELECT consented_at FROM participants WHERE participant = ?", (participant,)).fetchone()
        consented = self.consent_sha256 is None or (person is not None and person["consented_at"] is not None)
        return ParticipantState(participant, items, {r["position"]: dict(r) for r in rows}, consented)

    def _known(self, con: sqlite3.Connection, participant: str) -> bool:
        row = con.execute("SELECT 1 FROM participants WHERE participant = ?", (participant,)).fetchone()
        return row is not None

    def start(
        self,
        participant: str,
        study_id: str | None = None,
        session_id: str | None = None,
        withdrawn_key: str | None = None,
    ) -> ParticipantState:
        """Register ``participant`` and assign their items (idempotent: a returning participant gets their state).

        ``withdrawn_key`` (see :func:`autointerp.survey.access.withdrawn_key`) refuses someone who withdrew.
        """
        check_participant(participant)
        with self._write() as con:
            if withdrawn_key is not None:
                gone = con.execute("SELECT 1 FROM withdrawn WHERE key = ?", (withdrawn_key,)).fetchone()
                if gone is not None:
                    raise AnswerRejected(403, "this participation was withdrawn; thank you for your time")
            if not self._known(con, participant):
                seq = con.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM participants").fetchone()[0]
                con.execute(
                    "INSERT INTO participants(participant, seq, created_at, study_id, session_id) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (participant, seq, _now(), study_id, session_id),
                )
                counts: dict[int, int] = {}
                places: dict[tuple[int, int], int] = {}
                place, previous = 0, None
                for r in con.execute(
                    "SELECT participant, feature FROM items WHERE kind = 'rate' ORDER BY participant, position"
                ):
                    place = place + 1 if r["participant"] == previous else 0
                    previous = r["participant"]
                    counts[r["feature"]] = counts.get(r["feature"], 0) + 1
                    places[(r["feature"], place)] = places.get((r["feature"], place), 0) + 1
                plan = plan_items(
                    self.features, counts, participant, self.seed, self.per_participant, self.attention_checks, places
                )
                con.executemany(
                    "INSERT INTO items(participant, position, feature, kind) VALUES (?, ?, ?, ?)",
                    [(participant, it.position, it.feature, it.kind) for it in plan],
                )
            return self._state(con, participant)

    def state(self, participant: str) -> ParticipantState:
        """The state of a registered participant (:class:`AnswerRejected` 404 if unknown)."""
        check_participant(participant)
        with self._connect() as con:
            if not self._known(con, participant):
                raise AnswerRejected(404, "not registered yet; open your survey link again")
            return self._state(con, participant)

    def consent(self, participant: str) -> ParticipantState:
        """Record that ``participant`` accepted the consent text (idempotent; keeps the first time)."""
        check_participant(participant)
        with self._write() as con:
            if not self._known(con, participant):
                raise AnswerRejected(404, "not registered yet; open your survey link again")
            con.execute(
                "UPDATE participants SET consented_at = ?, consent_sha256 = ? "
                "WHERE participant = ? AND consented_at IS NULL",
                (_now(), self.consent_sha256, participant),
            )
            return self._state(con, participant)

    def rows(self, complete_only: bool = True) -> list[dict]:
        """All stored answers, by participant then position in their order."""
        where = "WHERE step2_at IS NOT NULL" if complete_only else ""
        with self._connect() as con:
            cur = con.execute(f"SELECT * FROM answers {where} ORDER BY participant, position")
            return [dict(r) for r in cur]

    def coverage(self) -> dict[int, int]:
        """How many participants were assigned each feature (retest repeats and checks not counted)."""
        with self._connect() as con:
            got = {
                r["feature"]: r["n"]
                for r in con.execute("SELECT feature, COUNT(*) AS n FROM items WHERE kind = 'rate' GROUP BY feature")
            }
        return {f: got.get(f, 0) for f in self.features}

    # -- writes ------------------------------------------------------------------------------------
    def _expect_current(self, state: ParticipantState, position: int, step: int) -> None:
        if type(position) is not int or not 0 <= position < len(state.items):
            raise AnswerRejected(404, "no such item in this participant's survey")
        if not state.consented:
            raise AnswerRejected(409, "please read and accept the consent form first")
        row = state.answers.get(position)
        if step == 1 and row is not None:
            raise AnswerRejected(409, f"Q1-Q2 for item {position + 1} were already answered; answers cannot change")
        if step == 2 and row is not None and row["step2_at"] is not None:
            raise AnswerRejected(409, f"Q3-Q6 for item {position + 1} were already answered; answers cannot change")
        if step == 2 and row is None:
            raise AnswerRejected(409, f"answer Q1-Q2 for item {position + 1} before Q3-Q6")
        if state.current != position:
            raise AnswerRejected(409, f"item {position + 1} is not the participant's current item; reload the page")

    def submit_step1(self, participant: str, position: int, q1: object, q2: object) -> ParticipantState:
        """Store Q1 (1–5) and Q2 (0–4 comma-separated phrases) for the participant's current item."""
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
                raise AnswerRejected(404, "not registered yet; open your survey link again")
            state = self._state(con, participant)
            self._expect_current(state, position, 1)
            item = state.items[position]
            con.execute(
                "INSERT INTO answers(participant, position, feature, kind, q1, q2, step1_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (participant, position, item.feature, item.kind, q1, ", ".join(phrases), _now()),
            )
            return self._state(con, participant)

    def submit_step2(
        self, participant: str, position: int, q3: object, q4: object, q5: object, q6: object
    ) -> ParticipantState:
        """Store Q3–Q6 (each 1–5) for an item whose Q1–Q2 are stored; Q3 must be 1 when Q2 was empty."""
        check_participant(participant)
        values = [check_likert(name, v) for name, v in (("q3", q3), ("q4", q4), ("q5", q5), ("q6", q6))]
        with self._write() as con:
            if not self._known(con, participant):
                raise AnswerRejected(404, "not registered yet; open your survey link again")
            state = self._state(con, participant)
            self._expect_current(state, position, 2)
            if state.answers[position]["q2"] == "" and values[0] != 1:
                raise AnswerRejected(422, "q3: must be 1 when no phrases were given in q2")
            cur = con.execute(
                "UPDATE answers SET q3 = ?, q4 = ?, q5 = ?, q6 = ?, step2_at = ? "
                "WHERE participant = ? AND position = ? AND step2_at IS NULL",
                (*values, _now(), participant, position),
            )
            if cur.rowcount != 1:  # cannot happen under BEGIN IMMEDIATE; never write silently
                raise AnswerRejected(409, f"Q3-Q6 for item {position + 1} were already answered")
            return self._state(con, participant)


def delete_participant(path: str | Path, participant: str, withdrawn_key: str) -> int:
    """Delete every answer, item and record of ``participant`` in one transaction; returns answers deleted.

    Only ``withdrawn_key`` (a keyed hash of the id) stays, so the same link cannot register again.
    The only deletion path of the survey (``autointerp survey withdraw``).
    """
    path = Path(path)
    if not PARTICIPANT_RE.fullmatch(participant):
        raise UserError(f"participant {participant!r}: not a valid participant id")
    if not path.is_file():
        raise UserError(f"{path}: no survey database")
    con = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        con.execute("PRAGMA busy_timeout = 30000")
        con.execute("BEGIN IMMEDIATE")
        try:
            known = con.execute("SELECT 1 FROM participants WHERE participant = ?", (participant,)).fetchone()
            if known is None:
                raise UserError(f"{path}: no participant {participant!r} in this survey")
            n = con.execute("DELETE FROM answers WHERE participant = ?", (participant,)).rowcount
            con.execute("DELETE FROM items WHERE participant = ?", (participant,))
            con.execute("DELETE FROM participants WHERE participant = ?", (participant,))
            con.execute(
                "INSERT OR REPLACE INTO withdrawn(key, withdrawn_at, rows_deleted) VALUES (?, ?, ?)",
                (withdrawn_key, _now(), n),
            )
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return int(n)
    except sqlite3.Error as exc:
        raise DataError(f"{path}: cannot withdraw participant ({exc})") from None
    finally:
        con.close()
