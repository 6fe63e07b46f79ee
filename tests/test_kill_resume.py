"""Crash and resume for real: a stage killed with SIGKILL mid-way, then run again by the same command,
gives byte-identical outputs to an uninterrupted run (a random-init model, so every process must also build
the same network)."""

from __future__ import annotations

import json
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
            "activations": {"batch_size": 8, "top_k": 4, "shard_images": 16},
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


def _demo_config(trained: bool = True):
    """The embedded demo world, reduced: its CNN *trained* (on first use, into the test cache), or random-init
    (seeded from the config's seed, so every process builds the same network)."""
    from autointerp.cli.core import DEMO_CONFIG
    from autointerp.config import load_config

    data = load_config(DEMO_CONFIG).model_dump()
    data["name"] = "kill-demo"
    data["model"]["pretrained"] = trained
    data["dataset"]["options"]["n_images"] = 300
    data["activations"].update(batch_size=2, shard_images=4)  # many checkpoints, so the kill lands mid-way
    data["visualize"].update({"steps": 12, "batch_features": 3, "features": list(range(9))})
    data["rate"]["raters"] = ["clip_coherence", "fid", "mis", "random", "concept_purity", "auto_I"]
    data["report"].update({"bootstrap": 50, "permutations": 50})
    return config_from_dict(data)


#: how long a step took and how much memory it used: the only things two runs may differ in
TIMINGS = {"seconds", "peak_rss_mb", "worker_peak_rss_mb"}


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMINGS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _outputs(run: Path) -> dict[str, object]:
    """Every output file of a run (bytes; JSON without its timing fields), not the stages' resumable state."""
    import json

    out: dict[str, object] = {}
    for name, data in _files(run).items():
        if name == "config.yaml" or name.startswith("importance/chunks/"):
            continue
        out[name] = _without_timings(json.loads(data)) if name.endswith(".json") else data
    return out


def _count(folder: Path, pattern: str, n: int):
    return lambda: folder.exists() and len(list(folder.glob(pattern))) >= n


@pytest.mark.slow
@pytest.mark.parametrize("trained", [True, False], ids=["trained", "random_init"])
def test_every_stage_killed_mid_way_resumes_to_identical_outputs(tmp_path: Path, trained: bool) -> None:
    cfg = _demo_config(trained)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    RunContext.create(cfg, clean)
    RunContext.create(cfg, killed)
    # the uninterrupted run (this also trains the demo CNN once, into the test cache both runs share)
    for stage in ("activations", "importance", "examples", "visualize", "rate", "report"):
        _run(_command(stage, clean))

    when = {
        "activations": lambda: (killed / "activations.partial" / "checkpoint.npz").exists(),
        "importance": _count(killed / "importance" / "chunks", "**/*.npz", 1),
        "examples": _count(killed / "examples", "[0-9]*/top_0.png", 3),
        "visualize": _count(killed / "visualizations", "[0-9]*/meta.json", 1),
        "rate": _count(killed / "ratings", "*.csv", 1),
        "report": lambda: any(killed.glob(".report.*.tmp")),  # the report's folder is being written
    }
    for stage, ready in when.items():
        _kill_when(_command(stage, killed), ready)
        _run(_command(stage, killed))
    a, b = _outputs(clean), _outputs(killed)
    assert sorted(a) == sorted(b)
    differ = sorted(name for name in a if a[name] != b[name])
    assert not differ, differ[:20]
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_importance_in_two_worker_processes_killed_mid_way_resumes_to_identical_outputs(tmp_path: Path) -> None:
    """The InceptionV1 fast path runs its units in worker processes: SIGKILL the stage (its workers die with the
    parent's pipes) after a few units were saved, re-run it, and get the uninterrupted run's bytes."""
    cfg = config_from_dict(
        {
            "name": "kill-workers",
            "seed": 5,
            "device": "cpu",
            "model": {"name": "inceptionv1", "pretrained": False},
            "layer": "mixed5a",
            "dataset": {"type": "synthetic", "options": {"n_images": 24, "seed": 2}, "image_size": 224},
            "label_mapping": {"type": "identity", "offset": 1},  # output 0 is a dummy
            "activations": {"batch_size": 8, "top_k": 4, "shard_images": 8},
            "importance": {
                "k": 5,
                "features": list(range(48)),
                "chunk_size": 8,
                "segment_images": 8,
                "batch_size": 8,
                "workers": 2,
                "reliability_boot": 50,
            },
        }
    )
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    RunContext.create(cfg, clean)
    _run(_command("activations", clean))
    shutil.copytree(clean, killed)  # the same activation cache: this test is about the importance stage
    _run(_command("importance", clean))
    summary = json.loads((clean / "importance" / "summary.json").read_text())["exact"]
    assert summary["workers"] == 2 and summary["path"].startswith("inception_mixed5a"), summary
    units = killed / "importance" / "chunks"
    _kill_when(_command("importance", killed), lambda: units.exists() and len(list(units.rglob("*.npz"))) >= 4)
    assert not (killed / "importance" / "importance.csv").exists()
    _run(_command("importance", killed))
    for name in ("importance.csv", "importance_exact.csv", "reliability.json", "bootstrap.csv"):
        assert (killed / "importance" / name).read_bytes() == (clean / "importance" / name).read_bytes(), name
    shutil.rmtree(tmp_path)
