"""Atomic writes: a process killed mid-write leaves only litter, and the next write of the same path cleans up
the litter of dead processes (never that of a live one)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autointerp.atomic import atomic_dir, atomic_path, write_text

KILLED_MID_WRITE = """
import os, sys, time
from autointerp.atomic import atomic_dir, atomic_path
target = sys.argv[1]
with (atomic_dir if sys.argv[2] == "dir" else atomic_path)(target) as tmp:
    if sys.argv[2] == "dir":
        (tmp / "half.txt").write_text("half")
    else:
        tmp.write_text("half")
    print(tmp, flush=True)
    time.sleep(60)
"""


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_litter_of_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "out.txt"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(target), kind], stdout=subprocess.PIPE)
    tmp = Path(proc.stdout.readline().decode().strip())
    assert tmp.exists() and tmp.parent == tmp_path
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists() and _litter(tmp_path) == [tmp.name]  # nothing that looks complete

    if kind == "dir":
        with atomic_dir(target) as fresh:
            (fresh / "whole.txt").write_text("whole")
        assert (target / "whole.txt").read_text() == "whole"
    else:
        write_text(target, "whole")
        assert target.read_text() == "whole"
    assert _litter(tmp_path) == []


def test_a_live_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_path(target) as mine:
        mine.write_text("in progress")
        write_text(target, "other write")  # same process, same path: its own temp file must survive
        assert mine.exists()
        # a temp file of another live process (our parent) is not litter either
        other = tmp_path / mine.name.replace(f"-{os.getpid()}.", f"-{os.getppid()}.")
        other.write_text("theirs")
        write_text(target, "third write")
        assert other.exists()
    assert target.read_text() == "in progress"
