"""Which features a stage works on, validated against the layer's channel count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from autointerp.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.runfolder import RunContext


def configured_features(ctx: RunContext) -> list[int] | None:
    """``visualize.features`` resolved: ``"groups"`` means the report's two groups (``report.top_n`` most
    important and ``report.middle_n`` around the median, same rule as the report and the survey),
    read from ``RUN/importance/importance.csv``."""
    configured = ctx.config.visualize.features
    if configured != "groups":
        return configured
    return _group_features(ctx)


def _group_features(ctx: RunContext) -> list[int]:
    from autointerp.analysis.groups import select_groups
    from autointerp.runfiles import read_importance

    path = ctx.paths.importance_csv
    if not path.exists():
        raise UserError(f"'groups' (the report's top and middle groups) needs {path}: run the importance stage first")
    table = read_importance(path).check()
    groups = select_groups(table.feature_ind, table.importance, ctx.config.report.top_n, ctx.config.report.middle_n)
    return sorted(set(groups.top.tolist()) | set(groups.middle.tolist()))


def configured_example_features(ctx: RunContext) -> list[int] | None:
    """``visualize.example_features`` resolved (None = every feature of the layer)."""
    configured = ctx.config.visualize.example_features
    if configured == "all":
        return None
    if configured == "visualized":
        return configured_features(ctx)
    if configured == "groups":
        return _group_features(ctx)
    return configured


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """``items`` in consecutive groups of at most ``size``."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
