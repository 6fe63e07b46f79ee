"""Atomic writes: never leave a half-written file or folder that looks complete.

Write into a temporary sibling, then ``os.replace`` it into place. A crash (even SIGKILL) leaves only
``.NAME.HOST-PID.*.tmp*`` litter, which stages ignore; the next write of the same path on the same host
removes the litter of processes that are no longer alive.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autointerp.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create output folder ({exc.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{path.parent}: output folder is not writable")


def _owner_tag() -> str:
    """``HOST-PID`` of this process, as written into temp names (no dots: the name's fields are dot-separated)."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _temp_prefix(path: Path) -> str:
    """Prefix of this process's temp siblings of ``path``; removes dead processes' litter of ``path`` first."""
    host = socket.gethostname().replace(".", "_")
    for litter in path.parent.glob(f".{_glob_escape(path.name)}.{_glob_escape(host)}-*.*.tmp*"):
        pid = litter.name[len(path.name) + len(host) + 3 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if litter.is_dir():
                shutil.rmtree(litter, ignore_errors=True)
            else:
                litter.unlink(missing_ok=True)
    return f".{path.name}.{_owner_tag()}."


def _glob_escape(text: str) -> str:
    return glob.escape(text)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    ``suffix`` keeps the extension on the temp file (some writers, like ``np.save``, add one).
    """
    path = Path(path)
    _ensure_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; swap it into place if the block succeeds."""
    path = Path(path)
    _ensure_parent(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write a text file (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_safe(obj: Any, unknown: Any = None) -> Any:
    """A JSON-safe copy of ``obj``: NaN/inf become None, numpy scalars and arrays Python numbers and lists,
    tuples lists, paths strings, keys strings. Any other object is ``unknown(obj)`` (e.g. ``str``), or a
    TypeError when ``unknown`` is None. The one NaN sanitiser: every JSON file goes through it."""
    import math

    if isinstance(obj, dict):
        return {str(k): json_safe(v, unknown) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, unknown) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int)):  # numpy integers are not Python ints
        return obj
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if type(obj).__module__ == "numpy":
        import numpy as np

        if isinstance(obj, np.ndarray):
            return json_safe(obj.tolist(), unknown)
        if isinstance(obj, np.generic):
            return json_safe(obj.item(), unknown)
    if unknown is not None:
        return unknown(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def dumps_json(obj: Any) -> str:
    """``obj`` as indented JSON text (through :func:`json_safe`: NaN/inf written as null)."""
    return json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write JSON (indented; NaN/inf written as null)."""
    write_text(path, dumps_json(obj))


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write a binary file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_npy(path: str | os.PathLike[str], array: Any) -> None:
    """Atomically save a numpy array."""
    import numpy as np

    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)
