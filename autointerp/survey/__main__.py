"""``python -m autointerp.survey serve|export ...`` — the ``autointerp survey`` commands on their own."""

from __future__ import annotations

import sys

import typer

from autointerp.errors import UserError


def main() -> None:
    """Run the survey command group; user errors print one line and exit with status 2."""
    from autointerp.cli.survey import register

    root = typer.Typer(add_completion=False)
    register(root)

    @root.callback()
    def _root() -> None:
        """autointerp survey commands."""

    try:
        root(args=["survey", *sys.argv[1:]], prog_name="python -m autointerp.survey", standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
