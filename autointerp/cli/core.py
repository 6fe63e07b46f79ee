"""Core commands: ``run``, ``demo``, ``activations``, ``models``, ``stages``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli.common import (
    AddressOpt,
    ExecutorOpt,
    Overrides,
    Overwrite,
    RunDir,
    open_run,
    save_overrides,
    with_executor,
)

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "default_configs" / "demo.yaml"


def register(app: typer.Typer) -> None:
    """Add the core commands to ``app``."""

    @app.command()
    def run(
        config: Annotated[Path, typer.Argument(help="YAML run config (see configs/).")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default: output_dir).")] = None,
        overrides: Overrides = None,
        overwrite: Overwrite = False,
        stages: Annotated[str | None, typer.Option(help="Only these stages, e.g. activations,importance.")] = None,
        executor: ExecutorOpt = None,
        address: AddressOpt = None,
    ) -> None:
        """Run the whole pipeline (every installed stage, in order) from a config."""
        from autointerp.config import load_config
        from autointerp.pipeline import run_pipeline
        from autointerp.runfolder import RunContext

        cfg = load_config(config, overrides or [])
        placed = with_executor(cfg, executor, address)
        ctx = RunContext.create(cfg, out)
        ctx.config = placed
        only = [s.strip() for s in stages.split(",")] if stages else None
        done = run_pipeline(ctx, overwrite=overwrite, only=only)
        typer.echo(f"run folder: {ctx.root} (stages: {', '.join(done) or 'none'})")

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for the demo.")] = Path("runs/demo"),
        overrides: Overrides = None,
        overwrite: Overwrite = False,
        executor: ExecutorOpt = None,
        address: AddressOpt = None,
    ) -> None:
        """Run the whole pipeline offline on the embedded synthetic world (a few minutes on 2 CPU cores)."""
        from autointerp.config import load_config
        from autointerp.pipeline import run_pipeline
        from autointerp.runfolder import RunContext, report_paths

        cfg = load_config(DEMO_CONFIG, overrides or [])
        placed = with_executor(cfg, executor, address)
        ctx = RunContext.create(cfg, out)
        ctx.config = placed
        done = run_pipeline(ctx, overwrite=overwrite)
        report = report_paths(ctx.paths.report)[0]
        typer.echo(f"demo run folder: {ctx.root} (stages: {', '.join(done)})")
        if report.exists():
            typer.echo(f"report: {report}")

    @app.command()
    def activations(
        run_dir: RunDir,
        config: Annotated[Path | None, typer.Option(help="Create the run folder from this config.")] = None,
        overrides: Overrides = None,
        overwrite: Overwrite = False,
        executor: ExecutorOpt = None,
        address: AddressOpt = None,
    ) -> None:
        """Stage 1: stream the dataset through the model, caching the layer's activations and statistics."""
        from autointerp.stages.activations import run_activations

        ctx = open_run(run_dir, overrides, config)
        ctx.config = with_executor(ctx.config, executor, address)
        path = run_activations(ctx, overwrite=overwrite)
        save_overrides(ctx)
        from autointerp.runfiles import read_activation_meta

        meta = read_activation_meta(ctx.paths)
        acc = ", ".join(f"{k} {v:.3f}" for k, v in meta["accuracy"].items())
        typer.echo(f"{path}: {meta['n_images']} images, {meta['channels']} channels; baseline accuracy {acc}")

    @app.command("models")
    def models_(
        name: Annotated[str | None, typer.Argument(help="Show the layers of this model (random init).")] = None,
        options: Annotated[list[str] | None, typer.Option("--option", help="Adapter option KEY=VALUE.")] = None,
    ) -> None:
        """List model adapters, or the layers (with channel counts) of one."""
        from autointerp.config import _parse_value
        from autointerp.models import create_model, list_models

        if name is None:
            from autointerp.models.base import MODELS

            names = list_models()  # loads the built-in adapters
            factories = MODELS.items()
            width = max(map(len, names))
            for m in names:  # name and the first sentence of its factory's docstring
                paragraph = " ".join((factories[m].__doc__ or "").strip().split("\n\n")[0].split())
                sentence = paragraph.replace("``", "").split(". ")[0].rstrip(".")
                typer.echo(f"{m:<{width}}  {sentence}".rstrip())
            return
        opts = {}
        for item in options or []:
            k, _, v = item.partition("=")
            opts[k] = _parse_value(v)
        opts.setdefault("pretrained", False)
        adapter = create_model(name, **opts)
        for layer, channels in adapter.layers().items():
            kind = adapter.layer_kind(layer)  # a transformer's token layer says so: its count is units, not channels
            typer.echo(f"{layer}\t{channels}" + ("\ttokens" if kind == "tokens" else ""))

    @app.command()
    def stages() -> None:
        """List the pipeline stages in order."""
        from autointerp.pipeline import STAGES

        for s in STAGES:
            typer.echo(s.name)
