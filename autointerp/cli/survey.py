"""``autointerp survey serve|invite|status|withdraw|export``: run the human survey in a browser, invite
participants, follow its progress and export its answers."""

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


FeaturesOption = Annotated[
    str | None,
    typer.Option(
        "--features",
        help="Features to survey: a file listing indices (or a CSV with feature_ind), or indices like 0,5,10-12.",
        show_default=False,
    ),
]
GroupsOption = Annotated[
    str | None,
    typer.Option(
        "--groups",
        help="Pick features by importance as the study did: 'top', 'middle' or 'top,middle'.",
        show_default=False,
    ),
]
GroupSizeOption = Annotated[int, typer.Option("--group-size", help="Features per group with --groups.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the participants' assignments and orders.")]
PerParticipantOption = Annotated[
    int | None,
    typer.Option(
        "--per-participant",
        help="Features each participant rates (a balanced subset; default: all).",
        show_default=False,
    ),
]
ChecksOption = Annotated[
    bool,
    typer.Option(
        "--attention-checks/--no-attention-checks",
        help="Add a planted check item (blank images: Q1 must be 1) and repeat the first feature at the end.",
    ),
]


def _open(
    run_dir: Path,
    features: str | None,
    groups: str | None,
    group_size: int,
    seed: int,
    db: Path | None,
    per_participant: int | None,
    attention_checks: bool,
    consent: Path | None = None,
    accept_changed_images: bool = False,
):
    from autointerp.survey.loader import open_survey

    return open_survey(
        run_dir,
        features=_parse_features(features),
        groups=_parse_groups(groups),
        group_size=group_size,
        seed=seed,
        db=db,
        per_participant=per_participant,
        attention_checks=attention_checks,
        consent=consent,
        accept_changed_images=accept_changed_images,
    )


def serve(
    run_dir: RunDir,
    features: FeaturesOption = None,
    groups: GroupsOption = None,
    group_size: GroupSizeOption = 40,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; the default is reachable from this computer only.")
    ] = "127.0.0.1",
    seed: SeedOption = 0,
    db: DbOption = None,
    per_participant: PerParticipantOption = None,
    attention_checks: ChecksOption = False,
    open_enrollment: Annotated[
        bool,
        typer.Option(
            "--open-enrollment",
            help="Admit any participant id (typed in, or from Prolific) instead of only invitation links; "
            "binds to loopback only (put an HTTPS reverse proxy in front, see docs/survey.md).",
        ),
    ] = False,
    prolific: Annotated[
        bool,
        typer.Option(
            "--prolific",
            help="Take the id from Prolific's PROLIFIC_PID (and STUDY_ID, SESSION_ID); implies --open-enrollment.",
        ),
    ] = False,
    consent: Annotated[
        Path | None,
        typer.Option(
            "--consent", help="Text file with the consent form, accepted before the first question.", show_default=False
        ),
    ] = None,
    completion_code: Annotated[
        str | None,
        typer.Option("--completion-code", help="Code shown when a participant finishes.", show_default=False),
    ] = None,
    redirect_url: Annotated[
        str | None,
        typer.Option(
            "--redirect-url",
            help="Link shown when finished ({code} = the completion code); with --prolific the default is "
            "Prolific's completion URL.",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Host name participants use (repeatable), e.g. the reverse proxy's public name; loopback names "
            "are always allowed.",
            show_default=False,
        ),
    ] = None,
    rate_limit: Annotated[
        int, typer.Option("--rate-limit", help="Requests per minute per client address (0 = no limit).")
    ] = 600,
    ssl_certfile: Annotated[
        Path | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM) to serve HTTPS.", show_default=False)
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM).", show_default=False)
    ] = None,
    accept_changed_images: Annotated[
        bool,
        typer.Option(
            "--accept-changed-images",
            help="Continue although the run's images changed since the study started (re-pins them).",
        ),
    ] = False,
) -> None:
    """Serve the survey: participants open their invitation link and rate features (Q1-Q2, then Q3-Q6)."""
    from autointerp.errors import UserError
    from autointerp.extras import EXTRAS, require

    for module in EXTRAS["survey"]:  # fastapi, uvicorn: checked before the run folder is read
        require(module, "survey", "the survey")
    from autointerp.survey.app import AppSettings, is_loopback
    from autointerp.survey.app import serve as serve_app

    open_enrollment = open_enrollment or prolific
    if open_enrollment and not is_loopback(host):
        raise UserError(
            f"--host {host}: open enrollment admits any id, so it is served on loopback only; put an HTTPS "
            "reverse proxy in front (docs/survey.md) or use invitation links (autointerp survey invite)"
        )
    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise UserError("--ssl-certfile and --ssl-keyfile go together")
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            raise UserError(f"{path}: no such file (TLS certificate or key)")
    if redirect_url is not None and not redirect_url.startswith(("https://", "http://")):
        raise UserError(f"--redirect-url {redirect_url!r}: expected an http(s) URL")
    survey = _open(
        run_dir,
        features,
        groups,
        group_size,
        seed,
        db,
        per_participant,
        attention_checks,
        consent,
        accept_changed_images,
    )
    if survey.changed_images:
        typer.echo(
            f"WARNING: images of {len(survey.changed_images)} feature(s) changed since the study started and were "
            f"re-pinned: {', '.join(map(str, survey.changed_images[:20]))}",
            err=True,
        )
    allowed = list(allowed_host or [])
    if not is_loopback(host) and host not in ("0.0.0.0", "::"):
        allowed.append(host)
    settings = AppSettings(
        open_enrollment=open_enrollment,
        prolific=prolific,
        allowed_hosts=tuple(allowed),
        rate_limit=rate_limit,
        completion_code=completion_code,
        redirect_url=redirect_url,
    )
    counts: dict[str, int] = {}
    for f in survey.features.values():
        if f.group:
            counts[f.group] = counts.get(f.group, 0) + 1
    detail = f" ({', '.join(f'{g}: {n}' for g, n in counts.items())})" if counts else ""
    per = survey.store.per_participant
    typer.echo(
        f"Survey of {len(survey.features)} features{detail}, {per} per participant"
        f"{' + attention checks' if attention_checks else ''}; answers go to {survey.db_path}"
    )
    from autointerp.survey.features import N_EXAMPLES, N_VIS

    short = [f.feature for f in survey.features.values() if len(f.vis) < N_VIS or len(f.examples) < N_EXAMPLES]
    if short:
        listed = ", ".join(map(str, short[:10])) + (" ..." if len(short) > 10 else "")
        typer.echo(
            f"WARNING: {len(short)} feature(s) have fewer than the study's {N_VIS} visualisations or "
            f"{N_EXAMPLES} dataset examples: {listed}",
            err=True,
        )
    if not is_loopback(host) and ssl_certfile is None:
        typer.echo(
            f"WARNING: bound to {host} without TLS: invitation tokens travel in clear text; use --ssl-certfile/"
            "--ssl-keyfile or an HTTPS reverse proxy (docs/survey.md).",
            err=True,
        )
    if not is_loopback(host) and not allowed_host:
        typer.echo(
            "NOTE: participants must use a host name given with --allowed-host (or the bound address).", err=True
        )
    scheme = "https" if ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    if prolific:
        how = "participants arrive from Prolific"
    elif open_enrollment:
        how = "participants type their id"
    else:
        how = "participants open the links of `autointerp survey invite`"
    typer.echo(f"Serving on {scheme}://{shown}:{port}/ ({how}); Ctrl+C stops the server (answers are already saved).")
    serve_app(survey, settings, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)


def invite(
    run_dir: RunDir,
    n: Annotated[int, typer.Option("--n", help="Number of invitation links to write.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write (participant,link).", show_default=False)],
    base_url: Annotated[
        str, typer.Option("--base-url", help="Address participants open (the server or its reverse proxy).")
    ] = "http://127.0.0.1:8000/",
    prefix: Annotated[str, typer.Option("--prefix", help="Start of each generated participant id.")] = "p",
    db: DbOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Write N signed invitation links (one new random participant id each) to a CSV file."""
    import csv
    import io
    import re
    import secrets

    from autointerp.atomic import write_text
    from autointerp.errors import UserError
    from autointerp.survey.access import load_secret, sign
    from autointerp.survey.loader import default_db_path

    if not 1 <= n <= 100_000:
        raise UserError(f"--n: expected 1 to 100000 links, got {n}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", prefix):
        raise UserError(
            f"--prefix {prefix!r}: expected up to 32 letters, digits and _ . - (starting with a letter or digit)"
        )
    if not base_url.startswith(("https://", "http://")):
        raise UserError(f"--base-url {base_url!r}: expected an http(s) URL")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder does not exist")
    if out.exists() and not overwrite:
        raise UserError(f"--out {out}: file exists; pass --overwrite to replace it")
    survey_dir = (db if db is not None else default_db_path(run_dir)).parent
    secret = load_secret(survey_dir)
    base = base_url.split("?", 1)[0].split("#", 1)[0]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["participant", "link"])
    for _ in range(n):
        participant = f"{prefix}-{secrets.token_hex(6)}"
        writer.writerow([participant, f"{base}#t={sign(secret, participant)}"])  # "#": not sent to the server
    write_text(out, buf.getvalue())
    try:
        out.chmod(0o600)  # the links are keys: only the researcher may read them
    except OSError:
        pass
    typer.echo(f"Wrote {n} invitation links to {out} (keep it private: each link lets one person answer)")


def status(
    run_dir: RunDir,
    db: DbOption = None,
) -> None:
    """Show the study's progress: participants, answers per feature, exclusions."""
    from autointerp.survey.status import survey_status

    typer.echo(survey_status(run_dir, db=db))


def withdraw(
    run_dir: RunDir,
    participant: Annotated[str, typer.Argument(help="The participant id to delete.", show_default=False)],
    db: DbOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every answer of one participant (their link stops working); logged in RUN/survey/withdrawals.log."""
    from autointerp.survey.status import withdraw_participant

    if not yes:
        typer.confirm(f"Delete every answer of participant {participant!r}?", abort=True)
    n = withdraw_participant(run_dir, participant, db=db)
    typer.echo(f"Withdrew participant {participant!r}: {n} answer(s) deleted")


def export(
    run_dir: RunDir,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write.", show_default=False)],
    db: DbOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    drop_excluded: Annotated[
        bool, typer.Option("--drop-excluded", help="Leave out participants flagged by the attention checks.")
    ] = False,
) -> None:
    """Export complete answers in the study's CSV format plus participant, timing and attention-check columns."""
    from autointerp.survey.export import export_answers

    summary = export_answers(run_dir, out, db=db, overwrite=overwrite, drop_excluded=drop_excluded)
    note = f"; {summary.incomplete} half-answered feature(s) left out" if summary.incomplete else ""
    if summary.excluded:
        note += f"; {summary.excluded} participant(s) flagged for exclusion" + (
            " (left out)" if drop_excluded else " (column exclude)"
        )
    typer.echo(f"Wrote {summary.rows} answers from {summary.participants} participant(s) to {summary.path}{note}")


def register(app: typer.Typer) -> None:
    """Add the ``survey`` command group (``serve``, ``invite``, ``status``, ``withdraw``, ``export``)."""
    survey_app = typer.Typer(
        help="Human survey: serve the study's protocol in a browser, invite participants, export the answers.",
        no_args_is_help=True,
    )
    survey_app.command("serve")(serve)
    survey_app.command("invite")(invite)
    survey_app.command("status")(status)
    survey_app.command("withdraw")(withdraw)
    survey_app.command("export")(export)
    app.add_typer(survey_app, name="survey")
