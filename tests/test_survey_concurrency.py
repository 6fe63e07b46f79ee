"""Many participants at once against the real server: balanced subsets with exact coverage, nothing lost,
nothing duplicated, and a server restart mid-study from which every participant resumes where they were."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from autointerp.survey.testing import free_port, make_fake_run, running_server, token_for

N_PARTICIPANTS = 50
FEATURES = (2, 5, 8, 13, 21)
PER_PARTICIPANT = 2
SERVE_ARGS = ("--per-participant", str(PER_PARTICIPANT), "--rate-limit", "0")


def _race(client: httpx.Client, url: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """Send ``bodies`` to ``url`` at the same moment (a double click, a retry): returns (status, body) pairs."""
    barrier = threading.Barrier(len(bodies))

    def send(body: dict) -> tuple[int, dict]:
        barrier.wait()
        return client.post(url, json=body).status_code, body

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def _answer_one(client: httpx.Client, who: str, state: dict, rng: random.Random) -> tuple[dict, tuple]:
    """Answer the current item, each step sent twice at once with different answers; returns the new state
    and the answers that won."""
    item = state["current"]["item"]
    a, b = rng.randint(1, 5), rng.randint(1, 5)
    step1 = [{"item": item, "q1": a, "q2": f"{who} first"}, {"item": item, "q1": b, "q2": f"{who} second"}]
    results = _race(client, "/api/step1", step1)
    assert sorted(s for s, _ in results) == [200, 409], results
    won1 = next(body for s, body in results if s == 200)
    qs = [rng.randint(1, 5) for _ in range(4)]
    step2 = [
        {"item": item, "q3": qs[0], "q4": qs[1], "q5": qs[2], "q6": qs[3]},
        {"item": item, "q3": qs[3], "q4": qs[2], "q5": qs[1], "q6": qs[0]},
    ]
    results = _race(client, "/api/step2", step2)
    assert sorted(s for s, _ in results) == [200, 409], results
    won2 = next(body for s, body in results if s == 200)
    answers = (won1["q1"], won1["q2"], won2["q3"], won2["q4"], won2["q5"], won2["q6"])
    return client.get("/api/state").json(), answers


def _first_half(url: str, run: Path, who: str, start_line: threading.Barrier) -> tuple[int, tuple]:
    """Sign in (all at once) and answer the first item; returns (position answered, answers)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        client.headers["authorization"] = f"Bearer {token_for(run, who)}"
        start_line.wait()
        r = client.post("/api/start", json={"token": token_for(run, who)})
        assert r.status_code == 200, r.text
        state = r.json()
        assert state["total"] == PER_PARTICIPANT and state["done"] == 0
        state, answers = _answer_one(client, who, state, random.Random(who))
        assert state["done"] == 1 and state["current"]["number"] == 2
        return 0, answers


def _second_half(url: str, run: Path, who: str) -> tuple[int, tuple]:
    """After the restart: the state shows the participant where they stopped; answer the rest."""
    with httpx.Client(base_url=url, timeout=60) as client:
        client.headers["authorization"] = f"Bearer {token_for(run, who)}"
        state = client.get("/api/state").json()
        assert (state["done"], state["current"]["number"], state["current"]["step"]) == (1, 2, 1), state
        state, answers = _answer_one(client, who, state, random.Random(who + "/2"))
        assert state["finished"] and state["done"] == PER_PARTICIPANT
        return 1, answers


def test_parallel_participants_balanced_and_resumed_after_a_restart(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "run", features=FEATURES)
    people = [f"p{i:02d}" for i in range(N_PARTICIPANTS)]
    port = free_port()
    start_line = threading.Barrier(N_PARTICIPANTS)
    expected: dict[tuple[str, int], tuple] = {}
    with running_server(run, *SERVE_ARGS, port=port) as url, ThreadPoolExecutor(N_PARTICIPANTS) as pool:
        futures = {who: pool.submit(_first_half, url, run, who, start_line) for who in people}
        expected.update({(who, *fut.result()[:1]): fut.result()[1] for who, fut in futures.items()})
    # the server was stopped mid-study; a new one on the same database picks everyone up
    with running_server(run, *SERVE_ARGS, port=port) as url, ThreadPoolExecutor(N_PARTICIPANTS) as pool:
        futures = {who: pool.submit(_second_half, url, run, who) for who in people}
        expected.update({(who, *fut.result()[:1]): fut.result()[1] for who, fut in futures.items()})
    with sqlite3.connect(run / "survey" / "answers.sqlite") as con:
        rows = con.execute(
            "SELECT participant, position, feature, q1, q2, q3, q4, q5, q6, step2_at FROM answers"
        ).fetchall()
        items = con.execute("SELECT participant, feature FROM items WHERE kind = 'rate'").fetchall()
    assert len(expected) == N_PARTICIPANTS * PER_PARTICIPANT
    assert len(rows) == len(expected), "a row was lost or duplicated"
    assert {(r[0], r[1]): tuple(r[3:9]) for r in rows} == expected
    assert all(r[9] is not None for r in rows)
    # exact balance: 50 participants x 2 features over 5 features = 20 ratings each
    assert Counter(f for _, f in items) == dict.fromkeys(FEATURES, N_PARTICIPANTS * PER_PARTICIPANT // len(FEATURES))
    assert Counter(r[2] for r in rows) == Counter(f for _, f in items)
    assert all(len({f for p, f in items if p == who}) == PER_PARTICIPANT for who in people)
