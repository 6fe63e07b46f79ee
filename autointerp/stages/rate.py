"""Stage 5: run raters over every feature and write ``RUN/ratings/<rater>.csv`` + ``<rater>.json``.

Each rater is skipped when both its files exist, unless ``overwrite``. Images are embedded once,
in large batches, before the raters run (content-keyed cache in ``RUN/ratings/cache/``), so adding
raters costs scoring time only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.errors import UserError
from autointerp.runfolder import RunContext


def run_rate(
    ctx: RunContext,
    overwrite: bool = False,
    raters: Sequence[str] | None = None,
    rater_paths: Iterable[str | Path] = (),
    features: Sequence[int] | None = None,
    embedder: Any = None,
    dataset: Any = None,
) -> Path:
    """Run ``raters`` (default: ``rate.raters``) and return the ``RUN/ratings`` folder.

    ``rater_paths`` are extra local rater files (besides ``rate.rater_paths``); ``features``
    restricts the features (default: every feature the run knows of); ``embedder``/``dataset``
    override the config's (tests, notebooks).
    """
    from autointerp.rating import RATERS, RatingContext, build_rater, load_rater_file
    from autointerp.runfiles import write_ratings

    cfg = ctx.config.rate
    for path in [*cfg.rater_paths, *rater_paths]:
        load_rater_file(path)
    names = list(dict.fromkeys(raters if raters is not None else cfg.raters))
    if not names:
        raise UserError("no raters selected; pass --raters a,b or set rate.raters in the config")
    for name in names:
        RATERS.get(name)  # unknown name → one-line error listing the valid ones
    out, paths = ctx.paths.ratings, ctx.paths
    todo = [n for n in names if overwrite or not (paths.rating_csv(n).exists() and paths.rating_json(n).exists())]
    for name in sorted(set(names) - set(todo)):
        print(
            f"[rate] {name}: {paths.rating_csv(name)} exists, skipped (use --overwrite to recompute)",
            file=sys.stderr,
        )
    if not todo:
        return out

    rctx = RatingContext(ctx, embedder=embedder, dataset=dataset)
    feats = sorted({int(f) for f in features}) if features is not None else rctx.features
    if not feats:
        raise UserError(f"{ctx.root}: no features to rate; run the examples/visualize stages first")
    instances = [build_rater(rctx, name) for name in todo]
    for rater in instances:
        rctx.require(rater)

    embedding_raters = [r for r in instances if "embedder" in r.needs]
    if embedding_raters:
        what = ["top"]
        if any("visualizations" in r.needs for r in embedding_raters):
            what.append("vis")
        null = max([int(r.options.get("null_pool", 0) or 0) for r in embedding_raters], default=0)
        rctx.prefetch(feats, what, null_size=null if any("dataset" in r.needs for r in embedding_raters) else 0)

    from autointerp import executor

    given = embedder is not None or dataset is not None  # objects given here stay here: one process
    workers, threads = executor.stage_workers(1 if given else cfg.workers, len(instances), "rate", ctx.config)
    if embedding_raters and (ctx.config.executor == "ray" or workers > 1):
        rctx.embedder.flush()  # workers elsewhere read the prefetched embeddings from the disk cache
    by_name = {rater.name: rater for rater in instances}

    def write(name: str, scored: tuple[Any, dict[str, Any], float]) -> None:
        table, meta, seconds = scored
        rater = by_name[name]
        if list(table.feature_ind) != list(feats):
            raise UserError(f"rater {rater.name!r} returned rows for other features than it was asked for")
        meta.update(
            n_features=len(feats),
            n_scored=int(np.isfinite(table.I).sum()),
            extras=list(table.extras),
            seconds=round(seconds, 3),
            **table.meta,
        )
        csv_path, _ = write_ratings(paths, rater.name, table, meta)
        if "embedder" in rater.needs:
            rctx.embedder.flush()
        print(
            f"[rate] {rater.name}: {meta['n_scored']}/{len(feats)} features scored in {meta['seconds']:.1f}s "
            f"-> {csv_path}",
            file=sys.stderr,
        )

    files = [str(Path(p).resolve()) for p in [*cfg.rater_paths, *rater_paths]]
    task = RateTask(str(ctx.root), ctx.config, feats, files, local=(rctx, by_name))
    task.threads = threads
    if given:
        task.label = "rate (in this process: embedder/dataset given in Python)"
        executor.run_units(None, task, [r.name for r in instances], write)
    else:
        executor.run_units(ctx.config, task, [r.name for r in instances], write, workers=workers)
    if "embedder" in rctx.__dict__:
        cache = rctx.embedder
        print(f"[rate] embeddings computed: {cache.computed}, cached images: {len(cache)}", file=sys.stderr)
    return out


class RateTask:
    """Raters as units of :mod:`autointerp.executor`: a unit is a rater's name, its result the rater's
    table over every feature, its metadata and the seconds it took; the driver writes both files. (A
    rater's statistics, e.g. its null sets and calibration, span all features, so a rater is one unit.)
    Workers elsewhere open the run folder with the driver's config and read prefetched embeddings
    from its disk cache; in this process the driver's context and rater objects are used."""

    label = "rate"
    threads = None

    def __init__(
        self,
        root: str,
        config: Any,
        features: list[int],
        rater_files: list[str] = (),
        local: tuple[Any, dict[str, Any]] | None = None,
    ) -> None:
        self.root, self.config, self.features, self.rater_files = root, config, list(features), list(rater_files)
        self.local = local
        self.cuda = config.device != "cpu"  # embedders run on the run's device

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "local": None}  # a worker elsewhere builds its own context and raters

    def setup(self) -> tuple[Any, dict[str, Any]]:
        if self.local is not None:
            return self.local
        from autointerp.rating import RatingContext, load_rater_file

        for path in self.rater_files:  # raters defined in local files register themselves here too
            load_rater_file(path)
        return RatingContext(RunContext(self.root, self.config)), {}

    def run(self, state: tuple[Any, dict[str, Any]], name: str, progress: Any) -> tuple[Any, dict[str, Any], float]:
        from autointerp.rating import build_rater

        rctx, raters = state
        rater = raters.get(name) or build_rater(rctx, name)
        t0 = time.perf_counter()
        table = rater.score(rctx, self.features)
        meta = rater.metadata()
        if "embedder" in rater.needs:
            meta["embedder"] = rctx.embedder.embedder.id
        progress(1)
        return table, meta, time.perf_counter() - t0

    def weight(self, unit: str) -> int:
        return 1

    def describe(self, state: Any) -> dict[str, Any]:
        return {}
