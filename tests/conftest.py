"""Shared fixtures. ``../shared`` (real data, models, the seed study) exists for developers and CI
but not on a user's fresh clone: tests that need it use ``shared_dir`` and skip when it is absent."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from skips import STRICT, skip_unless_available

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOINTERP_SHARED", REPO.parent / "shared"))

os.environ.setdefault("AUTOINTERP_NO_PROGRESS", "1")

# Tests never write into the user's ~/.cache/autointerp: one temporary cache per test session (the demo model is
# trained into it once, the C loops built into it once). AUTOINTERP_TEST_CACHE=DIR keeps one across sessions.
_CACHE = os.environ.get("AUTOINTERP_TEST_CACHE") or tempfile.mkdtemp(prefix="autointerp-test-cache-")
if not os.environ.get("AUTOINTERP_TEST_CACHE"):
    atexit.register(shutil.rmtree, _CACHE, True)
os.environ["AUTOINTERP_CACHE"] = _CACHE
os.environ["AUTOINTERP_KERNEL_CACHE"] = os.path.join(_CACHE, "kernels")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder; skips the test when it is absent (e.g. a user's fresh clone)."""
    if not (SHARED / "README.md").exists():
        skip_unless_available(f"needs the shared data folder {SHARED} (present for developers and CI only)")
    return SHARED


# ---------------------------------------------------------------- headless Chromium (Debian's package)
CHROMIUM = Path(os.environ.get("AUTOINTERP_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: mark for browser tests: skipped with a reason where Debian's chromium is absent (.ci/run installs it)
requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and not STRICT, reason=f"needs Debian chromium ({CHROMIUM}): apt-get install chromium"
)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by Playwright (its own browser download fails offline)."""
    if not CHROMIUM.exists():
        skip_unless_available(f"needs Debian chromium ({CHROMIUM}): apt-get install chromium")
    from playwright import sync_api  # a [dev] dependency: a missing one is a broken install, not a skip

    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny torch problems: one thread avoids OpenMP overhead on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
