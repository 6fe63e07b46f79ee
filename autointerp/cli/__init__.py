"""The ``autointerp`` command line. Heavy libraries are imported inside commands, so ``--help`` is instant.

Stage commands live one file per group (``autointerp/cli/<group>.py``) and each exposes
``register(app)``; this module imports and wires in every group (a broken group fails loudly).
"""

from __future__ import annotations

import sys

import typer

from autointerp.cli import importance, rate, report, survey, visualize
from autointerp.cli.common import handle_errors
from autointerp.cli.core import register as register_core

app = typer.Typer(
    name="autointerp",
    help="Automated interpretability scoring of vision-model features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

register_core(app)

#: command groups contributed by the stage modules, in pipeline order
GROUPS = ("importance", "visualize", "rate", "report", "survey")
for _module in (importance, visualize, rate, report, survey):
    _module.register(app)


def main() -> None:
    """Console-script entry point: user errors print one line and exit with status 2."""
    with handle_errors():
        app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
