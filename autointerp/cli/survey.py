"""``autointerp survey serve|export``: run the human survey in a browser and export its answers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.runfolder import ANSWERS_SQLITE, SURVEY_DIR

RunDir = Annotated[Path, typer.Argument(help="Run folder (with visualizations/ and examples/).", show_default=False)]
DbOption = Annotated[
    Path | None,
    typer.Option("--db", help=f"Survey database (default RUN/{SURVEY_DIR}/{ANSWERS_SQLITE}).", show_default=False),
]


def _parse_groups(groups: str | None) -> list[str] | None:
    if groups is None:
        return None
    return [g.strip() for g in groups.split(",") if g.strip()]


def _parse_features(value: str | None) -> Path | list[int] | None:
    """``--features``: an existing file, else an index list such as ``0,5,10-12``."""
    import re

    from autointerp.cli.common import parse_features
    from autointerp.errors import UserError

    if value is None:
        return None
    if Path(value).is_file():
        return Path(value)
    if re.fullmatch(r"[\d\s,-]+", value):
        return parse_features(value)
    raise UserError(f"--features {value!r}: no such file, and not indices like 0,5,10-12")


def serve(
    run_dir: RunDir,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Features to survey: a file listing indices (or a CSV with feature_ind), or indices like 0,5,10-12.",
            show_default=False,
        ),
    ] = None,
    groups: Annotated[
        str | None,
        typer.Option(
            "--groups",
            help="Pick features by importance as the study did: 'top', 'middle' or 'top,middle'.",
            show_default=False,
        ),
    ] = None,
    group_size: Annotated[int, typer.Option("--group-size", help="Features per group with --groups.")] = 40,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; the default is reachable from this computer only.")
    ] = "127.0.0.1",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the participants' blinded feature orders.")] = 0,
    db: DbOption = None,
) -> None:
    """Serve the survey: participants enter an id and rate each feature (Q1-Q2, then Q3-Q6)."""
    from autointerp.extras import EXTRAS, require

    for module in EXTRAS["survey"]:  # fastapi, uvicorn: checked before the run folder is read
        require(module, "survey", "the survey")
    from autointerp.survey.app import serve as serve_app
    from autointerp.survey.loader import open_survey

    survey = open_survey(
        run_dir,
        features=_parse_features(features),
        groups=_parse_groups(groups),
        group_size=group_size,
        seed=seed,
        db=db,
    )
    counts: dict[str, int] = {}
    for f in survey.features.values():
        if f.group:
            counts[f.group] = counts.get(f.group, 0) + 1
    detail = f" ({', '.join(f'{g}: {n}' for g, n in counts.items())})" if counts else ""
    typer.echo(f"Survey of {len(survey.features)} features{detail}; answers go to {survey.db_path}")
    from autointerp.survey.features import N_EXAMPLES, N_VIS

    short = [f.feature for f in survey.features.values() if len(f.vis) < N_VIS or len(f.examples) < N_EXAMPLES]
    if short:
        listed = ", ".join(map(str, short[:10])) + (" ..." if len(short) > 10 else "")
        typer.echo(
            f"WARNING: {len(short)} feature(s) have fewer than the study's {N_VIS} visualisations or "
            f"{N_EXAMPLES} dataset examples: {listed}",
            err=True,
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"WARNING: bound to {host}: anyone who can reach this address can answer (no login).", err=True)
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"Open http://{shown}:{port}/ in a browser; Ctrl+C stops the server (answers are already saved).")
    serve_app(survey, host=host, port=port)


def export(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.", show_default=False)],
    db: DbOption = None,
) -> None:
    """Export complete answers in the study's CSV format plus a participant column."""
    from autointerp.survey.export import export_answers

    summary = export_answers(run_dir, out, db=db)
    note = f"; {summary.incomplete} half-answered feature(s) left out" if summary.incomplete else ""
    typer.echo(f"Wrote {summary.rows} answers from {summary.participants} participant(s) to {summary.path}{note}")


def register(app: typer.Typer) -> None:
    """Add the ``survey`` command group (``serve``, ``export``) to the root CLI."""
    survey_app = typer.Typer(
        help="Human survey: serve the study's protocol in a browser, export the answers.", no_args_is_help=True
    )
    survey_app.command("serve")(serve)
    survey_app.command("export")(export)
    app.add_typer(survey_app, name="survey")
