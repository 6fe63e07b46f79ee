"""Fail fast instead of hanging when weights must come from the network and there is none."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from autointerp.errors import WeightsError


def network_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_if_unreachable(host: str = "huggingface.co") -> Iterator[bool]:
    """Run the block with the Hugging Face hub in offline mode when it is unreachable.

    ``HF_HUB_OFFLINE=1`` set by the user is respected (also when huggingface_hub was imported
    before it was set). Otherwise the hub is probed once (3 s); when unreachable, offline mode is
    switched on for the block so cached weights still load and missing ones fail at once rather
    than after a minute of retries. Yields whether the block runs offline.
    """
    user_offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not user_offline and network_reachable(host):
        yield False
        return
    # huggingface_hub reads HF_HUB_OFFLINE once at import: set the live constant too, so that a
    # user's (or our) offline setting applies even when the library was imported earlier.
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    old_const = None
    try:
        import huggingface_hub.constants as constants  # type: ignore[no-redef]

        old_const = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover - huggingface_hub absent or changed
        constants = None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        yield True
    finally:
        socket.setdefaulttimeout(old_timeout)
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def weights_error(what: str, exc: BaseException, hint: str) -> WeightsError:
    """A one-line WeightsError for weights that could not be loaded."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return WeightsError(f"{what}: weights unavailable ({first[:200]}); {hint}")
