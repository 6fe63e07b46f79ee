"""One executor for every stage: units of work run here, in local worker processes, or as Ray tasks.

A stage splits its work into independent, resumable *units* (importance: a chunk of features over a
segment of images; visualize: a batch of features; rate: one rater) and describes how to run one with
a picklable :class:`UnitTask`: ``setup()`` builds what every unit needs (a model, a path) once per
worker, ``run(state, unit, progress)`` computes one unit and returns its result. The stage hands the
task and the units still to do to an executor (:func:`executor_for`) and gets each result back **in
the driver, in the order the units were given** (:meth:`Session.map`), where it writes the result
into the run folder atomically, exactly as it always did. So resume, skip-if-done and identical
results hold whichever executor ran the units: workers never write into the run folder.

Executors (``executor`` in the config, ``--executor`` on the command line):

* ``local`` — units run in this process (one worker) or in worker processes started with ``spawn``
  (each builds its state once, ignores Ctrl-C and reports errors with their traceback; a worker that
  dies is noticed within a second and reported as :class:`WorkerError`). How many: the stage's
  ``workers`` setting (``activations.workers``, ``visualize.workers``, ``rate.workers``: default one,
  :func:`stage_workers`; ``importance.workers``: one per CPU on a fast path that allows it).
* ``ray`` — units run as Ray tasks (``ray_address``: ``auto``, ``HOST:PORT``, or unset for a Ray
  cluster on this machine). The task object goes into Ray's object store once; each Ray worker
  process builds its state once per task and keeps it for later units. A task asks for as many CPUs
  as the PyTorch threads a unit uses (at most a node's CPUs) and, where the task runs on CUDA and the
  cluster has GPUs, one GPU (:func:`_gpu_options`). Tasks whose worker dies are retried
  (``max_retries``); results come back through the object store to the driver, which writes them.
  Workers read their inputs (the activation cache, the run's config, images) from the run folder
  path, so on several machines that path must be a shared filesystem (docs/scale.md).

Every unit runs with the PyTorch thread count the driver chose (``UnitTask.threads``, else the
driver's own): float sums may differ in the last digits between thread counts, so this is what makes
local and Ray results byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from autointerp.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.config import RunConfig

EXECUTORS = ("local", "ray")
#: test hook: a path; the first Ray worker to finish a unit creates it and dies before returning
#: (the task is retried), as if the worker had been killed mid-stage
KILL_HOOK_ENV = "AUTOINTERP_TEST_KILL_RAY_WORKER"


class WorkerError(RuntimeError):
    """A worker failed (its traceback is in the message) or died."""


class UnitTask(Protocol):
    """How to run a stage's units (picklable: workers get one copy each)."""

    #: what the units are, for messages ("importance", "visualize", ...)
    label: str
    #: PyTorch threads per unit (None: the driver's ``torch.get_num_threads()``)
    threads: int | None
    #: whether units run on a CUDA device (Ray then asks for a GPU per task where the cluster has one)
    cuda: bool

    def setup(self) -> Any:
        """Build what every unit needs (once per worker)."""

    def run(self, state: Any, unit: Any, progress: Callable[[int], None]) -> Any:
        """Compute ``unit`` (``progress`` gets increments of :meth:`weight` as the work goes on)."""

    def weight(self, unit: Any) -> int:
        """How much progress ``unit`` is (what the stage's progress bar counts)."""

    def describe(self, state: Any) -> dict[str, Any]:
        """What the stage reports about the state (e.g. the importance path); may be empty."""


class Session(Protocol):
    """An executor's workers for one task (a context manager; leaving stops them)."""

    description: dict[str, Any]

    def map(
        self, units: Iterable[Any], on_result: Callable[[Any, Any], None], on_progress: Callable[[int], None] | None
    ) -> None:
        """Run ``units``; ``on_result(unit, result)`` in the driver, in the order of ``units``."""


# -- choosing an executor ---------------------------------------------------------------------------
def check_executor(config: RunConfig) -> None:
    """One-line :class:`UserError` before any work when ``config`` asks for what this machine lacks: an
    unknown executor, Ray not installed (names the extra), an unreachable Ray address, or
    ``device: cuda`` without CUDA. Starts (or connects to) the Ray cluster for ``executor: ray``."""
    if config.executor not in EXECUTORS:
        raise UserError(f"config key 'executor' = {config.executor!r}; expected one of {', '.join(EXECUTORS)}")
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("config key 'device' = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    if config.executor == "ray":
        connect_ray(config.ray_address)
    elif config.ray_address is not None:
        raise UserError("config key 'ray_address' is set but 'executor' is 'local'; add --executor ray")


def connect_ray(address: str | None) -> Any:
    """The ``ray`` module, connected: to the cluster at ``address`` (``auto``, ``HOST:PORT``), or to one
    started on this machine when ``address`` is None. Reuses a connection this process already has."""
    from autointerp.extras import require

    ray = require("ray", "ray", "--executor ray")
    if address not in (None, "auto"):
        _check_reachable(address)
    if ray.is_initialized():
        return ray
    try:
        if address is None:
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address!r}" if address else "on this machine"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot reach a Ray cluster {where} ({first}); start one with `ray start --head` or fix --address"
        ) from None
    return ray


def _check_reachable(address: str) -> None:
    """One-line error unless something listens at ``HOST:PORT`` (Ray itself would retry for a minute)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")  # ray://HOST:PORT: Ray Client
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected auto or HOST:PORT (the head's `ray start --head` address)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); start one with "
            "`ray start --head` there, or fix --address"
        ) from None


@contextlib.contextmanager
def session(config: RunConfig | None, task: UnitTask, workers: int = 1, hint: str = "") -> Iterator[Session]:
    """Workers for ``task`` on the executor ``config`` names (None or ``local``: ``workers`` local
    processes, one meaning this process; ``ray``: Ray tasks). ``hint`` ends a local worker's death
    message (what to change)."""
    if config is not None and config.executor == "ray":
        with RaySession(task, connect_ray(config.ray_address)) as s:
            yield s
    elif workers > 1:
        with ProcessSession(task, workers, hint) as s:
            yield s
    else:
        with InProcessSession(task) as s:
            yield s


# -- local ------------------------------------------------------------------------------------------
class InProcessSession:
    """Units run here, one after the other (the ``local`` executor with one worker)."""

    def __init__(self, task: UnitTask) -> None:
        self.task = task
        self.description: dict[str, Any] = {}

    def __enter__(self) -> InProcessSession:
        import torch

        self._threads = torch.get_num_threads()
        if self.task.threads is not None:  # the count the task's units run with anywhere (module doc)
            torch.set_num_threads(self.task.threads)
        self.state = self.task.setup()
        self.description = dict(self.task.describe(self.state))
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self.state = None
        torch.set_num_threads(self._threads)

    def map(
        self,
        units: Iterable[Any],
        on_result: Callable[[Any, Any], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        advance = on_progress or (lambda n: None)
        for unit in units:
            on_result(unit, self.task.run(self.state, unit, advance))


def _worker_main(task: UnitTask, tasks: Any, results: Any, index: int) -> None:
    """A local worker process: set up, say it is ready, then run units until told to stop (``None``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    try:
        import torch

        if task.threads is not None:
            torch.set_num_threads(task.threads)
        state = task.setup()
        results.put(("ready", index, task.describe(state)))
        while (item := tasks.get()) is not None:
            number, unit = item
            results.put(("done", number, task.run(state, unit, lambda n: results.put(("progress", n, None)))))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))


class ProcessSession:
    """``workers`` local processes (``spawn``: a forked PyTorch with OpenMP threads can hang) running
    units of one task; entering starts them and waits until each has set up."""

    def __init__(self, task: UnitTask, workers: int, hint: str = "") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.task = task
        self.workers = workers
        self.hint = hint
        self.description: dict[str, Any] = {}
        self._processes: list[Any] = []

    def __enter__(self) -> ProcessSession:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._tasks, self._results = context.Queue(), context.Queue()
        for i in range(self.workers):
            process = context.Process(target=_worker_main, args=(self.task, self._tasks, self._results, i), daemon=True)
            process.start()
            self._processes.append(process)
        ready = 0
        while ready < self.workers:
            kind, _, payload = self._next()
            if kind == "ready":
                ready += 1
                self.description = self.description or dict(payload)
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in self._processes:
            self._tasks.put(None)
        deadline = time.monotonic() + (5.0 if exc[0] is None else 0.0)
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join()
        self._processes = []

    def map(
        self,
        units: Iterable[Any],
        on_result: Callable[[Any, Any], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        units = list(units)
        for number, unit in enumerate(units):
            self._tasks.put((number, unit))
        waiting: dict[int, Any] = {}
        delivered = 0
        while delivered < len(units):
            kind, number, payload = self._next()
            if kind == "progress":
                if on_progress is not None:
                    on_progress(number)
            elif kind == "done":
                waiting[number] = payload
                while delivered in waiting:  # in the order given: the driver writes deterministically
                    on_result(units[delivered], waiting.pop(delivered))
                    delivered += 1

    def _next(self) -> tuple[str, Any, Any]:
        """The next message from a worker; raises :class:`WorkerError` for a worker's error or death."""
        while True:
            try:
                kind, number, payload = self._results.get(timeout=1.0)
            except queue.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(self._processes) if p.exitcode is not None]
                if dead:
                    i, code = dead[0]
                    raise WorkerError(
                        f"{self.task.label} worker {i} stopped (exit code {code}; -9 is usually the system killing "
                        f"it for memory){': ' + self.hint if self.hint else ''}"
                    ) from None
                continue
            if kind == "error":
                raise WorkerError(f"{self.task.label} worker {number} failed:\n{payload}")
            return kind, number, payload


# -- ray --------------------------------------------------------------------------------------------
#: per Ray worker process: the state of the task it last set up, keyed by the session's token
_RAY_STATE: dict[str, Any] = {}


def _ray_state(task: UnitTask, token: str, threads: int) -> Any:
    import torch

    if token not in _RAY_STATE:
        _RAY_STATE.clear()  # one task's state at a time: an earlier stage's model is not kept
        torch.set_num_threads(threads)
        _RAY_STATE[token] = task.setup()
    return _RAY_STATE[token]


def _ray_describe(task: UnitTask, token: str, threads: int) -> dict[str, Any]:
    return dict(task.describe(_ray_state(task, token, threads)))


def _ray_unit(task: UnitTask, token: str, threads: int, unit: Any, kill_marker: str | None) -> Any:
    result = task.run(_ray_state(task, token, threads), unit, lambda n: None)
    if kill_marker:
        _kill_once(kill_marker)
    return result


def _kill_once(marker: str) -> None:
    """Test hook (:data:`KILL_HOOK_ENV`): the first worker to get here dies, the others go on."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def _gpu_options(ray: Any, task: UnitTask) -> dict[str, float]:
    """GPU-only branch: one GPU per Ray task where the task runs on CUDA and the cluster has GPUs."""
    if task.cuda and ray.cluster_resources().get("GPU", 0) > 0:
        return {"num_gpus": 1}
    return {}


class RaySession:
    """Units as Ray tasks (module doc); results come back through the object store to the driver."""

    max_retries = 3

    def __init__(self, task: UnitTask, ray: Any) -> None:
        import torch

        self.task = task
        self.ray = ray
        self.token = uuid.uuid4().hex
        self.threads = task.threads or torch.get_num_threads()
        node_cpus = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n.get("Alive")), default=1)
        self.options = {
            "num_cpus": max(1, min(self.threads, int(node_cpus))),
            "max_retries": self.max_retries,
            **_gpu_options(ray, task),
        }
        self.description: dict[str, Any] = {}

    def __enter__(self) -> RaySession:
        ray = self.ray
        self._task_ref = ray.put(self.task)
        self._unit_fn = ray.remote(_ray_unit)
        describe = ray.remote(_ray_describe).options(**self.options)
        self.description = ray.get(describe.remote(self._task_ref, self.token, self.threads))
        return self

    def __exit__(self, *exc: object) -> None:
        self._task_ref = None

    def map(
        self,
        units: Iterable[Any],
        on_result: Callable[[Any, Any], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        units = list(units)
        kill = os.environ.get(KILL_HOOK_ENV) or None
        fn = self._unit_fn.options(**self.options)
        # A bounded window of tasks in flight, not every unit at once: after an error or Ctrl-C only the
        # window's tasks are left to finish (their results dropped). No ray.cancel: in Ray 2.60 cancelling a
        # task whose reply is on its way aborts the driver ("Tried to complete task that was not pending").
        window = max(2, 2 * self._slots())

        def submit(number: int) -> Any:
            return fn.remote(self._task_ref, self.token, self.threads, units[number], kill)

        refs = {number: submit(number) for number in range(min(window, len(units)))}
        for number, unit in enumerate(units):
            try:
                result = self.ray.get(refs.pop(number))
            except self.ray.exceptions.RayTaskError as exc:
                raise WorkerError(f"{self.task.label} unit failed on a Ray worker:\n{exc}") from None
            except self.ray.exceptions.RayError as exc:
                raise WorkerError(
                    f"{self.task.label} unit lost on the Ray cluster after {self.max_retries} retries ({exc})"
                ) from None
            if number + window < len(units):
                refs[number + window] = submit(number + window)
            on_result(unit, result)
            if on_progress is not None:
                on_progress(self.task.weight(unit))

    def _slots(self) -> int:
        """How many of this session's tasks the cluster runs at once (its CPUs over the CPUs per task)."""
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        return max(1, cpus // int(self.options["num_cpus"]))


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(
    setting: int | str, n_units: int, cpus: int | None = None, key: str = "importance.workers"
) -> tuple[int, int]:
    """(worker processes, threads per unit) for the setting ``key`` = ``setting`` and a run of
    ``n_units`` units (all of them, not only those left: a resumed run must resolve the same way).

    ``"auto"``: one worker per available CPU, at most one per unit, one thread each. An integer
    ``n``: ``n`` workers sharing the CPUs' threads. A single worker means no extra process: units run
    here, with this process's PyTorch threads (``torch.get_num_threads()``); so does any setting in a
    daemonic process (e.g. a multiprocessing pool's worker), which may not start processes."""
    import multiprocessing

    import torch

    cpus = cpus or available_cpus()
    if setting == "auto":
        workers = max(1, min(cpus, n_units))
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        workers = setting
    else:
        raise ValueError(f"{key}: expected 'auto' or a positive integer, got {setting!r}")
    if multiprocessing.current_process().daemon:
        workers = 1
    return workers, (torch.get_num_threads() if workers == 1 else max(1, cpus // workers))


def stage_workers(setting: int, n_units: int, label: str, config: RunConfig | None = None) -> tuple[int, int | None]:
    """(local worker processes, PyTorch threads per unit) for a stage's ``workers`` setting and
    ``n_units`` units to run.

    The CPUs are shared as :func:`resolve_workers` shares them. One worker: units run in this process
    with its own threads (``None``: the driver's). ``n`` > 1: ``available_cpus() // n`` threads per unit
    (at least one), in at most one process per unit. The thread count depends on the setting and the
    machine alone and is the task's (:attr:`UnitTask.threads`), which every session applies (in this
    process too), so a resumed run, Ray tasks and local workers give the same bytes for the same setting.
    Says on stderr where the units run when that is other processes on this machine."""
    import sys

    if setting < 1:
        raise UserError(f"{label}: workers must be a positive integer, got {setting!r}")
    workers, threads = resolve_workers(setting, n_units, key=f"{label}.workers")
    if workers == 1:
        return 1, None
    workers = max(1, min(workers, n_units))
    if workers > 1 and (config is None or config.executor == "local"):
        print(f"[{label}] {workers} worker processes, {threads} thread(s) each", file=sys.stderr)
    return workers, threads


def run_units(
    config: RunConfig | None,
    task: UnitTask,
    units: Sequence[Any],
    on_result: Callable[[Any, Any], None],
    on_progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """:func:`session` and :meth:`Session.map` in one call; returns the session's description."""
    with session(config, task, workers) as s:
        s.map(units, on_result, on_progress)
        return s.description
