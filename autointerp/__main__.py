"""``python -m autointerp`` = the ``autointerp`` command."""

from autointerp.cli import main

main()
