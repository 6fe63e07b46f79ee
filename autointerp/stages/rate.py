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

    for rater in instances:
        t0 = time.perf_counter()
        table = rater.score(rctx, feats)
        if list(table.feature_ind) != list(feats):
            raise UserError(f"rater {rater.name!r} returned rows for other features than it was asked for")
        meta = rater.metadata()
        if "embedder" in rater.needs:
            meta["embedder"] = rctx.embedder.embedder.id
        meta.update(
            n_features=len(feats),
            n_scored=int(np.isfinite(table.I).sum()),
            extras=list(table.extras),
            seconds=round(time.perf_counter() - t0, 3),
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
    if "embedder" in rctx.__dict__:
        cache = rctx.embedder
        print(f"[rate] embeddings computed: {cache.computed}, cached images: {len(cache)}", file=sys.stderr)
    return out
