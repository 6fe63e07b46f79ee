"""``autointerp rate RUN_DIR``, ``autointerp raters list [--verbose]`` and ``autointerp raters show NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli.common import AddressOpt, ExecutorOpt, Overrides, Overwrite, RunDir, handle_errors, parse_features

RaterPath = Annotated[
    list[Path] | None,
    typer.Option("--rater-path", help="A local .py file that registers raters (repeatable)."),
]


def register(app: typer.Typer) -> None:
    """Add ``rate`` and the ``raters`` group to the root app."""
    raters_app = typer.Typer(help="Discover raters.", no_args_is_help=True)
    app.add_typer(raters_app, name="raters")

    @app.command()
    def rate(
        run_dir: RunDir,
        raters: Annotated[
            str | None, typer.Option("--raters", "-r", help="Comma-separated rater names (default: rate.raters).")
        ] = None,
        rater_path: RaterPath = None,
        features: Annotated[str | None, typer.Option(help="Features to rate, e.g. 0,5,10-20 (default: all).")] = None,
        human: Annotated[
            list[Path] | None,
            typer.Option("--human", help="Survey answer CSV for the `human` rater (repeatable; sets rate.human)."),
        ] = None,
        invalid: Annotated[
            str | None,
            typer.Option("--invalid", help="Invalid survey answers: error | drop | clip | keep (rate.human_invalid)."),
        ] = None,
        overwrite: Overwrite = False,
        overrides: Overrides = None,
        executor: ExecutorOpt = None,
        address: AddressOpt = None,
    ) -> None:
        """Score every feature with the chosen raters; writes RUN/ratings/<rater>.csv and .json."""
        with handle_errors():
            import json

            from autointerp.cli.common import open_run, save_overrides, with_executor
            from autointerp.stages.rate import run_rate

            extra = list(overrides or [])
            if human:
                extra.append("rate.human=[" + ", ".join(json.dumps(str(p.resolve())) for p in human) + "]")
            if invalid is not None:
                extra.append(f"rate.human_invalid={invalid}")
            ctx = open_run(run_dir, extra)
            ctx.config = with_executor(ctx.config, executor, address)
            names = [n.strip() for n in raters.split(",") if n.strip()] if raters else None
            out = run_rate(
                ctx, overwrite=overwrite, raters=names, rater_paths=rater_path or (), features=parse_features(features)
            )
            save_overrides(ctx)
            typer.echo(str(out))

    @raters_app.command("list")
    def list_(
        rater_path: RaterPath = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Also print each rater's options: type, default, meaning.")
        ] = False,
    ) -> None:
        """Print every registered rater with a one-line description (and its options with --verbose)."""
        with handle_errors():
            from autointerp.rating import RATERS, list_raters, load_rater_file

            for p in rater_path or ():
                load_rater_file(p)
            items = list_raters()
            width = max((len(n) for n in items), default=0)
            for name, desc in items.items():
                cls = RATERS.get(name)
                needs = ",".join(sorted(cls.needs)) or "-"
                typer.echo(f"{name:<{width}}  {desc}  [needs: {needs}]")
                if verbose:
                    for line in _option_lines(cls):
                        typer.echo(line)

    @raters_app.command("show")
    def show(
        name: Annotated[str, typer.Argument(help="A registered rater name.")],
        rater_path: RaterPath = None,
    ) -> None:
        """Print one rater: description, inputs, scale, components and every option (type, default, meaning)."""
        with handle_errors():
            from autointerp.rating import RATERS, load_rater_file

            for p in rater_path or ():
                load_rater_file(p)
            cls = RATERS.get(name)  # unknown name: one-line error listing the valid ones
            typer.echo(f"{cls.name}: {cls.description}")
            typer.echo(f"  needs: {', '.join(sorted(cls.needs)) or '-'}")
            typer.echo(f"  scale: {cls.scale}  components: {', '.join(cls.components) or '-'}")
            if cls.raw_statistic:
                typer.echo(f"  raw statistic: {cls.raw_statistic} ({cls.raw_direction} is more interpretable)")
            typer.echo(f"  options (rate.options.{cls.name}):")
            for line in _option_lines(cls, indent="    "):
                typer.echo(line)


def _option_lines(cls: type, indent: str = "    ") -> list[str]:
    """One aligned line per option: ``key  type  = default  description`` (or '(no options)')."""
    from autointerp.rating import option_rows

    rows = option_rows(cls)
    if not rows:
        return [f"{indent}(no options)"]
    kw = max(len(r[0]) for r in rows)
    tw = max(len(r[1]) for r in rows)
    dw = max(len(r[2]) for r in rows)
    return [
        f"{indent}{key:<{kw}}  {kind:<{tw}}  = {default:<{dw}}  {desc}".rstrip() for key, kind, default, desc in rows
    ]
