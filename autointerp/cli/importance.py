"""``autointerp importance``: mean-ablation importance of every feature (stage 2)."""

from __future__ import annotations

from typing import Annotated

import typer

from autointerp.cli.common import (
    AddressOpt,
    ExecutorOpt,
    Overrides,
    Overwrite,
    RunDir,
    handle_errors,
    open_run,
    parse_features,
    save_overrides,
    with_executor,
)


def register(app: typer.Typer) -> None:
    """Add the ``importance`` command to the root app."""

    @app.command()
    def importance(
        run_dir: RunDir,
        features: Annotated[
            str | None,
            typer.Option(help="Only these features, e.g. 0,5,10-20 (default: importance.features or all)."),
        ] = None,
        method: Annotated[
            str | None,
            typer.Option(help="exact (fast, exact), attribution (first-order estimate), naive (reference)."),
        ] = None,
        k: Annotated[int | None, typer.Option("--k", help="Top-k used for correctness (importance.k).")] = None,
        overrides: Overrides = None,
        overwrite: Overwrite = False,
        executor: ExecutorOpt = None,
        address: AddressOpt = None,
    ) -> None:
        """Stage 2: importance = #images correct in the top-k minus the same with the feature mean-ablated."""
        with handle_errors():
            from autointerp.stages.importance import run_importance

            extra = list(overrides or [])
            if k is not None:
                extra.append(f"importance.k={k}")
            ctx = open_run(run_dir, extra)
            ctx.config = with_executor(ctx.config, executor, address)
            path = run_importance(ctx, overwrite=overwrite, features=parse_features(features), method=method)
            save_overrides(ctx)
            from autointerp.runfiles import read_importance_summary

            summaries = read_importance_summary(ctx.paths)
            summary = summaries.get(method or ctx.config.importance.method, {})
            bits = [f"{summary.get('n_features', '?')} features", f"{summary.get('seconds', 0):.1f}s"]
            if "skipped_fraction" in summary:
                bits.append(f"skipped {summary['skipped_fraction']:.1%} of pairs by the bound")
            for key, val in summary.items():
                if key.startswith("agreement_with_"):
                    bits.append(f"{key}: Spearman {val['spearman']:.3f}, top-40 overlap {val['top40_overlap']:.2f}")
            typer.echo(f"{path}: " + "; ".join(bits))
