"""The survey's web app (FastAPI) and a real server to run it (uvicorn).

Routes (JSON unless noted); every ``/api`` route but ``config``/``questions``/``start`` needs the
participant's signed token, sent as the ``autointerp_survey`` cookie (set by ``start``; HttpOnly,
SameSite=Strict) or an ``Authorization: Bearer TOKEN`` header. Ids and tokens never travel in API URLs.

* ``GET /`` — the single-page survey (HTML); ``/static/*`` — its JS and CSS (package data, no CDN).
* ``GET /api/config`` — question texts, enrollment mode, consent text; ``GET /api/questions`` — the questions.
* ``POST /api/start`` ``{token}`` (an invitation link's token) or, with open enrollment only,
  ``{participant, study_id?, session_id?}`` — register or resume; sets the cookie; returns the state.
* ``GET /api/state``; ``POST /api/consent`` ``{}``; ``POST /api/logout`` ``{}`` (forgets the cookie).
* ``POST /api/step1`` ``{item, q1, q2}``; ``POST /api/step2`` ``{item, q3..q6}``: ``item`` is the opaque
  handle of the current item (see :mod:`autointerp.survey.access`), never a feature index.
* ``GET /api/image/{item}/vis/{i}`` and ``/api/image/{item}/example/{i}`` (PNG): only the signed-in
  participant's own items; dataset examples only once that participant answered the item's Q1–Q2.

A missing, malformed, unknown or wrongly signed token all get the same 401. Requests whose ``Host``
(or ``Origin``) is not on the allow-list get 400/403 (DNS rebinding); each client has a request
budget per minute (429). Responses carry no ETag/Last-Modified. Errors are ``{"error": "one line"}``
with a 4xx status; unexpected failures answer 500 with no details (the traceback goes to the server log).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from autointerp.extras import extra_imports, require
from autointerp.survey import access
from autointerp.survey.db import CHECK_FEATURE, AnswerRejected, ParticipantState
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
COOKIE = "autointerp_survey"
COOKIE_MAX_AGE = 30 * 24 * 3600
DEFAULT_RATE_LIMIT = 600  # requests per minute and client
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
UNAUTHORISED = "not signed in: open your personal survey link again"
PROLIFIC_REDIRECT = "https://app.prolific.com/submissions/complete?cc={code}"
log = logging.getLogger("autointerp.survey")

Likert = Annotated[StrictInt, Field(ge=LIKERT_MIN, le=LIKERT_MAX)]
ParticipantId = Annotated[StrictStr, Field(min_length=1, max_length=64)]
Handle = Annotated[StrictStr, Field(min_length=1, max_length=64)]
ExternalId = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass
class AppSettings:
    """How the server admits participants and what it tells them at the end.

    ``open_enrollment``: any id may register (the server signs it); otherwise only invitation tokens.
    ``prolific``: the page takes the id from Prolific's ``PROLIFIC_PID`` (and ``STUDY_ID``, ``SESSION_ID``).
    ``allowed_hosts``: host names the ``Host``/``Origin`` headers may name (loopback names always).
    ``rate_limit``: requests per minute per client (0 = no limit).
    ``completion_code`` / ``redirect_url``: shown when finished (``{code}`` in the URL is replaced).
    """

    open_enrollment: bool = False
    prolific: bool = False
    allowed_hosts: tuple[str, ...] = ()
    rate_limit: int = DEFAULT_RATE_LIMIT
    completion_code: str | None = None
    redirect_url: str | None = None
    title: str = "Feature survey"
    hosts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.hosts = frozenset(h.strip().lower().strip("[]") for h in (*LOOPBACK_NAMES, *self.allowed_hosts) if h)
        if self.prolific and self.redirect_url is None and self.completion_code:
            self.redirect_url = PROLIFIC_REDIRECT

    @property
    def completion_link(self) -> str | None:
        """The redirect URL with the completion code filled in."""
        if not self.redirect_url:
            return None
        return self.redirect_url.replace("{code}", self.completion_code or "")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartBody(_Body):
    token: Annotated[StrictStr, Field(max_length=200)] | None = None
    participant: ParticipantId | None = None
    study_id: ExternalId | None = None
    session_id: ExternalId | None = None


class EmptyBody(_Body):
    pass


class Step1Body(_Body):
    item: Handle
    q1: Likert
    q2: Annotated[StrictStr, Field(max_length=400)]


class Step2Body(_Body):
    item: Handle
    q3: Likert
    q4: Likert
    q5: Likert
    q6: Likert


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_CONDITIONAL = (b"if-modified-since", b"if-none-match", b"if-unmodified-since", b"if-match", b"if-range")


def host_name(value: str) -> str:
    """The host name of a ``Host`` header value (port and IPv6 brackets removed, lower case)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class GuardMiddleware:
    """Outermost checks on every HTTP request, before any route runs:

    * ``Host`` must name an allowed host (400), and an ``Origin`` header, when sent, an allowed host (403):
      a DNS-rebinding page or another site cannot talk to the server through a participant's browser;
    * each client (its IP address) has a token bucket of ``rate`` requests per minute (429 beyond);
    * bodies larger than ``max_bytes`` (declared or streamed) get 413;
    * no ETag / Last-Modified, and conditional request headers are dropped (file times would reveal when
      the run's files were written).
    """

    def __init__(self, app: ASGIApp, settings: AppSettings, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.settings = settings
        self.max_bytes = max_bytes
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)

    def _allowed(self, client: str) -> tuple[bool, float]:
        rate = self.settings.rate_limit
        if rate <= 0:
            return True, 0.0
        now = time.monotonic()
        tokens, last = self.buckets.get(client, (float(rate), now))
        tokens = min(float(rate), tokens + (now - last) * rate / 60.0)
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            return False, (1.0 - tokens) * 60.0 / rate
        self.buckets[client] = (tokens - 1.0, now)
        if len(self.buckets) > 100_000:  # a flood of addresses: forget the idle ones
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 120}
        return True, 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers") or []:
            if k in headers and k in (b"host", b"origin"):
                await _error(400, "duplicate Host or Origin header")(scope, receive, send)
                return
            headers[k] = v
        host = host_name(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.settings.hosts:
            await _error(400, "unknown host name; use the address the researcher gave you")(scope, receive, send)
            return
        origin = headers.get(b"origin")
        if origin is not None:
            try:
                origin_host = urlsplit(origin.decode("latin-1")).hostname or ""
            except ValueError:
                origin_host = ""
            if origin_host.lower() not in self.settings.hosts:
                await _error(403, "requests from other sites are not accepted")(scope, receive, send)
                return
        client = (scope.get("client") or ("?", 0))[0]
        ok, wait = self._allowed(str(client))
        if not ok:
            retry = {"retry-after": str(max(1, math.ceil(wait)))}
            await _error(429, "too many requests; wait a moment and try again", retry)(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        too_big = _error(413, f"request body larger than {self.max_bytes} bytes")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await too_big(scope, receive, send)
                    return
            except ValueError:
                await _error(400, "bad Content-Length")(scope, receive, send)
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

        async def send_clean(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in (b"etag", b"last-modified")
                ]
            await send(message)

        # conditional requests would let a client binary-search a file's time: answer every request in full
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope.get("headers") or [] if k not in _CONDITIONAL]
        await self.app(scope, replay, send_clean)


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


def _state_json(survey: Survey, settings: AppSettings, state: ParticipantState) -> dict[str, Any]:
    """What the browser may see: position, step and opaque image URLs — never feature, group or importance."""
    pos = state.current
    out: dict[str, Any] = {
        "participant": state.participant,
        "total": len(state.items),
        "done": state.done,
        "finished": pos is None,
        "consent_required": not state.consented,
        "current": None,
    }
    if pos is None:
        out["completion_code"] = settings.completion_code
        out["redirect"] = settings.completion_link
        return out
    item = state.items[pos]
    n_vis, n_examples = _image_counts(survey, item.feature)
    h = access.handle(survey.secret, state.participant, pos)
    cur: dict[str, Any] = {
        "item": h,
        "number": pos + 1,
        "step": state.step,
        "vis": [f"/api/image/{h}/vis/{i}" for i in range(n_vis)],
    }
    if state.step == 2:
        q2 = state.answers[pos]["q2"]
        cur["q1"] = state.answers[pos]["q1"]
        cur["q2"] = q2
        cur["phrases"] = [p for p in q2.split(", ") if p]
        cur["examples"] = [f"/api/image/{h}/example/{i}" for i in range(n_examples)]
    out["current"] = cur
    return out


def _image_counts(survey: Survey, feature: int) -> tuple[int, int]:
    if feature == CHECK_FEATURE:
        return 4, 8
    feat = survey.features[feature]
    return len(feat.vis), len(feat.examples)


_BLANK_PNG: bytes | None = None


def blank_png() -> bytes:
    """The planted check item's image: plain mid-grey, so the right answer to Q1 ("how clear are the
    objects ... if you can't recognise any objects, respond as 1") is 1."""
    global _BLANK_PNG
    if _BLANK_PNG is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (224, 224), (128, 128, 128)).save(buf, format="PNG")
        _BLANK_PNG = buf.getvalue()
    return _BLANK_PNG


def create_app(survey: Survey, settings: AppSettings | None = None) -> FastAPI:
    """The survey web app for ``survey`` (see the module docstring for its routes)."""
    settings = settings or AppSettings()
    app = FastAPI(title=settings.title, docs_url=None, redoc_url=None, openapi_url=None)
    store = survey.store
    secret = survey.secret
    if not secret:
        raise ValueError("survey has no secret; open it with autointerp.survey.loader.open_survey")

    @app.exception_handler(AnswerRejected)
    async def _rejected(request: Request, exc: AnswerRejected) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _one_line_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("survey: internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error (details are in the server log)")

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if request.url.path.startswith("/api/") and not request.url.path.startswith("/api/image/"):
            response.headers.setdefault("cache-control", "no-store")
        return response

    def who(request: Request) -> str:
        """The signed-in participant; the same 401 for every kind of bad or missing token."""
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.cookies.get(COOKIE)
        participant = access.verify(secret, token)
        if participant is None:
            raise AnswerRejected(401, UNAUTHORISED)
        return participant

    def state_of(participant: str) -> ParticipantState:
        try:
            return store.state(participant)
        except AnswerRejected as exc:
            if exc.status == 404:
                raise AnswerRejected(401, UNAUTHORISED) from None
            raise

    def position_of(state: ParticipantState, item: str) -> int:
        for pos in range(len(state.items)):
            if access.hmac_equal(access.handle(secret, state.participant, pos), item):
                return pos
        raise AnswerRejected(404, "no such item in your survey")

    def reply(state: ParticipantState) -> dict[str, Any]:
        return _state_json(survey, settings, state)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"cache-control": "no-store"})

    def _questions() -> list[dict[str, Any]]:
        return [
            {"key": q.key, "step": q.step, "kind": q.kind, "text": q.text, "low": q.low, "high": q.high}
            for q in QUESTIONS
        ]

    @app.get("/api/questions")
    def questions() -> dict[str, Any]:
        return {"questions": _questions()}

    @app.get("/api/config")
    def config() -> dict[str, Any]:
        return {
            "title": settings.title,
            "questions": _questions(),
            "open_enrollment": settings.open_enrollment,
            "prolific": settings.prolific,
            "consent": survey.consent_text,
        }

    @app.post("/api/start")
    def start(body: StartBody, request: Request, response: Response) -> dict[str, Any]:
        if body.token is not None:
            if body.participant is not None:
                raise AnswerRejected(422, "give either token or participant, not both")
            participant = access.verify(secret, body.token)
            if participant is None:
                raise AnswerRejected(401, UNAUTHORISED)
        elif body.participant is not None and settings.open_enrollment:
            participant = body.participant
        else:
            raise AnswerRejected(401, UNAUTHORISED)
        state = store.start(
            participant,
            study_id=body.study_id,
            session_id=body.session_id,
            withdrawn_key=access.withdrawn_key(secret, participant),
        )
        response.set_cookie(
            COOKIE,
            access.sign(secret, participant),
            max_age=COOKIE_MAX_AGE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return reply(state)

    @app.get("/api/state")
    def state(request: Request) -> dict[str, Any]:
        return reply(state_of(who(request)))

    @app.post("/api/logout")
    def logout(body: EmptyBody, response: Response) -> dict[str, Any]:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return {"signed_out": True}

    @app.post("/api/consent")
    def consent(body: EmptyBody, request: Request) -> dict[str, Any]:
        participant = who(request)
        state_of(participant)
        return reply(store.consent(participant))

    @app.post("/api/step1")
    def step1(body: Step1Body, request: Request) -> dict[str, Any]:
        st = state_of(who(request))
        pos = position_of(st, body.item)
        return reply(store.submit_step1(st.participant, pos, body.q1, body.q2))

    @app.post("/api/step2")
    def step2(body: Step2Body, request: Request) -> dict[str, Any]:
        st = state_of(who(request))
        pos = position_of(st, body.item)
        return reply(store.submit_step2(st.participant, pos, body.q3, body.q4, body.q5, body.q6))

    def _image(request: Request, item: str, kind: str, i: int) -> Response:
        st = state_of(who(request))
        pos = position_of(st, item)
        if kind == "example" and pos not in st.answers:
            raise AnswerRejected(403, "dataset examples are shown only after Q1-Q2 are answered for this feature")
        feature = st.items[pos].feature
        n_vis, n_examples = _image_counts(survey, feature)
        n = n_vis if kind == "vis" else n_examples
        if not 0 <= i < n:
            raise AnswerRejected(404, f"no image {i} (have {n})")
        headers = {"cache-control": "private, no-store"}
        if feature == CHECK_FEATURE:
            return Response(blank_png(), media_type="image/png", headers=headers)
        feat = survey.features[feature]
        path = (feat.vis if kind == "vis" else feat.examples)[i]
        try:
            data = path.read_bytes()
        except OSError:
            log.error("survey: image missing from the run folder: %s", path)
            raise AnswerRejected(404, f"image {i} is missing on the server; tell the researcher") from None
        expected = survey.image_sha256.get(path)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            log.error("survey: %s changed on disk while serving; restart the server to check the study's images", path)
            raise AnswerRejected(503, "this image changed on the server; please tell the researcher")
        return Response(data, media_type="image/png", headers=headers)

    @app.get("/api/image/{item}/vis/{i}")
    def vis_image(item: str, i: int, request: Request) -> Response:
        return _image(request, item, "vis", i)

    @app.get("/api/image/{item}/example/{i}")
    def example_image(item: str, i: int, request: Request) -> Response:
        return _image(request, item, "example", i)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(GuardMiddleware, settings=settings, max_bytes=MAX_BODY_BYTES)
    return app


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this computer only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    survey: Survey,
    settings: AppSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    ssl_certfile: str | Path | None = None,
    ssl_keyfile: str | Path | None = None,
) -> None:
    """Run the survey on a real server (uvicorn) until interrupted (Ctrl+C); HTTPS with a certificate."""
    uvicorn = require("uvicorn", "survey", "the survey")
    uvicorn.run(
        create_app(survey, settings),
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )
