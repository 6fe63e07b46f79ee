"""Shared fixtures. ``../shared`` (real data, models, the seed study) exists for developers and CI
but not on a user's fresh clone: tests that need it use ``shared_dir`` and skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOINTERP_SHARED", REPO.parent / "shared"))

os.environ.setdefault("AUTOINTERP_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder; skips the test when it is absent (e.g. a user's fresh clone)."""
    if not (SHARED / "README.md").exists():
        pytest.skip(f"needs the shared data folder {SHARED} (present for developers and CI only)")
    return SHARED
