"""Stage 6: analysis and report of a run folder (``RUN/report/``)."""

from __future__ import annotations

from pathlib import Path

from autointerp.runfolder import RunContext


def run_report(ctx: RunContext, overwrite: bool = False) -> Path:
    """Write ``RUN/report/`` (index.html, figures, summary.json, summary.md); returns the folder.

    Skipped when ``RUN/report/index.html`` exists unless ``overwrite``. Settings come from the
    config's ``report`` section (group sizes, bootstrap and permutation counts) and ``seed``.
    """
    from autointerp.report.sources import report_from_run
    from autointerp.runfolder import report_paths

    out_dir = ctx.paths.report
    if report_paths(out_dir)[0].exists() and not overwrite:
        return out_dir
    report_from_run(ctx.root, out_dir, config=ctx.config, overwrite=True)
    return out_dir
