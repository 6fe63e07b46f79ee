"""The executor (autointerp.executor): units in this process, in local worker processes or as Ray tasks
give the same results in the same order; the demo pipeline with ``--executor ray`` on a local Ray cluster
writes byte-identical importance, ratings and visualisations to ``--executor local``; a Ray worker killed
after its first unit changes nothing (the task is retried); bad executor settings are one-line errors
before any work."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.cli.core import DEMO_CONFIG
from autointerp.config import RunConfig
from autointerp.errors import UserError
from autointerp.executor import KILL_HOOK_ENV, InProcessSession, ProcessSession, WorkerError, check_executor
from tests.skips import skip_unless_available

FAST = ["--set", "dataset.options.n_images=400", "--set", "visualize.steps=8"]
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


# -- a real local Ray cluster -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:
        skip_unless_available("ray is not installed (pip install 'autointerp[ray]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # SquareTask: the workers lack tests/
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    cmd = ["run", str(DEMO_CONFIG), "--out", str(out), "--stages", STAGES, *FAST, "--executor", "local"]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output
    return out


def _outputs(run: Path) -> dict[str, bytes]:
    """Every file whose bytes must not depend on the executor: importance tables, ratings, images."""
    files = [run / "importance" / "importance.csv", *sorted((run / "ratings").glob("*.csv"))]
    files += sorted((run / "visualizations").glob("*/vis_*.png"))
    return {str(p.relative_to(run)): p.read_bytes() for p in files}


def test_ray_session_gives_results_in_unit_order(ray_cluster: Any) -> None:
    from autointerp.executor import RaySession

    units = [4, 7, 1, 6]
    with RaySession(SquareTask(), ray_cluster) as s:
        got, progress = _collect(s, units)
        assert s.description == {"state": "ready"}
    assert [(u, r[0], r[2]) for u, r in got] == [(u, u * u, "ready") for u in units]
    assert os.getpid() not in {r[1] for _, r in got} and sum(progress) == len(units)
    with pytest.raises(WorkerError, match=r"(?s)square unit failed on a Ray worker.*planted failure on unit 7"):
        with RaySession(SquareTask(fail_on=7), ray_cluster) as s:
            _collect(s, units)


def test_demo_pipeline_on_ray_equals_local(ray_cluster: Any, local_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = ["run", str(DEMO_CONFIG), "--out", str(out), "--stages", STAGES, *FAST, "--executor", "ray"]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code == 0, result.output
    local, ray = _outputs(local_run), _outputs(out)
    assert len(local) > 10 and any(k.startswith("ratings/") for k in local)
    assert sorted(ray) == sorted(local)
    different = [name for name in local if local[name] != ray[name]]
    assert not different, f"differ between local and ray: {different[:5]}"
    import json

    summary = json.loads((out / "importance" / "summary.json").read_text())["exact"]
    assert summary["executor"] == "ray"


def test_a_ray_worker_killed_after_its_first_unit_changes_nothing(
    ray_cluster: Any, local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    shutil.copytree(local_run, out)
    shutil.rmtree(out / "importance")
    shutil.rmtree(out / "visualizations")
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_HOOK_ENV, str(marker))
    for stage in (["importance", str(out)], ["visualize", str(out)]):
        result = CliRunner().invoke(app, [*stage, "--executor", "ray"])
        assert result.exit_code == 0, result.output
    assert marker.exists()  # a worker did die after finishing a unit (before returning it)
    local, again = _outputs(local_run), _outputs(out)
    assert sorted(again) == sorted(local)
    assert [n for n in local if local[n] != again[n]] == []


# -- device code paths, on CPU tensors --------------------------------------------------------------
def test_generic_importance_path_through_a_device_copy_of_the_tail_gives_the_same_tallies() -> None:
    """The generic path's device branch (a copy of the tail, batches moved to its device, logits back to
    the CPU) exercised with the CPU as the device: same tallies as the tail itself, model untouched."""
    import numpy as np
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
    ray_cluster: Any, local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver stopped after saving its first importance unit (Ctrl-C): rerunning the same command on Ray
    computes only the other units and ends with the local executor's bytes."""
    from autointerp.stages.importance import ChunkStore

    small = ["--set", "importance.chunk_size=8"]  # 32 features: 4 units
    runs = {}
    for name in ("local", "ray"):
        runs[name] = tmp_path / name
        shutil.copytree(local_run, runs[name])
        shutil.rmtree(runs[name] / "importance")
    result = CliRunner().invoke(app, ["importance", str(runs["local"]), *small])
    assert result.exit_code == 0, result.output
    saves: list[Path] = []
    real_save = ChunkStore.save

    def save_then_stop(self: ChunkStore, chunk: list[int], arrays: dict, path: Path | None = None) -> None:
        real_save(self, chunk, arrays, path)
        saves.append(path or self.path(chunk))
        if len(saves) == 1:
            raise KeyboardInterrupt  # as if the driver were stopped right after its first unit

    monkeypatch.setattr(ChunkStore, "save", save_then_stop)
    result = CliRunner().invoke(app, ["importance", str(runs["ray"]), *small, "--executor", "ray"])
    assert result.exit_code == 130, result.output
    assert not (runs["ray"] / "importance" / "importance.csv").exists()
    assert len(list((runs["ray"] / "importance" / "chunks" / "exact").glob("chunk_*.npz"))) == 1
    result = CliRunner().invoke(app, ["importance", str(runs["ray"]), *small, "--executor", "ray"])
    assert result.exit_code == 0, result.output
    assert len(saves) == 4  # the first unit was not computed again
    for name in ("importance.csv", "importance_exact.csv"):
        local = (runs["local"] / "importance" / name).read_bytes()
        assert (runs["ray"] / "importance" / name).read_bytes() == local, name
