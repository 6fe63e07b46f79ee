"""keep_freed_memory (fastpaths.inceptionv1.memory): freed megabyte-sized tensors are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import ctypes, sys
    import torch
    from autointerp.importance.fastpaths.inceptionv1.memory import keep_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    applied = keep_freed_memory() if sys.argv[1] == "on" else False
    xs = [torch.empty(2 * 1024 * 1024).fill_(1.0) for _ in range(3)]  # three 8 MiB tensors
    del xs
    print(int(applied), libc.mallinfo2().fordblks)  # free bytes kept in the heap for reuse
    """
)


def _kept_after_free(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    applied, kept = out.stdout.split()
    return applied == "1", int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings: Linux only")
def test_freed_tensors_stay_in_the_heap_for_reuse():
    """glibc's default returns freed 8 MiB blocks to the system (the next allocation faults its pages
    in again); with the setting they stay in the heap (mallinfo2's free bytes) for the next one."""
    try:
        applied, kept = _kept_after_free("on")
    except subprocess.CalledProcessError:
        pytest.skip("no glibc mallinfo2 here")
    if not applied:
        pytest.skip("the C library here is not glibc (no mallopt)")
    _, kept_default = _kept_after_free("off")
    assert kept >= 24 * 1024 * 1024  # all three blocks
    assert kept_default < 8 * 1024 * 1024  # returned to the system


def test_keep_freed_memory_is_idempotent():
    from autointerp.importance.fastpaths.inceptionv1.memory import keep_freed_memory

    assert keep_freed_memory() is keep_freed_memory()
