"""Crash and resume for real: a stage killed with SIGKILL mid-way, then run again by the same command,
gives byte-identical outputs to an uninterrupted run (a random-init model, so every process must also build
the same network)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autointerp.config import config_from_dict
from autointerp.runfolder import RunContext

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")

ENV = {**os.environ, "AUTOINTERP_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _config(n_images: int):
    return config_from_dict(
        {
            "name": "kill",
            "seed": 3,
            "device": "cpu",
            "model": {"name": "torchvision", "pretrained": False, "options": {"arch": "resnet18"}},
            "layer": "layer4",
            "dataset": {"type": "synthetic", "options": {"n_images": n_images, "seed": 2}, "image_size": 64},
            "activations": {"batch_size": 8, "top_k": 4},
            "importance": {"k": 5, "chunk_size": 64, "segment_images": 8, "batch_size": 8},
        }
    )


def _command(stage: str, root: Path) -> list[str]:
    return [sys.executable, "-m", "autointerp", stage, str(root)]


def _kill_when(cmd: list[str], ready, timeout: float = 120.0) -> None:
    """Start ``cmd``; SIGKILL it as soon as ``ready()`` holds; fail if it finished first."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"{cmd[3]} finished (rc {proc.returncode}) before it could be killed mid-way: {err[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{cmd[3]} made no progress in {timeout} s")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_activations_and_importance_killed_mid_way_resume_to_identical_outputs(tmp_path: Path) -> None:
    cfg = _config(n_images=96)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    RunContext.create(cfg, clean)
    RunContext.create(cfg, killed)

    # activations: killed once its first checkpoint is on disk, then resumed from it
    _run(_command("activations", clean))
    checkpoint = killed / "activations.partial" / "checkpoint.npz"
    _kill_when(_command("activations", killed), checkpoint.exists)
    _run(_command("activations", killed))
    assert _files(killed / "activations") == _files(clean / "activations")

    # importance: killed after a few units were saved, then resumed
    _run(_command("importance", clean))
    units = killed / "importance" / "chunks"
    _kill_when(_command("importance", killed), lambda: units.exists() and len(list(units.rglob("*.npz"))) >= 3)
    assert not (killed / "importance" / "importance.csv").exists()
    _run(_command("importance", killed))
    for name in ("importance.csv", "reliability.json", "bootstrap.csv"):
        assert (killed / "importance" / name).read_bytes() == (clean / "importance" / name).read_bytes(), name
    shutil.rmtree(tmp_path)
