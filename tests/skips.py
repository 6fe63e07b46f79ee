"""Skips that CI must never take silently.

A test that needs something a user's machine may lack (``../shared``, Debian's chromium, a C
compiler, a working ``torch.compile``) skips with a reason there. ``.ci/run`` sets
``AUTOINTERP_STRICT_SKIPS=1``, which turns exactly these skips into failures: CI has all of them, so
a skip there means a broken install step or a broken import, not a missing extra.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("AUTOINTERP_STRICT_SKIPS") == "1"


def skip_unless_available(reason: str) -> None:
    """Skip with ``reason``; fail instead under ``AUTOINTERP_STRICT_SKIPS=1`` (CI)."""
    if STRICT:
        pytest.fail(f"{reason} — and AUTOINTERP_STRICT_SKIPS=1 (CI) forbids skipping it", pytrace=False)
    pytest.skip(reason)
