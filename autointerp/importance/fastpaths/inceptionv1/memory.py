"""Keep freed memory in the process, so the fast path's large temporaries are not page-faulted in again.

The InceptionV1 path allocates and frees tensors of megabytes thousands of times per chunk (rank-1
updates of the bottleneck maps, int8 patch matrices and products, (pairs × outputs) margins). glibc
serves such sizes with ``mmap`` and returns them to the system on ``free``, so every allocation
touches fresh pages. Raising glibc's mmap threshold to its 32 MiB maximum and its trim threshold to
1 GiB, with a single malloc arena (worker threads' own arenas release freed memory by their own
rules), makes ``free`` keep that memory for the next allocation (figures: docs/performance.md). Freed
memory up to the trim threshold then stays in the process's resident set.

:func:`keep_freed_memory` applies this once per process where the C library is glibc (Linux); it
is a no-op returning False elsewhere, and results never depend on it. It is process-wide, so nothing
calls it on import: a process that runs the path asks for it explicitly
(:meth:`~autointerp.importance.fastpaths.FastPath.prepare_process`, called by each worker process
before it allocates, and by the stage where it runs the path in its own process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Set glibc's arena count and mmap / trim thresholds (module doc) once; True when both thresholds
    were accepted (the arena count is a best effort: glibc may already have more arenas)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # one arena: worker threads' own arenas give freed memory back by their own rules (madvise)
    mallopt(_M_ARENA_MAX, 1)
    return mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
