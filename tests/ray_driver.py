"""A Ray driver in its own process, for ``tests/test_executor.py``.

Ray ends its driver with ``_exit(1)`` when the cluster's GCS or raylet goes away, which inside pytest would end
the whole test session without a summary. Each Ray test therefore runs its driver here, in a child process that
starts a local Ray cluster (2 CPUs, no dashboard) and stops it on exit; the test reads what it prints.

    python -m tests.ray_driver square UNIT... [--fail-on N]    # RaySession on the planted SquareTask -> JSON
    python -m tests.ray_driver cli ARG...                      # the autointerp command, exit code as usual
    python -m tests.ray_driver cli-counting-saves ARG...         # same, "saved unit N" on stderr per saved unit
    python -m tests.ray_driver cli-stop-after-first-save ARG...  # same, and Ctrl-C right after the first one
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def _start_ray() -> Any:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray session: {ray.get_runtime_context().get_node_id()}", file=sys.stderr, flush=True)
    return ray


def _square(args: list[str]) -> int:
    from autointerp.executor import RaySession, WorkerError
    from tests import test_executor

    fail_on = None
    if "--fail-on" in args:
        i = args.index("--fail-on")
        fail_on = int(args[i + 1])
        args = args[:i] + args[i + 2 :]
    units = [int(a) for a in args]
    ray = _start_ray()
    ray.cloudpickle.register_pickle_by_value(test_executor)  # the Ray workers lack tests/
    out: dict[str, Any] = {"driver_pid": os.getpid()}
    try:
        with RaySession(test_executor.SquareTask(fail_on=fail_on), ray) as s:
            got, progress = test_executor._collect(s, units)
            out.update(description=s.description, results=[[u, *r] for u, r in got], progress=progress)
    except WorkerError as exc:
        out["error"] = str(exc)
    print(json.dumps(out), flush=True)
    return 0


def _cli(args: list[str], count_saves: bool, stop_after_first_save: bool) -> int:
    from autointerp.cli import main as autointerp_main

    _start_ray()
    if count_saves or stop_after_first_save:
        from autointerp.stages.importance import ChunkStore

        real_save = ChunkStore.save
        saves: list[Path] = []

        def save_then_stop(self: ChunkStore, chunk: list[int], arrays: dict, path: Path | None = None) -> None:
            real_save(self, chunk, arrays, path)
            saves.append(path or self.path(chunk))
            print(f"saved unit {len(saves)}", file=sys.stderr, flush=True)
            if stop_after_first_save and len(saves) == 1:
                raise KeyboardInterrupt  # as if the driver were stopped right after its first unit

        ChunkStore.save = save_then_stop  # type: ignore[method-assign]
    sys.argv = ["autointerp", *args]
    try:
        autointerp_main()  # exactly the console script: one-line errors, 130 on Ctrl-C
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "square":
        return _square(args)
    if mode in ("cli", "cli-counting-saves", "cli-stop-after-first-save"):
        return _cli(args, mode == "cli-counting-saves", mode == "cli-stop-after-first-save")
    raise SystemExit(f"unknown mode {mode!r}; expected square, cli, cli-counting-saves or cli-stop-after-first-save")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
