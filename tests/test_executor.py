"""The executor (autointerp.executor): units in this process, in local worker processes or as Ray tasks
give the same results in the same order; the demo pipeline with ``--executor ray`` on a local Ray cluster
writes byte-identical importance, ratings and visualisations to ``--executor local``; a Ray worker killed
after its first unit changes nothing (the task is retried); bad executor settings are one-line errors
before any work."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.cli.core import DEMO_CONFIG
from autointerp.config import RunConfig
from autointerp.errors import UserError
from autointerp.executor import KILL_HOOK_ENV, InProcessSession, ProcessSession, WorkerError, check_executor
from tests.skips import skip_unless_available

FAST = ["--set", "dataset.options.n_images=400", "--set", "visualize.steps=8", "--set", "activations.shard_images=100"]
STAGES = "activations,importance,examples,visualize,rate"


class SquareTask:
    """A planted task: units are integers, a unit's result is (unit², the worker's pid, its setup)."""

    label = "square"
    threads = 1
    cuda = False

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on

    def setup(self) -> str:
        return "ready"

    def run(self, state: str, unit: int, progress: Callable[[int], None]) -> tuple[int, int, str]:
        if unit == self.fail_on:
            raise ValueError(f"planted failure on unit {unit}")
        progress(1)
        return unit * unit, os.getpid(), state

    def weight(self, unit: int) -> int:
        return 1

    def describe(self, state: str) -> dict[str, Any]:
        return {"state": state}


def _collect(session: Any, units: list[int]) -> tuple[list[tuple[int, Any]], list[int]]:
    got: list[tuple[int, Any]] = []
    progress: list[int] = []
    session.map(units, lambda u, r: got.append((u, r)), progress.append)
    return got, progress


def test_in_process_and_worker_processes_give_results_in_unit_order() -> None:
    units = [5, 3, 8, 1, 9, 2]
    with InProcessSession(SquareTask()) as here:
        local, progress = _collect(here, units)
        assert here.description == {"state": "ready"}
    assert [(u, r[0]) for u, r in local] == [(u, u * u) for u in units]
    assert {r[1] for _, r in local} == {os.getpid()} and sum(progress) == len(units)
    with ProcessSession(SquareTask(), 2) as pool:
        spread, progress = _collect(pool, units)
        assert pool.description == {"state": "ready"}
    assert [(u, r[0], r[2]) for u, r in spread] == [(u, u * u, "ready") for u in units]  # order as given
    assert os.getpid() not in {r[1] for _, r in spread} and sum(progress) == len(units)


def test_a_failing_unit_in_a_worker_process_is_reported_with_its_traceback() -> None:
    with pytest.raises(WorkerError, match=r"(?s)square worker \d failed:.*planted failure on unit 3"):
        with ProcessSession(SquareTask(fail_on=3), 2) as pool:
            _collect(pool, [1, 2, 3, 4])


def test_stage_workers_share_the_cpus_and_units_run_with_the_tasks_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from autointerp import executor

    monkeypatch.setattr(executor, "available_cpus", lambda: 8)
    assert executor.stage_workers(1, 10, "visualize") == (1, None)  # this process, the driver's threads
    assert executor.stage_workers(2, 10, "visualize") == (2, 4)
    assert executor.stage_workers(3, 10, "visualize") == (3, 2)
    assert executor.stage_workers(16, 10, "visualize") == (10, 1)  # a process per unit at most; threads: the setting's
    assert executor.stage_workers(4, 1, "visualize") == (1, 2)  # one unit: this process, still 2 threads
    with pytest.raises(UserError, match="visualize: workers must be a positive integer"):
        executor.stage_workers(0, 10, "visualize")

    class ThreadsTask(SquareTask):
        threads = 1

        def run(self, state: str, unit: int, progress: Callable[[int], None]) -> tuple[int, int, str]:
            return torch.get_num_threads(), os.getpid(), state

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with InProcessSession(ThreadsTask()) as here:
            got, _ = _collect(here, [1, 2])
        assert [r[0] for _, r in got] == [1, 1]  # the task's threads, in this process too
        assert torch.get_num_threads() == 2  # and the driver's own back afterwards
    finally:
        torch.set_num_threads(before)


WORKERS = ["--set", "activations.workers=2", "--set", "visualize.workers=2", "--set", "rate.workers=2"]


def test_local_worker_processes_in_every_stage_equal_this_process_at_the_same_threads(tmp_path: Path) -> None:
    """``workers: 2`` in activations, visualize and rate runs their units in two local processes (stderr says
    so) and writes the same bytes as one process running with the threads each worker had."""
    import torch

    from autointerp.executor import available_cpus

    threads = max(1, available_cpus() // 2)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the driver's threads (importance runs here either way)
    try:
        runs = {}
        for name, extra in (("one", []), ("two", WORKERS)):
            out = tmp_path / name
            batches = ["--set", "visualize.batch_features=8"]  # the demo's 32 features: four units, not one
            cmd = ["run", str(DEMO_CONFIG), "--out", str(out), "--stages", STAGES, *FAST, *batches, *extra]
            result = CliRunner().invoke(app, cmd)
            assert result.exit_code == 0, result.output
            runs[name] = (out, result.output)
    finally:
        torch.set_num_threads(before)
    spread = runs["two"][1]
    for label in ("activations", "visualize", "rate"):
        assert f"[{label}] 2 worker processes, {threads} thread(s) each" in spread, label
    assert "worker processes" not in runs["one"][1]
    one, two = _outputs(runs["one"][0]), _outputs(runs["two"][0])
    assert len(one) > 10 and any(k.startswith("ratings/") for k in one)
    assert sorted(two) == sorted(one)
    assert [n for n in one if one[n] != two[n]] == []
    # the prefetched embeddings, computed in the worker processes, are the rows the one-process run stored first
    first, spread_cache = _embedding_cache(runs["one"][0]), _embedding_cache(runs["two"][0])
    n = len(spread_cache["keys"])
    assert n > 100
    for name in ("keys", "embeddings"):
        np.testing.assert_array_equal(spread_cache[name], first[name][:n], err_msg=name)


class FakeRay:
    """Just enough of the ``ray`` module for :class:`RaySession`, in this process: a task runs when its
    result is asked for; counts what is in flight and records any ``cancel``."""

    class exceptions:  # the ray module's own name
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            pass

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus
        self.units: list[Any] = []  # unit tasks, in submission order
        self.in_flight = self.max_in_flight = 0
        self.cancelled: list[Any] = []

    def nodes(self) -> list[dict[str, Any]]:
        return [{"Alive": True, "Resources": {"CPU": self.cpus}}]

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": float(self.cpus)}

    def put(self, obj: Any) -> Any:
        return obj

    def remote(self, fn: Callable[..., Any]) -> Any:
        fake = self

        class Remote:
            def options(self, **_: Any) -> Remote:
                return self

            def remote(self, *args: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
                if fn.__name__ == "_ray_unit":
                    fake.units.append(args[3])
                fake.in_flight += 1
                fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                return fn, args

        return Remote()

    def get(self, ref: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
        fn, args = ref
        self.in_flight -= 1
        try:
            return fn(*args)
        except Exception as exc:
            raise self.exceptions.RayTaskError(str(exc)) from exc

    def cancel(self, ref: Any, **_: Any) -> None:
        self.cancelled.append(ref)


def test_ray_session_keeps_a_bounded_window_in_flight_and_never_cancels() -> None:
    """2 CPUs, 1 CPU per task: at most 4 tasks in flight, results in unit order; a failing unit stops the
    submissions and cancels nothing (cancelling crashes Ray 2.60's driver when a reply is on its way)."""
    import torch

    from autointerp.executor import RaySession

    threads = torch.get_num_threads()
    try:
        units = list(range(20))
        fake = FakeRay(cpus=2)
        with RaySession(SquareTask(), fake) as s:
            got, progress = _collect(s, units)
        assert [(u, r[0]) for u, r in got] == [(u, u * u) for u in units] and sum(progress) == len(units)
        assert fake.units == units and fake.max_in_flight == 4 and fake.in_flight == 0
        fake = FakeRay(cpus=2)
        with pytest.raises(WorkerError, match="planted failure on unit 5"):
            with RaySession(SquareTask(fail_on=5), fake) as s:
                _collect(s, units)
        assert fake.units == list(range(9)) and fake.cancelled == []  # units 0-4 done, 5 failed, 6-8 queued
    finally:
        torch.set_num_threads(threads)


# -- bad input: one line, before any work -----------------------------------------------------------
def test_ray_not_installed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as on a core install
    with pytest.raises(UserError, match=r"needs the \[ray\] extra: pip install 'autointerp\[ray\]'") as err:
        check_executor(RunConfig(executor="ray"))
    assert "\n" not in str(err.value)


def test_unreachable_address_and_address_without_ray(tmp_path: Path) -> None:
    if importlib.util.find_spec("ray") is None:
        skip_unless_available("ray is not installed (pip install 'autointerp[ray]')")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=rf"cannot reach a Ray cluster at '127.0.0.1:{port}'") as err:
        check_executor(RunConfig(executor="ray", ray_address=f"127.0.0.1:{port}"))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="expected auto or HOST:PORT"):
        check_executor(RunConfig(executor="ray", ray_address="nohost"))
    with pytest.raises(UserError, match="'executor' is 'local'"):
        check_executor(RunConfig(ray_address="auto"))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(DEMO_CONFIG), "--out", str(out), "--address", "auto"])
    assert isinstance(result.exception, UserError) and "--executor ray" in str(result.exception)
    assert not out.exists()  # refused before the run folder was made


def test_cuda_without_cuda_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="'device' = 'cuda' but no CUDA device"):
        check_executor(RunConfig(device="cuda"))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(DEMO_CONFIG), "--out", str(out), "--set", "device=cuda"])
    assert isinstance(result.exception, UserError) and "no CUDA device" in str(result.exception)
    assert not out.exists()


# -- a real local Ray cluster, driven from child processes (tests/ray_driver.py) --------------------
ROOT = Path(__file__).resolve().parents[1]
RAY_LOGS = ("gcs_server.out", "gcs_server.err", "raylet.out", "raylet.err")


@pytest.fixture(scope="module")
def ray_installed() -> None:
    if importlib.util.find_spec("ray") is None:
        skip_unless_available("ray is not installed (pip install 'autointerp[ray]')")


def _ray_driver(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tests.ray_driver ARGS`` from the repository root: a driver that starts its own local Ray
    cluster (2 CPUs), so a cluster that dies ends that process, not this test session."""
    return subprocess.run(
        [sys.executable, "-m", "tests.ray_driver", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


def _explain(proc: subprocess.CompletedProcess[str]) -> str:
    """The driver's exit code and output tails, and the tails of the Ray session's own logs (a cluster that
    died says why there)."""
    parts = [f"exit code {proc.returncode}", "stdout:", proc.stdout[-3000:], "stderr:", proc.stderr[-6000:]]
    temp = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "session_latest" / "logs"
    for name in RAY_LOGS:
        log = temp / name
        if log.is_file():
            parts += [f"{log}:", "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])]
    return "\n".join(parts)


def _ray_cli(*args: str, expect: int = 0, mode: str = "cli", env: dict[str, str] | None = None) -> str:
    proc = _ray_driver(mode, *args, env=env)
    assert proc.returncode == expect, _explain(proc)
    return proc.stderr


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    cmd = ["run", str(DEMO_CONFIG), "--out", str(out), "--stages", STAGES, *FAST, "--executor", "local"]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output
    return out


def _outputs(run: Path) -> dict[str, bytes]:
    """Every file whose bytes must not depend on the executor: the activation cache, importance tables, ratings,
    images."""
    files = [run / "activations" / name for name in ("acts.npy", "scores.npy", "mean.npy", "topk.npz")]
    files += [run / "importance" / "importance.csv", *sorted((run / "ratings").glob("*.csv"))]
    files += sorted((run / "visualizations").glob("*/vis_*.png"))
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_ray_session_gives_results_in_unit_order(ray_installed: None) -> None:
    units = [4, 7, 1, 6]
    proc = _ray_driver("square", *map(str, units))
    assert proc.returncode == 0, _explain(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["description"] == {"state": "ready"}
    assert [(u, sq, state) for u, sq, _, state in out["results"]] == [(u, u * u, "ready") for u in units]
    assert out["driver_pid"] not in {pid for _, _, pid, _ in out["results"]}  # ran on Ray workers
    assert sum(out["progress"]) == len(units)
    proc = _ray_driver("square", *map(str, units), "--fail-on", "7")
    assert proc.returncode == 0, _explain(proc)
    error = json.loads(proc.stdout.strip().splitlines()[-1]).get("error", "")
    assert re.search(r"(?s)square unit failed on a Ray worker.*planted failure on unit 7", error), error


def _embedding_cache(run: Path) -> dict[str, np.ndarray]:
    (file,) = (run / "ratings" / "cache").glob("*.npz")
    with np.load(file) as data:
        return {"keys": data["keys"], "embeddings": data["embeddings"]}


def test_demo_pipeline_on_ray_equals_local(ray_installed: None, local_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stderr = _ray_cli("run", str(DEMO_CONFIG), "--out", str(out), "--stages", STAGES, *FAST, "--executor", "ray")
    assert "embedding images (handcrafted" in stderr and ") as Ray tasks" in stderr  # embedding batches on Ray
    # the prefetched embeddings, computed on Ray workers, are the rows the local run stored first (raters running
    # in this process add a few more later: text prompts, extra images)
    local_cache, ray_cache = _embedding_cache(local_run), _embedding_cache(out)
    n = len(ray_cache["keys"])
    assert n > 100
    for name in ("keys", "embeddings"):
        np.testing.assert_array_equal(ray_cache[name], local_cache[name][:n], err_msg=name)
    local, ray = _outputs(local_run), _outputs(out)
    assert len(local) > 10 and any(k.startswith("ratings/") for k in local)
    assert sorted(ray) == sorted(local)
    different = [name for name in local if local[name] != ray[name]]
    assert not different, f"differ between local and ray: {different[:5]}"
    summary = json.loads((out / "importance" / "summary.json").read_text())["exact"]
    assert summary["executor"] == "ray"


def test_a_ray_worker_killed_after_its_first_unit_changes_nothing(
    ray_installed: None, local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(local_run, out)
    for folder in ("activations", "importance", "visualizations"):
        shutil.rmtree(out / folder)
    for stage in ("activations", "importance", "visualize"):
        marker = tmp_path / f"killed_{stage}"
        _ray_cli(stage, str(out), "--executor", "ray", env={KILL_HOOK_ENV: str(marker)})
        assert marker.exists(), stage  # a worker did die after finishing a unit (before returning it)
    local, again = _outputs(local_run), _outputs(out)
    assert sorted(again) == sorted(local)
    assert [n for n in local if local[n] != again[n]] == []


# -- device code paths, on CPU tensors --------------------------------------------------------------
def test_generic_importance_path_through_a_device_copy_of_the_tail_gives_the_same_tallies() -> None:
    """The generic path's device branch (a copy of the tail, batches moved to its device, logits back to
    the CPU) exercised with the CPU as the device: same tallies as the tail itself, model untouched."""
    import torch

    from autointerp.importance.ablation import Ablation
    from autointerp.importance.engine import evaluate_segment
    from autointerp.importance.paths import TailPath, tail_on_device
    from tests.test_importance import small_cnn

    head, tail, _ = small_cnn(seed=3)
    with torch.no_grad():
        acts = head(torch.rand(48, 3, 8, 8))
    labels = tail(acts).argmax(1).numpy().copy()
    labels[::3] = (labels[::3] + 1) % 7  # some wrong images, so flips go both ways
    valid = torch.ones(7, dtype=torch.bool)
    ablation = Ablation.from_means(acts.mean((0, 2, 3)).numpy(), None, "channel", tuple(acts.shape[1:]))
    feats = list(range(acts.shape[1]))

    def tallies(path: TailPath) -> dict[str, np.ndarray]:
        tally, _ = evaluate_segment(path, acts.numpy(), labels, feats, ablation, 1, valid, 16)
        return {name: getattr(tally, name) for name in tally.SUMS}

    plain = TailPath(tail, example=acts[:1])
    moved = TailPath(tail, example=acts[:1], device="cpu")
    moved.device_tail = tail_on_device(tail, torch.device("cpu"))  # what a CUDA device gets, here on the CPU
    assert moved.device_tail is not tail
    assert {id(p) for p in moved.device_tail.parameters()}.isdisjoint(id(p) for p in tail.parameters())
    a, b = tallies(plain), tallies(moved)
    assert int(np.abs(a["correct_to_wrong"]).sum() + np.abs(a["wrong_to_correct"]).sum()) > 0  # flips happen
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_an_interrupted_ray_run_resumes_from_the_units_on_disk(
    ray_installed: None, local_run: Path, tmp_path: Path
) -> None:
    """The driver stopped after saving its first importance unit (Ctrl-C): rerunning the same command on Ray
    computes only the other units and ends with the local executor's bytes."""
    small = ["--set", "importance.chunk_size=8"]  # 32 features: 4 units
    runs = {}
    for name in ("local", "ray"):
        runs[name] = tmp_path / name
        shutil.copytree(local_run, runs[name])
        shutil.rmtree(runs[name] / "importance")
    result = CliRunner().invoke(app, ["importance", str(runs["local"]), *small])
    assert result.exit_code == 0, result.output
    cmd = ["importance", str(runs["ray"]), *small, "--executor", "ray"]
    stderr = _ray_cli(*cmd, expect=130, mode="cli-stop-after-first-save")
    assert "interrupted (rerun the same command to resume)" in stderr
    assert not (runs["ray"] / "importance" / "importance.csv").exists()
    assert len(list((runs["ray"] / "importance" / "chunks" / "exact").glob("chunk_*.npz"))) == 1
    stderr = _ray_cli(*cmd, mode="cli-counting-saves")
    assert stderr.count("saved unit ") == 3  # the first unit was not computed again
    for name in ("importance.csv", "importance_exact.csv"):
        local = (runs["local"] / "importance" / name).read_bytes()
        assert (runs["ray"] / "importance" / name).read_bytes() == local, name
