"""Many participants at once against the real server: nothing lost, nothing duplicated."""

from __future__ import annotations

import random
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from autointerp.survey.testing import make_fake_run, running_server

N_PARTICIPANTS = 24
FEATURES = (2, 5, 8, 13)


def _race(client: httpx.Client, url: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """Send ``bodies`` to ``url`` at the same moment (a double click, a retry): returns (status, body) pairs."""
    barrier = threading.Barrier(len(bodies))

    def send(body: dict) -> tuple[int, dict]:
        barrier.wait()
        return client.post(url, json=body).status_code, body

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def _participant(url: str, who: str, start_line: threading.Barrier) -> dict[int, tuple]:
    """Answer every feature, each step sent twice at once with different answers; return what was stored."""
    rng = random.Random(who)
    stored: dict[int, tuple] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        start_line.wait()
        state = client.post("/api/start", json={"participant": who}).json()
        while not state["finished"]:
            f = state["current"]["feature"]
            a, b = rng.randint(1, 5), rng.randint(1, 5)
            step1 = [
                {"participant": who, "feature": f, "q1": a, "q2": f"{who} first"},
                {"participant": who, "feature": f, "q1": b, "q2": f"{who} second"},
            ]
            results = _race(client, "/api/step1", step1)
            assert sorted(s for s, _ in results) == [200, 409], results
            won1 = next(body for s, body in results if s == 200)
            qs = [rng.randint(1, 5) for _ in range(4)]
            step2 = [
                {"participant": who, "feature": f, "q3": qs[0], "q4": qs[1], "q5": qs[2], "q6": qs[3]},
                {"participant": who, "feature": f, "q3": qs[3], "q4": qs[2], "q5": qs[1], "q6": qs[0]},
            ]
            results = _race(client, "/api/step2", step2)
            assert sorted(s for s, _ in results) == [200, 409], results
            won2 = next(body for s, body in results if s == 200)
            stored[f] = (won1["q1"], won1["q2"], won2["q3"], won2["q4"], won2["q5"], won2["q6"])
            state = client.get(f"/api/state/{who}").json()
        assert state["done"] == len(FEATURES)
    return stored


def test_parallel_participants_store_exactly_the_expected_rows(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "run", features=FEATURES)
    people = [f"p{i:02d}" for i in range(N_PARTICIPANTS)]
    start_line = threading.Barrier(N_PARTICIPANTS)
    with running_server(run) as url, ThreadPoolExecutor(N_PARTICIPANTS) as pool:
        futures = {who: pool.submit(_participant, url, who, start_line) for who in people}
        expected = {(who, f): answers for who, fut in futures.items() for f, answers in fut.result().items()}
    with sqlite3.connect(run / "survey" / "answers.sqlite") as con:
        rows = con.execute("SELECT participant, feature, q1, q2, q3, q4, q5, q6, step2_at FROM answers").fetchall()
        positions = con.execute("SELECT participant, position FROM answers").fetchall()
    assert len(expected) == N_PARTICIPANTS * len(FEATURES)
    assert len(rows) == len(expected), "a row was lost or duplicated"
    got = {(r[0], r[1]): tuple(r[2:8]) for r in rows}
    assert got == expected
    assert all(r[8] is not None for r in rows)
    assert len(set(positions)) == len(positions)
