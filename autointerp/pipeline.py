"""The pipeline: stages in order, each skipped when its output exists unless ``overwrite``.

A stage is listed here by module path so that no stage module is imported until it runs; every stage
is part of the package, so a stage that fails to import is an error, never silently skipped.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from autointerp.config import RunConfig
from autointerp.errors import UserError
from autointerp.runfolder import RunContext


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: where its function lives and whether the config enables it."""

    name: str
    target: str  # "module:function"; the function is called as fn(ctx, overwrite=...)
    enabled: Callable[[RunConfig], bool]

    def function(self) -> Callable[..., object]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


STAGES: tuple[Stage, ...] = (
    Stage("activations", "autointerp.stages.activations:run_activations", lambda c: True),
    Stage("importance", "autointerp.stages.importance:run_importance", lambda c: c.importance.enabled),
    Stage("examples", "autointerp.stages.examples:run_examples", lambda c: c.visualize.enabled),
    Stage("visualize", "autointerp.stages.visualize:run_visualize", lambda c: c.visualize.enabled),
    Stage("rate", "autointerp.stages.rate:run_rate", lambda c: c.rate.enabled),
    Stage("report", "autointerp.stages.report:run_report", lambda c: c.report.enabled),
)


def stage_names() -> list[str]:
    """Names of all stages, in order."""
    return [s.name for s in STAGES]


def run_pipeline(ctx: RunContext, overwrite: bool = False, only: list[str] | None = None) -> list[str]:
    """Run every enabled stage in order (or only those named); returns those run."""
    if only:
        unknown = sorted(set(only) - set(stage_names()))
        if unknown:
            raise UserError(f"unknown stage {unknown[0]!r}; valid: {', '.join(stage_names())}")
    from autointerp.executor import check_executor

    check_executor(ctx.config)  # Ray missing or unreachable, CUDA absent: one line, before any work
    done = []
    for stage in STAGES:
        if only and stage.name not in only:
            continue
        if not stage.enabled(ctx.config):
            continue
        t0 = time.perf_counter()
        print(f"[autointerp] stage {stage.name} ...", file=sys.stderr)
        stage.function()(ctx, overwrite=overwrite)
        print(f"[autointerp] stage {stage.name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        done.append(stage.name)
    return done
