"""Shared CLI pieces: option aliases that mean the same everywhere, and user-error handling."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from autointerp.errors import UserError

RunDir = Annotated[Path, typer.Argument(help="Run folder (holds config.yaml and every stage's output).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Recompute even when the output exists.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key, e.g. --set importance.k=5 (repeatable)."),
]

ExecutorOpt = Annotated[
    str | None,
    typer.Option("--executor", help="Where units of work run: local (this machine) or ray (config key executor)."),
]
AddressOpt = Annotated[
    str | None,
    typer.Option("--address", help="With --executor ray: the cluster, auto or HOST:PORT (default: start one here)."),
]


def with_executor(config, executor: str | None, address: str | None):
    """A copy of ``config`` with ``--executor``/``--address`` applied, checked before any work
    (:func:`autointerp.executor.check_executor`: one-line errors; Ray started or reached). Callers put it
    on the run context after writing config.yaml: where units run never changes the results, so the
    run's config.yaml keeps what it says."""
    from autointerp.executor import EXECUTORS, check_executor

    config = config.model_copy(deep=True)
    if executor is not None:
        if executor not in EXECUTORS:
            raise UserError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
        config.executor = executor
    if address is not None:
        if config.executor != "ray":
            raise UserError("--address is for the Ray executor: add --executor ray")
        config.ray_address = address
    check_executor(config)
    return config


@contextlib.contextmanager
def handle_errors() -> Iterator[None]:
    """Print :class:`UserError` as one line (no traceback) and exit 2."""
    try:
        yield
    except UserError as exc:
        print(f"autointerp: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("autointerp: interrupted (rerun the same command to resume)", file=sys.stderr)
        raise SystemExit(130) from None


def parse_features(text: str | None) -> list[int] | None:
    """``"0,5,10-12"`` → ``[0, 5, 10, 11, 12]``; None → None (all features)."""
    if text is None or text.strip() in ("", "all"):
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise UserError(f"--features {text!r}: expected indices like 0,5,10-20") from None
    return sorted(set(out))


def open_run(run_dir: Path, overrides: list[str] | None = None, config: Path | None = None):
    """Open a run folder, or create it from ``config`` when it has no config.yaml yet."""
    from autointerp.config import load_config
    from autointerp.runfolder import RunContext

    if config is not None:
        return RunContext.create(load_config(config, overrides or []), run_dir)
    ctx = RunContext.open(run_dir, overrides or [])
    if overrides:
        from autointerp.runfolder import check_same_pipeline

        check_same_pipeline(RunContext.open(run_dir).config, ctx.config, ctx.paths.config)
        from autointerp.atomic import write_text
        from autointerp.config import dump_config

        write_text(ctx.paths.config, dump_config(ctx.config))
    return ctx
