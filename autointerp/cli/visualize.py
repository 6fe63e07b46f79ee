"""``autointerp examples`` and ``autointerp visualize``: dataset examples, feature visualisations, cards."""

from __future__ import annotations

from typing import Annotated

import typer

from autointerp.cli.common import (
    AddressOpt,
    ExecutorOpt,
    Overrides,
    Overwrite,
    RunDir,
    open_run,
    parse_features,
    save_overrides,
    with_executor,
)

Features = Annotated[
    str | None,
    typer.Option("--features", "-f", help="Features to do, e.g. 0,3,10-20 (default: visualize.features, else all)."),
]

Steps = Annotated[int | None, typer.Option("--steps", min=1, help="Optimisation steps (sets visualize.steps).")]


def register(app: typer.Typer) -> None:
    """Add ``examples`` and ``visualize`` to ``app``."""

    @app.command()
    def examples(
        run_dir: RunDir, features: Features = None, overwrite: Overwrite = False, overrides: Overrides = None
    ) -> None:
        """Save the most (and optionally least) activating dataset images of each feature."""
        from autointerp.stages.examples import run_examples

        ctx = open_run(run_dir, overrides)
        run_examples(ctx, overwrite=overwrite, features=parse_features(features))
        save_overrides(ctx)
        typer.echo(f"examples: {ctx.paths.examples_index}")

    @app.command()
    def visualize(
        run_dir: RunDir,
        features: Features = None,
        steps: Steps = None,
        overwrite: Overwrite = False,
        overrides: Overrides = None,
        executor: ExecutorOpt = None,
        address: AddressOpt = None,
    ) -> None:
        """Render feature visualisations, feature cards, a contact sheet and the quality check."""
        from autointerp.stages.visualize import run_visualize

        sets = list(overrides or [])
        if steps is not None:
            sets.append(f"visualize.steps={steps}")
        ctx = open_run(run_dir, sets)
        from autointerp.runfolder import CARD_PNG

        ctx.config = with_executor(ctx.config, executor, address)
        out = run_visualize(ctx, overwrite=overwrite, features=parse_features(features))
        save_overrides(ctx)
        typer.echo(
            f"visualizations: {ctx.paths.visualizations_index} "
            f"(cards in {out}/NNNN/{CARD_PNG}, {ctx.paths.contact_sheet})"
        )
