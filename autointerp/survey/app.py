"""The survey's web app (FastAPI) and a real server to run it (uvicorn).

Routes (JSON unless noted):

* ``GET /`` — the single-page survey (HTML); ``/static/*`` — its JS and CSS (package data, no CDN).
* ``GET /api/questions`` — the study's question texts.
* ``POST /api/start`` ``{participant}`` — register or resume a participant; returns their state.
* ``GET /api/state/{participant}`` — where the participant stands.
* ``POST /api/step1`` ``{participant, feature, q1, q2}``; ``POST /api/step2`` ``{participant, feature, q3..q6}``.
* ``GET /api/image/{feature}/vis/{i}`` and ``/api/image/{feature}/example/{i}?participant=...`` (PNG).
  Images are looked up by index among the checked files of the run, never by a path from the request.
  Dataset examples are served only after that participant answered Q1–Q2 for the feature.

Errors are ``{"error": "one line"}`` with a 4xx status; unexpected failures answer 500 with no details
(the traceback goes to the server log only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from autointerp.extras import extra_imports, require
from autointerp.survey.db import AnswerRejected, ParticipantState
from autointerp.survey.loader import Survey
from autointerp.survey.questions import LIKERT_MAX, LIKERT_MIN, QUESTIONS

with extra_imports("survey", "the survey"):  # fastapi and uvicorn are the [survey] extra
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 16 * 1024
log = logging.getLogger("autointerp.survey")

Likert = Annotated[StrictInt, Field(ge=LIKERT_MIN, le=LIKERT_MAX)]
ParticipantId = Annotated[StrictStr, Field(min_length=1, max_length=64)]

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartBody(_Body):
    participant: ParticipantId


class Step1Body(_Body):
    participant: ParticipantId
    feature: StrictInt
    q1: Likert
    q2: Annotated[StrictStr, Field(max_length=400)]


class Step2Body(_Body):
    participant: ParticipantId
    feature: StrictInt
    q3: Likert
    q4: Likert
    q5: Likert
    q6: Likert


class BodyLimitMiddleware:
    """Answer 413 to any request body larger than ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = JSONResponse({"error": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await too_big(scope, receive, send)
                    return
            except ValueError:
                await JSONResponse({"error": "bad Content-Length"}, status_code=400)(scope, receive, send)
                return
        # Read the whole (small) body first so a streamed, undeclared body is capped too.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _one_line_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "request"
        if err.get("type") == "missing":
            parts.append(f"{where}: required")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"{where}: unknown field")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _state_json(survey: Survey, state: ParticipantState) -> dict[str, Any]:
    """What the browser may see: order position, step and image URLs — never group or importance."""
    current = state.current
    out: dict[str, Any] = {
        "participant": state.participant,
        "total": len(state.order),
        "done": state.done,
        "finished": current is None,
        "current": None,
    }
    if current is None:
        return out
    feat = survey.features[current]
    cur: dict[str, Any] = {
        "feature": current,
        "number": state.order.index(current) + 1,
        "step": state.step,
        "vis": [f"/api/image/{current}/vis/{i}" for i in range(len(feat.vis))],
    }
    if state.step == 2:
        q2 = state.answers[current]["q2"]
        cur["q1"] = state.answers[current]["q1"]
        cur["q2"] = q2
        cur["phrases"] = [p for p in q2.split(", ") if p]
        cur["examples"] = [
            f"/api/image/{current}/example/{i}?participant={state.participant}" for i in range(len(feat.examples))
        ]
    out["current"] = cur
    return out


def create_app(survey: Survey, title: str = "Feature survey") -> FastAPI:
    """The survey web app for ``survey`` (see the module docstring for its routes)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    store = survey.store

    @app.exception_handler(AnswerRejected)
    async def _rejected(request: Request, exc: AnswerRejected) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _one_line_validation(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("survey: internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error (details are in the server log)"}, status_code=500)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("cache-control", "no-store")
        return response

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/questions")
    def questions() -> dict[str, Any]:
        return {
            "questions": [
                {"key": q.key, "step": q.step, "kind": q.kind, "text": q.text, "low": q.low, "high": q.high}
                for q in QUESTIONS
            ]
        }

    @app.post("/api/start")
    def start(body: StartBody) -> dict[str, Any]:
        return _state_json(survey, store.start(body.participant))

    @app.get("/api/state/{participant}")
    def state(participant: str) -> dict[str, Any]:
        return _state_json(survey, store.state(participant))

    @app.post("/api/step1")
    def step1(body: Step1Body) -> dict[str, Any]:
        return _state_json(survey, store.submit_step1(body.participant, body.feature, body.q1, body.q2))

    @app.post("/api/step2")
    def step2(body: Step2Body) -> dict[str, Any]:
        st = store.submit_step2(body.participant, body.feature, body.q3, body.q4, body.q5, body.q6)
        return _state_json(survey, st)

    def _feature(feature: int) -> Any:
        feat = survey.features.get(feature)
        if feat is None:
            raise AnswerRejected(404, f"feature {feature} is not part of this survey")
        return feat

    def _image(paths: tuple[Path, ...], i: int, what: str) -> FileResponse:
        if not 0 <= i < len(paths):
            raise AnswerRejected(404, f"no {what} image {i} (have {len(paths)})")
        path = paths[i]
        if not path.is_file():
            raise AnswerRejected(404, f"{what} image {i} is missing from the run folder")
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    @app.get("/api/image/{feature}/vis/{i}")
    def vis_image(feature: int, i: int) -> FileResponse:
        return _image(_feature(feature).vis, i, "visualisation")

    @app.get("/api/image/{feature}/example/{i}")
    def example_image(feature: int, i: int, participant: str = "") -> FileResponse:
        feat = _feature(feature)
        st = store.state(participant)
        if feature not in st.answers:
            raise AnswerRejected(403, "dataset examples are shown only after Q1-Q2 are answered for this feature")
        return _image(feat.examples, i, "dataset example")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    return app


def serve(survey: Survey, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the survey on a real server (uvicorn) until interrupted (Ctrl+C)."""
    uvicorn = require("uvicorn", "survey", "the survey")
    uvicorn.run(
        create_app(survey),
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
