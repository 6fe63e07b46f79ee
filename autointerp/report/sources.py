"""Gather a report's inputs from a run folder or from bare files, then analyse and write it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autointerp.analysis.analyze import AnalysisSettings, analyze
from autointerp.analysis.inputs import (
    Importance,
    Issue,
    RaterScores,
    human_rater,
    read_ablation_curve,
    read_importance_csv,
    read_rating_csv,
)
from autointerp.errors import DataError, UserError
from autointerp.human_answers import aggregate, read_answers
from autointerp.report.build import collect_media, write_report
from autointerp.runfiles import rating_files
from autointerp.runfolder import RunPaths

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.config import RunConfig

import numpy as np


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def _human_from_files(paths: Sequence[str | Path], invalid: str, importance: Importance, name: str) -> RaterScores:
    answers = read_answers(list(paths), invalid=invalid, layer=importance.layer, model=importance.model)
    if len(answers) == 0:
        raise UserError(f"{', '.join(str(p) for p in paths)}: no usable human answers (every row was dropped)")
    return human_rater(aggregate(answers), answers, name=name)


def _empty_importance(source: str) -> Importance:
    return Importance(
        np.array([], dtype=np.int64),
        np.array([], dtype=np.float64),
        source=source,
        issues=[Issue("missing_file", f"{source} not found: no importance; run `autointerp importance`")],
    )


def importance_reliability(importance_dir: Path) -> tuple[Any, str | None]:
    """The split-half reliability of a run's importance, or ``(None, why not)`` in one line."""
    from autointerp.analysis.reliability import read_importance_reliability

    if not importance_dir.is_dir():
        return None, f"importance reliability unavailable: no {importance_dir} (run `autointerp importance`)"
    try:
        rel = read_importance_reliability(importance_dir)
    except (DataError, UserError) as exc:
        return None, f"importance reliability unavailable: {exc}"
    if rel is None:
        return None, (
            f"importance reliability unavailable: {importance_dir} has no per-image importance data "
            "to split (written by `autointerp importance`; older runs lack it)"
        )
    return rel, None


def report_from_files(
    importance: str | Path,
    out_dir: str | Path,
    human: Sequence[str | Path] = (),
    human_invalid: str = "error",
    settings: AnalysisSettings | None = None,
    overwrite: bool = False,
    title: str = "autointerp report",
) -> Path:
    """Report on an importance CSV (the study's format) and optional survey CSVs; returns ``index.html``."""
    imp = read_importance_csv(importance)
    raters = [_human_from_files(human, human_invalid, imp, "human")] if human else []
    explain = {
        "no_human": "no human answers given (--human FILE); see docs/survey.md",
        "no_auto": "no automatic raters: a bare importance CSV has none (report on a run folder to include them)",
        "no_raters": "no raters: give survey answers with --human FILE, or report on a run folder",
        "reliability": (
            "importance reliability unavailable: --importance gives a table of per-feature values "
            "only; split-half reliability needs a run folder's per-image importance data"
        ),
    }
    analysis = analyze(imp, raters, settings, explain=explain)
    return write_report(analysis, out_dir, title=title, overwrite=overwrite)


def report_from_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    config: RunConfig | None = None,
    human: Sequence[str | Path] = (),
    human_invalid: str | None = None,
    settings: AnalysisSettings | None = None,
    overwrite: bool = False,
) -> Path:
    """Report on a run folder (importance, every ``ratings/<rater>.csv``, cards, ablation curve).

    Survey files in the config (``rate.human``) or in ``human`` give the per-answer table of the
    human rater (for the noise ceiling); if the run has no human ratings yet they become one.
    """
    root = Path(run_dir)
    if config is None:
        from autointerp.runfolder import RunContext

        config = RunContext.open(root).config
    out_dir = Path(out_dir) if out_dir is not None else RunPaths(root).report
    settings = settings or AnalysisSettings(
        config.report.top_n, config.report.middle_n, config.report.bootstrap, config.report.permutations, config.seed
    )
    paths = RunPaths(root)
    imp_path = paths.importance_csv
    importance = read_importance_csv(imp_path) if imp_path.exists() else _empty_importance(str(imp_path))
    importance.layer = importance.layer or config.layer
    importance.model = importance.model or config.model.name

    raters: list[RaterScores] = []
    for csv_path in rating_files(paths):
        raters.append(read_rating_csv(csv_path))
    invalid = human_invalid or config.rate.human_invalid
    files = list(human) or list(config.rate.human)
    if files:
        answers = None
        try:
            answers = read_answers(files, invalid=invalid, layer=config.layer)
        except UserError as exc:
            if human:  # asked for on the command line: fail loudly
                raise
            importance.issues.append(
                Issue("human_answers", f"survey files of the config could not be re-read for the noise ceiling: {exc}")
            )
        existing = [r for r in raters if r.is_human and r.meta.get("rater", r.name) == "human"]
        if answers is not None and existing and not human:
            existing[0].answers = answers
        elif answers is not None and len(answers):
            name = _unique("human", {r.name for r in raters})
            raters.append(human_rater(aggregate(answers), answers, name=name))
    reliability, why = importance_reliability(paths.importance)
    explain = {
        "no_human": (
            "no human answers in this run (rate.human is empty); see docs/survey.md"
            if not files
            else "no usable human answers in this run (see the data notes); see docs/survey.md"
        ),
        "no_auto": "no automatic raters in this run (ratings/ holds none; run `autointerp rate`)",
        "no_raters": "no ratings in this run (ratings/ is empty and rate.human is empty; run `autointerp rate`)",
        "reliability": why or "",
    }
    analysis = analyze(importance, raters, settings, reliability=reliability, explain=explain)
    media = collect_media(root, out_dir)
    ablation = read_ablation_curve(paths.cumulative_ablation_csv)
    return write_report(
        analysis,
        out_dir,
        media=media,
        ablation=ablation,
        title=f"autointerp report: {config.name}",
        overwrite=overwrite,
    )
