"""``autointerp report``: statistics, figures and an HTML page for a run folder or for bare files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.cli.common import Overwrite


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app``."""

    @app.command()
    def report(
        run_dir: Annotated[Path | None, typer.Argument(help="Run folder (omit when giving --importance).")] = None,
        importance: Annotated[
            Path | None,
            typer.Option("--importance", help="Importance CSV (model,layer,feature_ind,importance), not a run folder."),
        ] = None,
        human: Annotated[
            list[Path] | None, typer.Option("--human", help="Survey answer CSV in the study's format (repeatable).")
        ] = None,
        human_invalid: Annotated[
            str | None,
            typer.Option("--human-invalid", help="Answers outside 1..5: error (default), drop, clip or keep."),
        ] = None,
        out: Annotated[
            Path | None,
            typer.Option("--out", "-o", help="Report folder (default RUN/report; required with --importance)."),
        ] = None,
        top_n: Annotated[int | None, typer.Option("--top-n", min=1, help="Size of the top group (40).")] = None,
        middle_n: Annotated[
            int | None, typer.Option("--middle-n", min=1, help="Size of the group around the median (40).")
        ] = None,
        bootstrap: Annotated[int | None, typer.Option(min=0, help="Bootstrap resamples (2000).")] = None,
        permutations: Annotated[int | None, typer.Option(min=0, help="Permutations for p-values (2000).")] = None,
        seed: Annotated[int | None, typer.Option(help="Random seed of bootstrap and permutations.")] = None,
        overwrite: Overwrite = False,
    ) -> None:
        """Analyse importance vs interpretability and write index.html, figures, summary.json and summary.md."""
        from autointerp.analysis.analyze import AnalysisSettings
        from autointerp.errors import UserError
        from autointerp.human_answers import INVALID_POLICIES

        if human_invalid is not None and human_invalid not in INVALID_POLICIES:
            raise UserError(f"--human-invalid {human_invalid!r}: expected one of {', '.join(INVALID_POLICIES)}")
        if (run_dir is None) == (importance is None):
            raise UserError("give either a run folder (autointerp report RUN_DIR) or --importance FILE --out DIR")
        if run_dir is None:
            from autointerp.report.sources import report_from_files

            if out is None:
                raise UserError("--importance needs --out DIR (where to write the report)")
            settings = AnalysisSettings(
                top_n=top_n or 40,
                middle_n=middle_n or 40,
                n_boot=2000 if bootstrap is None else bootstrap,
                n_perm=2000 if permutations is None else permutations,
                seed=seed or 0,
            )
            page = report_from_files(importance, out, human or [], human_invalid or "error", settings, overwrite)
        else:
            from autointerp.report.sources import report_from_run
            from autointerp.runfolder import RunContext

            ctx = RunContext.open(run_dir)
            rc = ctx.config.report
            settings = AnalysisSettings(
                top_n=top_n or rc.top_n,
                middle_n=middle_n or rc.middle_n,
                n_boot=rc.bootstrap if bootstrap is None else bootstrap,
                n_perm=rc.permutations if permutations is None else permutations,
                seed=ctx.config.seed if seed is None else seed,
            )
            target = out or ctx.paths.report
            from autointerp.runfolder import report_paths

            if report_paths(target)[0].exists() and not overwrite:
                # like every stage: finished output is kept and the stage skipped
                typer.echo(f"[report] {target} exists, skipped (use --overwrite to rebuild it)", err=True)
                page = report_paths(target)[0]
            else:
                page = report_from_run(
                    ctx.root, target, ctx.config, human or [], human_invalid, settings, overwrite=True
                )
        _print_headline(page)

    def _print_headline(page: Path) -> None:
        from autointerp.runfiles import read_report_summary

        s = read_report_summary(page.parent)
        g = s["groups"]

        def f(v: float | None, d: int = 3) -> str:
            return "n/a" if v is None else f"{v:.{d}f}"

        typer.echo(
            f"{s['n_features']} features, mean importance {f(s['importance']['mean'], 2)}; "
            f"top {g['top']['n']}: importance {f(g['top']['importance_mean'], 2)}, "
            f"middle {g['middle']['n']}: importance {f(g['middle']['importance_mean'], 2)}"
        )
        for name, c in s["correlations"].items():
            eg = c.get("extreme_groups", {})
            within = eg.get("within", {})
            line = (
                f"  {name}: I top {f(g['top']['I_mean'].get(name))} vs middle "
                f"{f(g['middle']['I_mean'].get(name))}; Spearman with importance {f(c['spearman'])}"
                + (f" (p={c['p']:.2g})" if c["p"] is not None else "")
                + f" [{c.get('scope_label', '')}]"
            )
            if within:
                line += (
                    f"; within top {f(within.get('top', {}).get('spearman'))}, "
                    f"within middle {f(within.get('middle', {}).get('spearman'))}"
                )
            typer.echo(line)
        for name, res in s.get("noise_ceiling", {}).items():
            if not res.get("available"):
                typer.echo(f"  {name}: {res.get('reason')}")
        typer.echo(f"report: {page}")
