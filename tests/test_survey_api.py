"""The survey's HTTP API on a real server: protocol, bad input (4xx, nothing changes), safety."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autointerp.survey.testing import make_fake_run, running_server


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("api") / "run", features=(3, 7, 11))


@pytest.fixture(scope="module")
def server(run: Path) -> Iterator[str]:
    with running_server(run) as url:
        yield url


@pytest.fixture()
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=10) as c:
        yield c


def snapshot(run: Path) -> list[tuple]:
    with sqlite3.connect(run / "survey" / "answers.sqlite") as con:
        return con.execute("SELECT * FROM answers ORDER BY participant, feature").fetchall()


def start(client: httpx.Client, who: str) -> dict:
    r = client.post("/api/start", json={"participant": who})
    assert r.status_code == 200, r.text
    return r.json()


def test_page_and_assets_are_served_without_cdn(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.text) > 500
        assert "https://" not in r.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_protocol_blinds_then_reveals(client: httpx.Client, run: Path) -> None:
    s = start(client, "proto")
    cur = s["current"]
    assert (s["total"], s["done"], cur["number"], cur["step"]) == (3, 0, 1, 1)
    assert "examples" not in cur and "group" not in str(s) and "importance" not in str(s)
    assert len(cur["vis"]) == 4
    png = client.get(cur["vis"][0])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert png.content == (run / "visualizations" / f"{cur['feature']:04d}" / "vis_0.png").read_bytes()
    early = client.get(f"/api/image/{cur['feature']}/example/0", params={"participant": "proto"})
    assert early.status_code == 403 and "after Q1-Q2" in early.json()["error"]
    s = client.post("/api/step1", json={"participant": "proto", "feature": cur["feature"], "q1": 4, "q2": "a, b"})
    assert s.status_code == 200, s.text
    cur2 = s.json()["current"]
    assert (cur2["feature"], cur2["step"], cur2["phrases"], cur2["q1"]) == (cur["feature"], 2, ["a", "b"], 4)
    assert len(cur2["examples"]) == 8
    ex = client.get(cur2["examples"][7])
    assert ex.status_code == 200
    assert ex.content == (run / "examples" / f"{cur['feature']:04d}" / "top_7.png").read_bytes()
    # resume: a fresh start for the same id lands on step 2 of the same feature
    again = start(client, "proto")
    assert again["current"]["feature"] == cur["feature"] and again["current"]["step"] == 2
    body = {"participant": "proto", "feature": cur["feature"], "q3": 3, "q4": 4, "q5": 1, "q6": 2}
    s = client.post("/api/step2", json=body).json()
    assert s["done"] == 1 and s["current"]["number"] == 2 and s["current"]["feature"] != cur["feature"]


VALID1 = {"q1": 3, "q2": "x"}
BAD_STEP1 = [
    ({"q1": 0}, "q1"),
    ({"q1": 6}, "q1"),
    ({"q1": 2.5}, "q1"),
    ({"q1": "3"}, "q1"),
    ({"q1": None}, "q1"),
    ({"q2": "a,b,c,d,e"}, "q2"),
    ({"q2": 5}, "q2"),
    ({"extra": 1}, "extra"),
]


@pytest.mark.parametrize(("change", "field"), BAD_STEP1)
def test_bad_step1_is_rejected_and_changes_nothing(client: httpx.Client, run: Path, change: dict, field: str) -> None:
    s = start(client, "bad1")
    body = {"participant": "bad1", "feature": s["current"]["feature"], **VALID1, **change}
    before = snapshot(run)
    r = client.post("/api/step1", json=body)
    assert 400 <= r.status_code < 500 and field in r.json()["error"], r.text
    assert snapshot(run) == before


@pytest.mark.parametrize("missing", ["participant", "feature", "q1", "q2"])
def test_missing_fields_are_rejected(client: httpx.Client, run: Path, missing: str) -> None:
    s = start(client, "miss")
    body = {"participant": "miss", "feature": s["current"]["feature"], **VALID1}
    del body[missing]
    before = snapshot(run)
    r = client.post("/api/step1", json=body)
    assert r.status_code == 422 and f"{missing}: required" in r.json()["error"]
    assert snapshot(run) == before


def test_out_of_order_replayed_and_unknown(client: httpx.Client, run: Path) -> None:
    s = start(client, "order")
    f = s["current"]["feature"]
    other = next(x for x in (3, 7, 11) if x != f)
    step2 = {"participant": "order", "feature": f, "q3": 2, "q4": 2, "q5": 2, "q6": 2}
    cases = [
        ("/api/step2", step2, 409, "before Q3-Q6"),
        ("/api/step1", {"participant": "order", "feature": other, **VALID1}, 409, "current feature"),
        ("/api/step1", {"participant": "order", "feature": 999, **VALID1}, 404, "not part of this survey"),
        ("/api/step1", {"participant": "ghost", "feature": f, **VALID1}, 404, "unknown participant"),
        ("/api/step1", {"participant": "../etc", "feature": f, **VALID1}, 400, "participant id"),
    ]
    for url, body, status, message in cases:
        before = snapshot(run)
        r = client.post(url, json=body)
        assert (r.status_code, message in r.json()["error"]) == (status, True), (body, r.text)
        assert snapshot(run) == before
    assert client.post("/api/step1", json={"participant": "order", "feature": f, **VALID1}).status_code == 200
    before = snapshot(run)
    replay = client.post("/api/step1", json={"participant": "order", "feature": f, "q1": 5, "q2": "changed"})
    assert replay.status_code == 409 and "already answered" in replay.json()["error"]
    assert snapshot(run) == before
    assert client.post("/api/step2", json={**step2, "q3": 6}).status_code == 422
    assert snapshot(run) == before
    assert client.post("/api/step2", json=step2).status_code == 200
    before = snapshot(run)
    again = client.post("/api/step2", json={**step2, "q4": 5})
    assert again.status_code == 409 and "already answered" in again.json()["error"]
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "url",
    [
        "/api/image/3/vis/4",
        "/api/image/3/vis/-1",
        "/api/image/5/vis/0",
        "/api/image/3/vis/..%2F..%2Fconfig.yaml",
        "/api/image/..%2F..%2Fconfig.yaml/vis/0",
        "/static/..%2F..%2F..%2Fpyproject.toml",
        "/static/%2E%2E/db.py",
        "/api/image/3/example/0?participant=nobody",
    ],
)
def test_images_serve_only_run_files(client: httpx.Client, url: str) -> None:
    r = client.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert "error" in r.json()
    assert b"model" not in r.content and b"import" not in r.content


def test_request_size_limit(client: httpx.Client, run: Path) -> None:
    s = start(client, "big")
    before = snapshot(run)
    body = {"participant": "big", "feature": s["current"]["feature"], "q1": 3, "q2": "x" * 50_000}
    r = client.post("/api/step1", json=body)
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: streamed body must be capped too
        yield b'{"participant": "big", "q2": "'
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/api/step1", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert snapshot(run) == before


def test_malformed_json_is_a_4xx(client: httpx.Client) -> None:
    r = client.post("/api/step1", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]


def test_internal_errors_show_no_traceback(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from autointerp.survey.app import create_app
    from autointerp.survey.loader import open_survey

    survey = open_survey(run)

    def broken(participant: str) -> None:
        raise RuntimeError("secret internal detail /path/to/db")

    monkeypatch.setattr(survey.store, "start", broken)
    with TestClient(create_app(survey), raise_server_exceptions=False) as c:
        r = c.post("/api/start", json={"participant": "x"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error (details are in the server log)"}
    assert "Traceback" not in r.text and "secret" not in r.text
