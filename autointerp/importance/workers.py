"""Units of exact importance work in worker processes, one PyTorch thread each.

A *unit* is a chunk of features over a segment of images (:func:`evaluate_unit`); its tallies are
saved on their own and add up over segments, so units are independent. A path that spends much of its
time in small tensor operations and Python between them (as the fast paths of
:mod:`autointerp.importance.fastpaths` do) cannot spread that over one process's intra-op threads, so such
units run in processes with one thread each (figures: docs/performance.md). :class:`UnitTask` hands the units
to the stage's executor (:mod:`autointerp.executor`: this process, local worker processes, or Ray tasks);
:class:`WorkerPool` is the local executor's worker processes for it.

* Workers start with the ``spawn`` method (a forked PyTorch with OpenMP threads can hang), apply the
  process settings the job asks for (``UnitJob.prepare_process``), build the path from a picklable
  factory, memory-map the activation cache themselves (nothing large is pickled but the model) and
  ignore Ctrl-C: the parent stops them.
* Results come back to the parent, which saves them (atomically), so the run folder has one writer
  and an interrupted run resumes from the units already saved.
* A unit's counts never depend on threads; its float sums (the mean Δlog-probability column) can
  differ in the last digits between thread counts, so the stage keys its saved units by the threads
  per unit (:func:`resolve_workers` makes that a function of the setting and the machine alone).
* A worker that raises reports its traceback and the parent raises :class:`WorkerError`; one that
  dies (e.g. killed for memory) is noticed within a second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autointerp.executor import WorkerError, available_cpus, resolve_workers  # noqa: F401  (re-exported)
from autointerp.importance import engine
from autointerp.importance.ablation import Ablation
from autointerp.importance.engine import AblationPath, bound_pass, evaluate_chunk

#: images of the first unit the optional warm-up runs (compiles every tier outside any timing)
WARM_UP_IMAGES = 64


@dataclass(frozen=True)
class Unit:
    """Features ``features`` over images ``start:end`` of the cache."""

    features: tuple[int, ...]
    start: int
    end: int

    @property
    def pairs(self) -> int:
        """(image, feature) pairs in the unit."""
        return len(self.features) * (self.end - self.start)


@dataclass
class UnitJob:
    """What every unit of a run shares (picklable: the workers get one copy each at start).

    ``acts_file``: the ``.npy`` activation cache, memory-mapped by each worker; ``threads``: PyTorch
    threads per worker; ``make_path``: builds the :class:`~autointerp.importance.engine.AblationPath`
    (e.g. a ``functools.partial`` of its class with the model; only workers need it); ``prepare_process``:
    process-wide settings each worker applies first (e.g. a fast path's
    :meth:`~autointerp.importance.fastpaths.FastPath.prepare_process`); ``warm_up``: workers run
    :func:`warm_up` before they say they are ready."""

    acts_file: str
    labels: np.ndarray
    ablation: Ablation
    valid: torch.Tensor
    k: int
    batch_size: int
    threads: int = 1
    make_path: Callable[[], AblationPath] | None = None
    prepare_process: Callable[[], None] | None = None
    warm_up: bool = False


@dataclass
class UnitResult:
    """A unit's tallies (``FeatureTally.SUMS`` arrays) and boundary fallbacks, with what it cost: pairs
    decided and seconds spent per part of the path (where it counts them), the bound pass's seconds,
    CPU seconds and the peak resident memory of the process that ran it (MiB)."""

    sums: dict[str, np.ndarray]
    fallback: int
    tiers: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    bound_pass_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    #: each pair's outcome (an ``engine.ImageOutcomes``) when asked for with ``per_image``
    outcomes: Any = None


def evaluate_unit(
    path: AblationPath,
    acts: np.ndarray,
    job: UnitJob,
    unit: Unit,
    on_batch: Callable[[int], None] | None = None,
    per_image: bool = False,
) -> UnitResult:
    """One unit (module doc) through ``path``; ``on_batch`` gets the images done after each batch;
    ``per_image``: also each pair's outcome (``UnitResult.outcomes``; same tallies)."""
    pairs, seconds = dict(path.pairs), dict(path.seconds)
    cpu = time.process_time()
    tally, stats = engine.evaluate_segment(  # looked up on the module: tests interrupt it there
        path, acts[unit.start : unit.end], job.labels[unit.start : unit.end], list(unit.features), job.ablation,
        job.k, job.valid, job.batch_size, on_batch=on_batch, per_image=per_image,
    )  # fmt: skip
    return UnitResult(
        sums={name: getattr(tally, name) for name in tally.SUMS},
        fallback=int(stats["fallback"]),
        tiers={t: v - pairs.get(t, 0) for t, v in path.pairs.items()},
        seconds={t: v - seconds.get(t, 0.0) for t, v in path.seconds.items()},
        bound_pass_seconds=float(stats["bound_pass_seconds"]),
        cpu_seconds=time.process_time() - cpu,
        peak_rss_mb=peak_rss_mb(),
        outcomes=stats.get("outcomes"),
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (0 where it cannot be read). On Linux from
    ``VmHWM`` in ``/proc/self/status``: ``getrusage`` keeps the high-water mark across ``exec``, so a
    spawned worker would report at least its parent's memory at the time it started."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024, 1)


def warm_up(path: AblationPath, acts: np.ndarray, job: UnitJob) -> None:
    """Run every tier of ``path`` once on a few images and features (torch.compile compiles on first
    use: seconds per graph, which a benchmark keeps out of its timing)."""
    n = min(WARM_UP_IMAGES, len(acts))
    few = list(range(0, acts.shape[1], max(1, acts.shape[1] // 32)))
    labels = job.labels[:n]
    bp = bound_pass(path, acts[:n], labels, few, job.ablation, job.k, job.valid, batch_size=n, use_bound=False)
    evaluate_chunk(path, acts[:n], labels, bp, few, job.ablation, job.k, job.valid, batch_size=n)
    for counters in (path.pairs, path.seconds):  # the warm-up's own counts would mix into the first unit's
        counters.update(dict.fromkeys(counters, 0))


@dataclass
class UnitTask:
    """The exact method's units as an :class:`autointerp.executor.UnitTask`: each worker builds the
    path with ``job.make_path`` and memory-maps the activation cache once; a unit is
    :func:`evaluate_unit` (with each pair's outcome when ``per_image``)."""

    job: UnitJob
    per_image: bool = False
    label: str = "importance"
    cuda: bool = False

    @property
    def threads(self) -> int:
        """PyTorch threads per unit (the stage keys its saved units by them)."""
        return self.job.threads

    def setup(self) -> tuple[AblationPath, np.ndarray]:
        if self.job.prepare_process is not None:  # the path's process settings, asked for explicitly
            self.job.prepare_process()
        if self.job.make_path is None:
            raise ValueError("UnitJob.make_path is needed to build the path")
        path = self.job.make_path()
        acts = np.load(self.job.acts_file, mmap_mode="r")
        if self.job.warm_up:
            warm_up(path, acts, self.job)
        return path, acts

    def run(self, state: tuple[AblationPath, np.ndarray], unit: Unit, progress: Callable[[int], None]) -> UnitResult:
        path, acts = state
        pairs_done = lambda n, f=len(unit.features): progress(n * f)  # noqa: E731
        return evaluate_unit(path, acts, self.job, unit, pairs_done, per_image=self.per_image)

    def weight(self, unit: Unit) -> int:
        return unit.pairs

    def describe(self, state: tuple[AblationPath, np.ndarray]) -> dict[str, str]:
        return state[0].describe()


#: what to change when a local importance worker dies
SINGLE_PROCESS_HINT = "set importance.workers: 1 to run in one process"


class WorkerPool:
    """``workers`` local processes running :func:`evaluate_unit` for one :class:`UnitJob`: the ``local``
    executor's process session (:class:`autointerp.executor.ProcessSession`) for :class:`UnitTask`.

    Use as a context manager: entering starts the workers and waits until each has built its path
    (and warmed it up when ``job.warm_up``); :attr:`description` is then what the first one said
    about its path (:meth:`~autointerp.importance.engine.AblationPath.describe`). Leaving stops them."""

    def __init__(self, job: UnitJob, workers: int) -> None:
        from autointerp.executor import ProcessSession

        self.job = job
        self.workers = workers
        self._session = ProcessSession(UnitTask(job), workers, SINGLE_PROCESS_HINT)
        self.description: dict[str, str] = {}

    def __enter__(self) -> WorkerPool:
        self._session.__enter__()
        self.description = self._session.description
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.__exit__(*exc)

    def run(
        self,
        units: Iterable[Unit],
        on_result: Callable[[Unit, UnitResult], None],
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        """Evaluate ``units``; ``on_result`` gets each one (in the order given), ``on_progress`` the
        (image, feature) pairs done as workers report them."""
        self._session.map(units, on_result, on_progress)
