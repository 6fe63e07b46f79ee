"""Who may answer: the survey's secret, signed invitation tokens and opaque per-participant item handles.

* The secret is 32 random bytes (:mod:`secrets`) in ``secret.key`` next to the answers database
  (``RUN/survey/secret.key``), created with file mode 0600 and refused when others can read it.
* A token is ``base64url(participant) "." base64url(HMAC-SHA256(secret, participant))``: the server
  checks it without a lookup, so an unknown id and a known id with a wrong signature are refused the
  same way (nothing to probe). Invitation links carry one after ``#`` (``/#t=TOKEN``: a fragment is
  never sent to the server, so tokens stay out of access logs); with open enrollment the
  server signs the id a participant (or Prolific) gives it.
* A handle names one item (position) of one participant's assignment, ``HMAC(secret, participant, position)``
  truncated to 128 bits: URLs and API bodies never contain a feature index, and another participant's
  handle means nothing to the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from autointerp.errors import UserError

SECRET_NAME = "secret.key"
_TOKEN_CONTEXT = b"autointerp-survey-token\x00"
_HANDLE_CONTEXT = b"autointerp-survey-item\x00"
_WITHDRAWN_CONTEXT = b"autointerp-survey-withdrawn\x00"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def secret_path(survey_dir: str | Path) -> Path:
    """``SURVEY_DIR/secret.key``."""
    return Path(survey_dir) / SECRET_NAME


def load_secret(survey_dir: str | Path, create: bool = True) -> bytes:
    """The survey's secret; created (mode 0600, never overwritten) when missing and ``create``."""
    path = secret_path(survey_dir)
    if not path.exists():
        if not create:
            raise UserError(f"{path}: no survey secret; run `autointerp survey invite` or `serve` first")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"{path}: readable by other users (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}`")
    text = path.read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise UserError(f"{path}: expected 64 hex digits (the survey secret); delete it to make a new one")
    return key


def sign(secret: bytes, participant: str) -> str:
    """The access token of ``participant``."""
    mac = hmac.new(secret, _TOKEN_CONTEXT + participant.encode("utf-8"), hashlib.sha256).digest()
    return f"{_b64(participant.encode('utf-8'))}.{_b64(mac)}"


def verify(secret: bytes, token: object) -> str | None:
    """The participant a token was signed for, or None (malformed, unknown or wrong: all the same)."""
    if not isinstance(token, str) or len(token) > 200 or token.count(".") != 1:
        return None
    head, _, tail = token.partition(".")
    try:
        participant = _unb64(head).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return participant if hmac.compare_digest(sign(secret, participant), token) else None


def handle(secret: bytes, participant: str, position: int) -> str:
    """The opaque name of item ``position`` of ``participant``'s assignment."""
    msg = _HANDLE_CONTEXT + f"{participant}\x00{position}".encode()
    return _b64(hmac.new(secret, msg, hashlib.sha256).digest()[:16])


def withdrawn_key(secret: bytes, participant: str) -> str:
    """What the database keeps of a withdrawn participant: a keyed hash, not the id."""
    return hmac.new(secret, _WITHDRAWN_CONTEXT + participant.encode("utf-8"), hashlib.sha256).hexdigest()


def hmac_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two handles or tokens."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
