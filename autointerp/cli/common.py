"""Shared CLI pieces: option aliases that mean the same everywhere, and user-error handling."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from autointerp.errors import UserError
from autointerp.runfolder import CONFIG_YAML

RunDir = Annotated[Path, typer.Argument(help=f"Run folder (holds {CONFIG_YAML} and every stage's output).")]
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
    return ctx


def save_overrides(ctx) -> None:
    """Record a stage's ``--set`` overrides in ``RUN/config.yaml`` — called once the stage has succeeded, so a
    failed stage leaves the run's config as it was."""
    from autointerp.atomic import write_text
    from autointerp.config import dump_config, load_config

    config = ctx.config
    if ctx.paths.config.exists():  # --executor/--address say where units ran, not what the run is: not recorded
        recorded = load_config(ctx.paths.config)
        config = config.model_copy(update={"executor": recorded.executor, "ray_address": recorded.ray_address})
    text = dump_config(config)
    if not ctx.paths.config.exists() or ctx.paths.config.read_text(encoding="utf-8") != text:
        write_text(ctx.paths.config, text)
