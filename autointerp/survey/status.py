"""The researcher's side of a running study: a progress report and withdrawal (read from the database)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from autointerp.errors import DataError
from autointerp.survey.access import load_secret, withdrawn_key
from autointerp.survey.db import delete_participant
from autointerp.survey.export import connect_read_only, participant_flags, read_answers
from autointerp.survey.loader import default_db_path

WITHDRAWALS_LOG = "withdrawals.log"


def survey_status(run: str | Path, db: str | Path | None = None) -> str:
    """A plain-text progress report: participants, answers per feature, exclusion flags."""
    db = Path(db) if db is not None else default_db_path(run)
    con = connect_read_only(db)
    try:
        meta = {r["key"]: r["value"] for r in con.execute("SELECT key, value FROM meta")}
        people = [dict(r) for r in con.execute("SELECT * FROM participants ORDER BY seq")]
        items = [dict(r) for r in con.execute("SELECT participant, position, feature, kind FROM items")]
        n_withdrawn = con.execute("SELECT COUNT(*) FROM withdrawn").fetchone()[0]
    except sqlite3.Error as exc:  # a table missing: not this version's database
        raise DataError(f"{db}: not a survey database of this version ({exc})") from None
    finally:
        con.close()
    rows = read_answers(db)
    flags = participant_flags(rows)
    features = json.loads(meta.get("features", "[]"))
    done = {(r["participant"], r["position"]) for r in rows if r["step2_at"] is not None}
    total_items: dict[str, int] = {}
    for it in items:
        total_items[it["participant"]] = total_items.get(it["participant"], 0) + 1
    assigned = {f: 0 for f in features}
    complete = {f: 0 for f in features}
    for it in items:
        if it["kind"] == "rate":
            assigned[it["feature"]] = assigned.get(it["feature"], 0) + 1
            if (it["participant"], it["position"]) in done:
                complete[it["feature"]] = complete.get(it["feature"], 0) + 1
    finished = sum(
        1
        for p in people
        if total_items.get(p["participant"], 0)
        and all((p["participant"], i) in done for i in range(total_items[p["participant"]]))
    )
    excluded = [w for w, f in flags.items() if f["exclude"] == 1]
    lines = [
        f"{db}: {len(features)} features, {meta.get('per_participant', '?')} per participant"
        f"{', attention checks' if meta.get('attention_checks') == '1' else ''}",
        f"participants: {len(people)} registered, {finished} finished, {len(excluded)} flagged for exclusion, "
        f"{n_withdrawn} withdrawn",
        "",
        "feature  assigned  complete",
    ]
    lines += [f"{f:>7}  {assigned.get(f, 0):>8}  {complete.get(f, 0):>8}" for f in sorted(assigned)]
    lines += ["", "participant            done  consent  check  retest  exclude  last answer"]
    last: dict[str, str] = {}
    for r in rows:
        t = r["step2_at"] or r["step1_at"]
        if t and t > last.get(r["participant"], ""):
            last[r["participant"]] = t
    for p in people:
        who = p["participant"]
        n_done = sum(1 for key in done if key[0] == who)
        f = flags.get(who, {"check_passed": "", "retest_delta": "", "exclude": 0})
        lines.append(
            f"{who:<22} {n_done:>2}/{total_items.get(who, 0):<3} {'yes' if p['consented_at'] else '-':>6}  "
            f"{str(f['check_passed']) or '-':>5}  {str(f['retest_delta']) or '-':>6}  {f['exclude']:>7}  "
            f"{last.get(who, '-')}"
        )
    return "\n".join(lines)


def withdraw_participant(run: str | Path, participant: str, db: str | Path | None = None) -> int:
    """Delete every answer of ``participant`` and log it (time, answers deleted, keyed hash of the id) to
    ``withdrawals.log`` next to the database; returns the number of answers deleted."""
    db = Path(db) if db is not None else default_db_path(run)
    secret = load_secret(db.parent, create=False)
    key = withdrawn_key(secret, participant)
    n = delete_participant(db, participant, key)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with (db.parent / WITHDRAWALS_LOG).open("a", encoding="utf-8") as fh:
        fh.write(f"{stamp}\twithdrawn\t{key[:16]}\t{n} answer(s) deleted\n")
    return n
