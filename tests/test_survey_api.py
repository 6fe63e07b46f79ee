"""The survey's HTTP API on a real server: protocol, bad input (4xx, nothing changes), and the attacks a
public server meets (no token, forged tokens, probing, impersonation, DNS rebinding, blinding, caching
headers, formula injection, invisible text, floods)."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autointerp.survey.testing import make_fake_run, running_server, token_for


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
        answers = con.execute("SELECT * FROM answers ORDER BY participant, position").fetchall()
        people = con.execute("SELECT participant FROM participants ORDER BY participant").fetchall()
    return answers + people


def start(client: httpx.Client, run: Path, who: str) -> dict:
    """Sign in as ``who`` with their invitation token (the client keeps the cookie)."""
    r = client.post("/api/start", json={"token": token_for(run, who)})
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
    s = start(client, run, "proto")
    cur = s["current"]
    assert (s["total"], s["done"], cur["number"], cur["step"]) == (3, 0, 1, 1)
    assert "examples" not in cur and "group" not in str(s) and "importance" not in str(s)
    assert "feature" not in cur and len(cur["vis"]) == 4
    png = client.get(cur["vis"][0])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    shown = [f for f in (3, 7, 11) if png.content == (run / "visualizations" / f"{f:04d}" / "vis_0.png").read_bytes()]
    assert len(shown) == 1
    feature = shown[0]
    early = client.get(cur["vis"][0].replace("/vis/", "/example/"))
    assert early.status_code == 403 and "after Q1-Q2" in early.json()["error"]
    s = client.post("/api/step1", json={"item": cur["item"], "q1": 4, "q2": "a, b"})
    assert s.status_code == 200, s.text
    cur2 = s.json()["current"]
    assert (cur2["item"], cur2["step"], cur2["phrases"], cur2["q1"]) == (cur["item"], 2, ["a", "b"], 4)
    assert len(cur2["examples"]) == 8
    ex = client.get(cur2["examples"][7])
    assert ex.status_code == 200
    assert ex.content == (run / "examples" / f"{feature:04d}" / "top_7.png").read_bytes()
    # resume: signing in again (another browser) lands on step 2 of the same item
    with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
        again = start(other, run, "proto")
    assert again["current"]["item"] == cur["item"] and again["current"]["step"] == 2
    s = client.post("/api/step2", json={"item": cur["item"], "q3": 3, "q4": 4, "q5": 1, "q6": 2}).json()
    assert s["done"] == 1 and s["current"]["number"] == 2 and s["current"]["item"] != cur["item"]


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
    ({"participant": "bad1"}, "participant"),  # ids never travel in answer bodies
    ({"feature": 3}, "feature"),  # nor feature indices
    ({"q2": "\u200b"}, "q2"),  # a zero-width space is no phrase
    ({"q2": "cats, \u200b\u2060"}, "q2"),
    ({"q2": "dogs\u202e"}, "q2"),  # right-to-left override
    ({"q2": "dogs\u2066x"}, "q2"),  # bidi isolate
    ({"q2": "dogs\x85"}, "q2"),  # C1 control (next line)
    ({"q2": "dogs\x7f"}, "q2"),
]


@pytest.mark.parametrize(("change", "field"), BAD_STEP1)
def test_bad_step1_is_rejected_and_changes_nothing(client: httpx.Client, run: Path, change: dict, field: str) -> None:
    s = start(client, run, "bad1")
    body = {"item": s["current"]["item"], **VALID1, **change}
    before = snapshot(run)
    r = client.post("/api/step1", json=body)
    assert 400 <= r.status_code < 500 and field in r.json()["error"], r.text
    assert snapshot(run) == before


def test_answers_are_nfc_normalised(client: httpx.Client, run: Path) -> None:
    s = start(client, run, "nfc")
    r = client.post("/api/step1", json={"item": s["current"]["item"], "q1": 2, "q2": "cafe\u0301"})
    assert r.status_code == 200 and r.json()["current"]["phrases"] == ["caf\u00e9"]


@pytest.mark.parametrize("missing", ["item", "q1", "q2"])
def test_missing_fields_are_rejected(client: httpx.Client, run: Path, missing: str) -> None:
    s = start(client, run, "miss")
    body = {"item": s["current"]["item"], **VALID1}
    del body[missing]
    before = snapshot(run)
    r = client.post("/api/step1", json=body)
    assert r.status_code == 422 and f"{missing}: required" in r.json()["error"]
    assert snapshot(run) == before


def test_out_of_order_replayed_and_unknown(client: httpx.Client, run: Path) -> None:
    s = start(client, run, "order")
    item = s["current"]["item"]
    step2 = {"item": item, "q3": 2, "q4": 2, "q5": 2, "q6": 2}
    with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
        foreign = start(other, run, "someone-else")["current"]["item"]
    cases = [
        ("/api/step2", step2, 409, "before Q3-Q6"),
        ("/api/step1", {"item": foreign, **VALID1}, 404, "no such item"),  # another participant's handle
        ("/api/step1", {"item": "3", **VALID1}, 404, "no such item"),  # a feature index is no handle
    ]
    for url, body, status, message in cases:
        before = snapshot(run)
        r = client.post(url, json=body)
        assert (r.status_code, message in r.json()["error"]) == (status, True), (body, r.text)
        assert snapshot(run) == before
    assert client.post("/api/step1", json={"item": item, **VALID1}).status_code == 200
    before = snapshot(run)
    replay = client.post("/api/step1", json={"item": item, "q1": 5, "q2": "changed"})
    assert replay.status_code == 409 and "already answered" in replay.json()["error"]
    assert snapshot(run) == before
    assert client.post("/api/step2", json={**step2, "q3": 6}).status_code == 422
    assert snapshot(run) == before
    assert client.post("/api/step2", json=step2).status_code == 200
    before = snapshot(run)
    again = client.post("/api/step2", json={**step2, "q4": 5})
    assert again.status_code == 409 and "already answered" in again.json()["error"]
    assert snapshot(run) == before


# -- access: tokens only, no probing, no impersonation ------------------------------------------------


def test_ids_cannot_register_without_an_invitation(client: httpx.Client, run: Path) -> None:
    before = snapshot(run)
    for body in ({"participant": "mallory"}, {}, {"token": "bWFsbG9yeQ.AAAA"}, {"token": "garbage"}):
        r = client.post("/api/start", json=body)
        assert r.status_code == 401, (body, r.text)
    assert snapshot(run) == before


def test_unknown_and_wrongly_signed_requests_look_the_same(client: httpx.Client, run: Path) -> None:
    start(client, run, "known")
    known_forged = token_for(run, "known")[:-4] + "AAAA"
    unknown_forged = token_for(run, "never-invited")[:-4] + "AAAA"
    answers: list[tuple[int, bytes]] = []
    for token in (known_forged, unknown_forged, "-", "x.y"):
        with httpx.Client(base_url=str(client.base_url), timeout=10) as c:
            c.headers["authorization"] = f"Bearer {token}"
            for method, url, body in (
                ("POST", "/api/start", {"token": token}),
                ("GET", "/api/state", None),
                ("POST", "/api/step1", {"item": "x", **VALID1}),
            ):
                r = c.request(method, url, json=body)
                answers.append((r.status_code, r.content))
    assert {status for status, _ in answers} == {401}
    assert len({content for _, content in answers}) == 1, "responses differ: an attacker could tell ids apart"
    # the old per-id state URL is gone for known and unknown ids alike
    old = [client.get(f"/api/state/{who}") for who in ("known", "nobody-here")]
    assert [r.status_code for r in old] == [404, 404] and old[0].content == old[1].content


def test_knowing_an_id_is_not_enough_to_answer(client: httpx.Client, run: Path) -> None:
    start(client, run, "victim")
    before = snapshot(run)
    with httpx.Client(base_url=str(client.base_url), timeout=10) as attacker:
        assert attacker.post("/api/start", json={"participant": "victim"}).status_code == 401
        assert attacker.get("/api/state").status_code == 401
        assert attacker.post("/api/step1", json={"item": "anything", **VALID1}).status_code == 401
    assert snapshot(run) == before


def test_images_need_the_participants_own_handle(client: httpx.Client, run: Path) -> None:
    with httpx.Client(base_url=str(client.base_url), timeout=10) as anonymous:
        for url in ("/api/image/3/vis/0", "/api/image/3/example/0", "/api/image/3/example/0?participant=x"):
            assert anonymous.get(url).status_code in (401, 404)
    s = start(client, run, "owner")
    vis = s["current"]["vis"][0]
    with httpx.Client(base_url=str(client.base_url), timeout=10) as anonymous:
        assert anonymous.get(vis).status_code == 401  # the URL alone opens nothing
    with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
        start(other, run, "another")
        assert other.get(vis).status_code == 404  # another participant's handle means nothing


@pytest.mark.parametrize(
    "url",
    [
        "/api/image/ITEM/vis/4",
        "/api/image/ITEM/vis/-1",
        "/api/image/ITEM/vis/..%2F..%2Fconfig.yaml",
        "/api/image/..%2F..%2Fconfig.yaml/vis/0",
        "/api/image/ITEM/example/0",  # before Q1-Q2
        "/static/..%2F..%2F..%2Fpyproject.toml",
        "/static/%2E%2E/db.py",
    ],
)
def test_images_serve_only_run_files(client: httpx.Client, run: Path, url: str) -> None:
    item = start(client, run, "paths")["current"]["item"]
    r = client.get(url.replace("ITEM", item))
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert "error" in r.json()
    assert b"model" not in r.content and b"import" not in r.content


def test_throwaway_ids_cannot_unlock_examples(client: httpx.Client, run: Path) -> None:
    """The old attack: register a fresh id, answer step 1, fetch that feature's examples; with invitation
    tokens a fresh id cannot be created, and handles differ per participant."""
    before = snapshot(run)
    with httpx.Client(base_url=str(client.base_url), timeout=10) as c:
        assert c.post("/api/start", json={"participant": "throwaway1"}).status_code == 401
        assert c.get("/api/image/3/example/0", params={"participant": "throwaway1"}).status_code in (401, 404)
    assert snapshot(run) == before


def test_handles_hide_feature_indices_and_differ_between_participants(client: httpx.Client, run: Path) -> None:
    items = []
    for who in ("h1", "h2"):
        with httpx.Client(base_url=str(client.base_url), timeout=10) as c:
            s = start(c, run, who)
            items.append(s["current"]["item"])
            assert s["current"]["vis"][0].split("/")[3] == s["current"]["item"]  # URLs name the handle only
            assert "feature" not in s["current"] and "feature" not in str(s)
    assert items[0] != items[1]


def test_no_caching_headers_reveal_file_times(client: httpx.Client, run: Path) -> None:
    s = start(client, run, "cache")
    for url in ("/", "/static/app.js", s["current"]["vis"][0]):
        r = client.get(url)
        assert r.status_code == 200
        assert "etag" not in r.headers and "last-modified" not in r.headers, (url, dict(r.headers))
        probe = client.get(url, headers={"if-modified-since": "Fri, 01 Jan 2100 00:00:00 GMT"})
        assert probe.status_code == 200 and probe.content == r.content  # never a 304 that dates the file


# -- DNS rebinding, cross-site requests ---------------------------------------------------------------


def test_unknown_host_and_foreign_origin_are_refused(client: httpx.Client, run: Path) -> None:
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/questions", headers={"host": "evil.example:8000"}).status_code == 400
    before = snapshot(run)
    token = token_for(run, "rebound")
    r = client.post("/api/start", json={"token": token}, headers={"host": "evil.example"})
    assert r.status_code == 400
    r = client.post("/api/start", json={"token": token}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    r = client.post("/api/start", json={"token": token}, headers={"origin": "null"})
    assert r.status_code == 403
    assert snapshot(run) == before
    ok = client.post("/api/start", json={"token": token}, headers={"origin": str(client.base_url).rstrip("/")})
    assert ok.status_code == 200


# -- export: formula injection --------------------------------------------------------------------------


def test_formula_answers_export_as_text_and_import_as_typed(client: httpx.Client, run: Path, tmp_path: Path) -> None:
    from autointerp import human_answers as human
    from autointerp.survey.export import export_answers

    typed = "=1+1, @SUM(1+1), -2+3, +cmd"
    s = start(client, run, "formula")
    while not s["finished"]:
        item = s["current"]["item"]
        s = client.post("/api/step1", json={"item": item, "q1": 3, "q2": typed}).json()
        s = client.post("/api/step2", json={"item": item, "q3": 2, "q4": 2, "q5": 2, "q6": 2}).json()
    out = tmp_path / "answers.csv"
    export_answers(run, out)
    with out.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["participant"] == "formula"]
    assert len(rows) == 3
    for r in rows:
        assert r["text_question"] == "'" + typed
        assert all(cell[:1] not in "=+-@\t\r" for cell in r.values() if cell)
    table = human.read_answers(out)
    texts = {t for t, p in zip(table.text, table.participant, strict=True) if p == "formula"}
    assert texts == {typed}


def test_an_image_changed_while_serving_is_not_shown(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from autointerp.survey.app import create_app
    from autointerp.survey.loader import open_survey

    run = make_fake_run(tmp_path / "run", features=(3,))
    survey = open_survey(run)
    with TestClient(create_app(survey), base_url="http://127.0.0.1") as c:
        vis = c.post("/api/start", json={"token": token_for(run, "p")}).json()["current"]["vis"]
        assert c.get(vis[1]).status_code == 200
        (run / "visualizations" / "0003" / "vis_1.png").write_bytes(b"\x89PNG swapped")
        r = c.get(vis[1])
        assert r.status_code == 503 and "changed" in r.json()["error"] and b"swapped" not in r.content


# -- sizes, malformed input, internal errors -----------------------------------------------------------


def test_request_size_limit(client: httpx.Client, run: Path) -> None:
    s = start(client, run, "big")
    before = snapshot(run)
    body = {"item": s["current"]["item"], "q1": 3, "q2": "x" * 50_000}
    r = client.post("/api/step1", json=body)
    assert r.status_code == 413 and "larger than" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: streamed body must be capped too
        yield b'{"item": "big", "q2": "'
        for _ in range(40):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/api/step1", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert snapshot(run) == before


def test_malformed_json_is_a_4xx(client: httpx.Client, run: Path) -> None:
    start(client, run, "malformed")
    r = client.post("/api/step1", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]


def test_internal_errors_show_no_traceback(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from autointerp.survey.app import create_app
    from autointerp.survey.loader import open_survey

    survey = open_survey(run)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail /path/to/db")

    monkeypatch.setattr(survey.store, "start", broken)
    with TestClient(create_app(survey), raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        r = c.post("/api/start", json={"token": token_for(run, "x")})
    assert r.status_code == 500
    assert r.json() == {"error": "internal server error (details are in the server log)"}
    assert "Traceback" not in r.text and "secret" not in r.text


# -- rate limit ------------------------------------------------------------------------------------------


def test_each_client_has_a_request_budget(tmp_path: Path) -> None:
    run = make_fake_run(tmp_path / "run", features=(1, 2))
    with running_server(run, "--rate-limit", "20") as url, httpx.Client(base_url=url, timeout=10) as c:
        codes = [c.post("/api/start", json={"token": f"guess{i}.AAAA"}).status_code for i in range(40)]
        assert codes.count(401) >= 15 and codes.count(429) >= 10, codes
        assert codes.index(429) > 10 and set(codes[codes.index(429) :]) == {429}
        limited = c.get("/api/questions")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


# -- open enrollment, consent, completion (in-process), TLS (real server) ---------------------------------


def test_open_enrollment_consent_and_completion(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from autointerp.survey.app import AppSettings, create_app
    from autointerp.survey.loader import open_survey

    run = make_fake_run(tmp_path / "run", features=(3, 7))
    consent = tmp_path / "consent.txt"
    consent.write_text("Do you agree?", encoding="utf-8")
    survey = open_survey(run, consent=consent, per_participant=1)
    settings = AppSettings(open_enrollment=True, prolific=True, completion_code="XYZ")
    with TestClient(create_app(survey, settings), base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/config").json()["consent"] == "Do you agree?"
        bad = c.post("/api/start", json={"participant": "p1", "study_id": "<script>"})
        assert bad.status_code == 422 and "study_id" in bad.json()["error"]
        s = c.post("/api/start", json={"participant": "p1", "study_id": "st", "session_id": "se"}).json()
        assert s["consent_required"] and s["total"] == 1
        before = snapshot(run)
        r = c.post("/api/step1", json={"item": s["current"]["item"], **VALID1})
        assert r.status_code == 409 and "consent" in r.json()["error"]
        assert snapshot(run) == before
        s = c.post("/api/consent", json={}).json()
        assert not s["consent_required"]
        c.post("/api/step1", json={"item": s["current"]["item"], **VALID1})
        s = c.post("/api/step2", json={"item": s["current"]["item"], "q3": 2, "q4": 2, "q5": 2, "q6": 2}).json()
        assert s["finished"] and s["completion_code"] == "XYZ"
        assert s["redirect"] == "https://app.prolific.com/submissions/complete?cc=XYZ"
        assert c.post("/api/logout", json={}).status_code == 200
        assert c.get("/api/state").status_code == 401
    with sqlite3.connect(survey.db_path) as con:
        row = con.execute("SELECT study_id, session_id, consented_at, consent_sha256 FROM participants").fetchone()
    assert row[:2] == ("st", "se") and row[2] and len(row[3]) == 64


def test_tls_with_a_certificate(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from tests.skips import skip_unless_available

    if shutil.which("openssl") is None:
        skip_unless_available("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    cmd += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run([*cmd, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    run = make_fake_run(tmp_path / "run", features=(1,))
    with running_server(run, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as url:
        assert url.startswith("https://")
        import ssl

        with httpx.Client(base_url=url, timeout=10, verify=ssl.create_default_context(cafile=str(cert))) as c:
            r = c.post("/api/start", json={"token": token_for(run, "secure")})
            assert r.status_code == 200
            cookie = r.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
