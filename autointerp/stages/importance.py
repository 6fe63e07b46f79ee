"""Stage 2: mean-ablation importance of every feature, from the cached activations.

``importance(c)`` = number of images whose true class is in the model's top-k (valid outputs only)
minus the same number when channel ``c`` of the layer is replaced by its dataset mean (per channel,
or per channel and position: ``importance.mean_scope``). Methods (``importance.method``):

* ``exact`` (default): cached activations through the adapter's tail only, many ablations per
  pass, skipping (image, feature) pairs that a sound bound proves cannot change the count. The path
  is the fast path that ``importance.fast_path`` selects from :mod:`autointerp.importance.fastpaths`
  (``auto``: the first registered one that supports the model and layer) or else the generic engine:
  the affine path where the tail is affine, the batched tail path otherwise (with a Lipschitz skip
  bound when the tail is a simple chain). Counts are exact either way; the ``mean_delta_logprob_true``
  column is exact only for pairs evaluated exactly (``n_exact``) and a first-order estimate for skipped
  or bound-decided pairs.
* ``attribution``: first-order estimate for all features from one backward pass (fast, approximate);
  compared with ``importance_exact.csv`` / ``importance_naive.csv`` when present.
* ``naive``: one full forward pass of the model per feature with a hook (reference; slow).

Writes ``RUN/importance/``: ``importance_<method>.csv`` and ``importance.csv`` (the configured
method's table), ``summary.json``, ``cumulative_ablation.csv`` (exact/naive), and the results of
finished units of work in ``chunks/<method>/`` (chunks of ``importance.chunk_size`` features; for
``exact`` each in segments of ``importance.segment_images`` images) so an interrupted run resumes
where it stopped and ends with identical output.

For the exact method it also writes how noisy both measures are (:mod:`autointerp.importance.reliability`):
``bootstrap.csv`` (per-feature bootstrap intervals over images) and ``reliability.json`` (split-half
reliability across features), from the saved units: per image where the units hold each pair's outcome
(the generic engine's paths, and fast paths with ``per_image_outcomes``), else per segment. A run
whose table exists but whose reliability files do not gets them from its saved units.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autointerp.atomic import write_json, write_text
from autointerp.errors import DataError, UserError
from autointerp.features import select_features
from autointerp.progress import Progress
from autointerp.runfiles import (
    ATTRIBUTION_COLUMNS,
    EXACT_COLUMNS,
    STUDY_COLUMNS,
    load_array,
    read_activation_meta,
    read_importance,
    read_importance_summary,
    read_json,
    read_unit,
    write_ablation_curve,
    write_importance,
    write_importance_summary,
    write_unit,
)
from autointerp.runfolder import IMPORTANCE_INPUTS

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from autointerp.importance.ablation import Ablation, FeatureTally
    from autointerp.importance.fastpaths import SelectedPath
    from autointerp.importance.workers import Unit, UnitResult
    from autointerp.runfolder import RunContext

__all__ = ["ATTRIBUTION_COLUMNS", "EXACT_COLUMNS", "STUDY_COLUMNS", "run_importance", "update_reliability"]
METHODS = ("exact", "attribution", "naive")


# -- inputs --------------------------------------------------------------------------------------
class ImportanceInputs:
    """The activation cache the stage reads (validated, memory-mapped)."""

    def __init__(self, ctx: RunContext) -> None:
        paths = self.paths = ctx.paths
        self.folder = paths.activations
        self.meta: dict[str, Any] = read_activation_meta(paths)
        self.acts = load_array(paths.acts, mmap=True)
        if self.acts.ndim != 4:
            raise DataError(f"{paths.acts}: expected (N, C, H, W), got shape {self.acts.shape}")
        n, c, h, w = self.acts.shape
        self.labels = load_array(paths.labels).astype(np.int64)
        if self.labels.shape != (n,):
            raise DataError(f"{paths.labels}: expected shape ({n},), got {self.labels.shape}")
        self.mean = load_array(paths.mean).astype(np.float32)
        if self.mean.shape != (c,):
            raise DataError(f"{paths.mean}: expected shape ({c},), got {self.mean.shape}")
        pos = paths.mean_position
        self.mean_position = load_array(pos).astype(np.float32) if pos.exists() else None
        if self.mean_position is not None and self.mean_position.shape != (c, h, w):
            raise DataError(f"{pos}: expected shape ({c}, {h}, {w}), got {self.mean_position.shape}")
        self.shape = (n, c, h, w)

    def fingerprint(self) -> str:
        """Identifies the cache contents (size, mtime of every input file)."""
        parts = []
        for name in IMPORTANCE_INPUTS:
            p = self.folder / name
            if p.exists():
                st = p.stat()
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)


# -- result store --------------------------------------------------------------------------------
class ChunkStore:
    """Result files of finished units of work under ``chunks/<method>/`` (chunks of features, each in
    segments of images for the exact method), valid only for one settings key."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.key = key
        key_file = folder / "key.txt"
        if folder.exists() and (not key_file.exists() or key_file.read_text() != key):
            shutil.rmtree(folder)  # made with other inputs/settings: stale
        folder.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            write_text(key_file, key)
        #: what the path said about itself when its units ran (the summary's, also after a resume with none left)
        self.info_file = folder / "path_info.json"

    def path(self, chunk: list[int]) -> Path:
        return self.folder / f"chunk_{chunk[0]:05d}_{chunk[-1]:05d}_{len(chunk)}.npz"

    def segment_path(self, chunk: list[int], start: int, end: int) -> Path:
        """The file of ``chunk``'s results over images ``start:end``."""
        return self.path(chunk).with_name(f"{self.path(chunk).stem}_images_{start:08d}_{end:08d}.npz")

    def has(self, chunk: list[int]) -> bool:
        return self.path(chunk).exists()

    def save(self, chunk: list[int], arrays: dict[str, np.ndarray], path: Path | None = None) -> None:
        write_unit(path or self.path(chunk), chunk, arrays)

    def load(self, chunk: list[int], path: Path | None = None) -> dict[str, np.ndarray]:
        path = path or self.path(chunk)
        out = read_unit(path)
        if out["features"].tolist() != chunk:
            raise DataError(f"{path}: holds other features; delete {self.folder} and rerun")
        return out


def _chunks(features: list[int], size: int) -> list[list[int]]:
    return [features[i : i + size] for i in range(0, len(features), size)]


def _settings_key(ctx: RunContext, inputs: ImportanceInputs, method: str, features: list[int]) -> str:
    """Identifies what the saved units were computed with. For the exact method that includes the
    PyTorch threads per unit: counts never depend on them, but float sums can in their last digits,
    and a resumed run must end with identical output."""
    cfg = ctx.config.importance
    text = json.dumps(
        {
            "method": method,
            "k": cfg.k,
            "mean_scope": cfg.mean_scope,
            "chunk_size": cfg.chunk_size,
            "segment_images": cfg.segment_images if method == "exact" else None,
            "threads_per_unit": worker_plan(ctx, inputs, features)[1] if method == "exact" else None,
            "batch_size": cfg.batch_size,
            "features": features,
            "model": ctx.config.model.model_dump(mode="json"),
            "layer": ctx.config.layer,
            "cache": inputs.fingerprint(),
            **({"fast_path": fast.key} if method == "exact" and (fast := fast_path(ctx, inputs)) else {}),
            # raised when what a method's saved units hold changes (exact: 2 per segment of images, 3 a fast path's
            # tiers changed which pairs count as exactly evaluated)
            "version": 3 if method == "exact" else 1,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- the stage -----------------------------------------------------------------------------------
def run_importance(
    ctx: RunContext, overwrite: bool = False, features: list[int] | None = None, method: str | None = None
) -> Path:
    """Compute (or resume, or skip) importance; returns ``RUN/importance/importance.csv``.

    ``features`` (default: ``importance.features`` from the config, else all) limits the features;
    ``method`` overrides ``importance.method``. The output is skipped when it exists, unless
    ``overwrite``; results of finished chunks are reused after an interruption either way.
    """
    import torch

    from autointerp.importance.ablation import Ablation

    cfg = ctx.config.importance
    method = method or cfg.method
    if method not in METHODS:
        raise UserError(f"importance method {method!r} is not known; expected one of {', '.join(METHODS)}")
    out_csv = ctx.paths.importance_csv
    method_csv = ctx.paths.importance_method_csv(method)
    # importance.csv holds the configured method's table (or the first one computed)
    primary = method == cfg.method or not out_csv.exists()
    if method_csv.exists() and not overwrite:
        if primary and (not out_csv.exists() or out_csv.read_bytes() != method_csv.read_bytes()):
            write_text(out_csv, method_csv.read_text(encoding="utf-8"))
        if primary:
            update_reliability(ctx, method, refresh=False)
        return out_csv if primary else method_csv
    inputs = ImportanceInputs(ctx)
    n, c, h, w = inputs.shape
    feats = select_features(features, cfg.features, c, ctx.config.layer)
    model = ctx.model
    layer = ctx.config.layer
    n_model = model.check_layer(layer)
    if n_model != c:
        raise DataError(f"{inputs.paths.acts}: has {c} channels but layer {layer!r} has {n_model}")
    if cfg.mean_scope == "position" and inputs.mean_position is None:
        raise DataError(f"{inputs.paths.mean_position} not found (needed by importance.mean_scope=position)")
    ablation = Ablation.from_means(inputs.mean, inputs.mean_position, cfg.mean_scope, (c, h, w))
    valid = model.valid_outputs.detach().cpu().bool()
    if inputs.labels.min(initial=0) < 0 or inputs.labels.max(initial=0) >= len(valid):
        raise DataError(f"{inputs.paths.labels}: labels must be model output indices 0..{len(valid) - 1}")
    t0 = time.perf_counter()
    key = _settings_key(ctx, inputs, method, feats)
    chunk_dir = ctx.paths.chunks(method)
    if overwrite and chunk_dir.exists():
        shutil.rmtree(chunk_dir)
    store = ChunkStore(chunk_dir, key)
    device = next(iter(model.module.parameters()), torch.zeros(0)).device
    model.to("cpu")  # the cache is read on the CPU; the engine works there
    try:
        if method == "attribution":
            table, summary = _run_attribution(ctx, inputs, feats, ablation, valid, store)
        else:
            table, summary = _run_counts(ctx, inputs, feats, ablation, valid, store, method)
    finally:
        model.to(device)
    for row in table:
        row["model"] = str(inputs.meta.get("model", ctx.config.model.name))
        row["layer"] = str(inputs.meta.get("layer", ctx.config.layer))
    summary.update(
        method=method,
        k=cfg.k,
        mean_scope=cfg.mean_scope,
        n_images=n,
        n_features=len(feats),
        seconds=round(time.perf_counter() - t0, 3),
        peak_rss_mb=peak_rss_mb(),
    )
    write_importance(method_csv, table)
    if primary:
        write_importance(out_csv, table)
    summaries = read_importance_summary(ctx.paths)
    summaries[method] = summary
    write_importance_summary(ctx.paths, summaries)
    if primary:
        update_reliability(ctx, method, refresh=True)
    return out_csv if primary else method_csv


def update_reliability(ctx: RunContext, method: str, refresh: bool) -> dict[str, Any] | None:
    """Write ``bootstrap.csv`` and ``reliability.json`` for ``importance.csv`` (``method``'s table) from the
    exact method's saved units (:mod:`autointerp.importance.reliability`); returns what the JSON holds, or
    None where nothing was written.

    ``refresh``: the table was just computed (always rewrite). Otherwise only when the JSON is missing or was
    made with another ``importance.reliability_boot`` or ``seed``; where the units are gone (or are another
    run's), nothing is written and readers report the estimates unavailable. Tables of other methods have
    no reliability files (stale ones are removed)."""
    from autointerp.importance.reliability import (
        UnitsUnavailable,
        load_units,
        summary_line,
        write_reliability,
    )

    folder = ctx.paths.importance
    json_path, boot_path = ctx.paths.reliability_json, ctx.paths.bootstrap_csv
    if method != "exact":
        for p in (json_path, boot_path):
            p.unlink(missing_ok=True)
        return None
    n_boot, seed = ctx.config.importance.reliability_boot, ctx.config.seed
    if not refresh and json_path.exists() and boot_path.exists():
        from autointerp.analysis.reliability import read_importance_reliability

        try:
            old = read_importance_reliability(folder)
        except DataError:
            old = None  # damaged: computed again below
        if old is not None and old.n_boot == n_boot and old.seed == seed:
            return None
    table = ctx.paths.importance_method_csv("exact")
    try:
        exact = read_importance(table).check()
        c2w, w2c = exact.column("correct_to_wrong"), exact.column("wrong_to_correct")
        counts = {int(f): (int(a), int(b)) for f, a, b in zip(exact.feature_ind, c2w, w2c, strict=True)}
        units = load_units(ctx.paths.chunks("exact"), list(counts), counts)
    except (UserError, ValueError) as exc:
        print(f"[importance] reliability unavailable: cannot read {table} ({exc})", file=sys.stderr)
        return None
    except UnitsUnavailable as exc:
        print(f"[importance] reliability unavailable: {exc}", file=sys.stderr)
        return None
    info = write_reliability(folder, units, n_boot, seed)
    print(f"[importance] {summary_line(info)}", file=sys.stderr)
    return info


def _run_counts(
    ctx: RunContext,
    inputs: ImportanceInputs,
    feats: list[int],
    ablation: Ablation,
    valid: torch.Tensor,
    store: ChunkStore,
    method: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if method == "naive":
        arrays, summary, computed = _naive_chunks(ctx, inputs, feats, ablation, valid, store)
    else:
        arrays, summary, computed = _exact_segments(ctx, inputs, feats, ablation, valid, store)
    rows: list[dict[str, Any]] = []
    totals = {"n_skipped": 0, "n_bounded": 0, "n_exact": 0}
    for i, f in enumerate(feats):
        c2w, w2c = int(arrays["correct_to_wrong"][i]), int(arrays["wrong_to_correct"][i])
        row = {
            "feature_ind": f,
            "importance": c2w - w2c,
            "correct_to_wrong": c2w,
            "wrong_to_correct": w2c,
            "mean_delta_logprob_true": float(arrays["mean_delta_logprob"][i]),
            "n_skipped": int(arrays["n_skipped"][i]),
            "n_bounded": int(arrays["n_bounded"][i]),
            "n_exact": int(arrays["n_exact"][i]),
            "method": method,
        }
        for t in totals:
            totals[t] += row[t]
        rows.append(row)
    pairs = max(sum(totals.values()), 1)
    summary.update(totals)
    summary["skipped_fraction"] = totals["n_skipped"] / pairs
    summary["not_exactly_evaluated_fraction"] = (totals["n_skipped"] + totals["n_bounded"]) / pairs
    if not ctx.paths.cumulative_ablation_csv.exists() or computed:
        _write_cumulative(ctx, inputs, rows, ablation, valid)
    return rows, summary


_TALLY_COLUMNS = ("correct_to_wrong", "wrong_to_correct", "mean_delta_logprob", "n_skipped", "n_bounded", "n_exact")


def _tally_arrays(t: FeatureTally) -> dict[str, np.ndarray]:
    return {name: getattr(t, name) for name in _TALLY_COLUMNS}


def fast_path(ctx: RunContext, inputs: ImportanceInputs) -> SelectedPath | None:
    """The fast path ``importance.fast_path`` selects for the run's model and layer, with its validated
    options, or None: the generic engine (:func:`~autointerp.importance.fastpaths.select_fast_path`)."""
    from autointerp.importance.fastpaths import select_fast_path

    setting = ctx.config.importance.fast_path
    shape = inputs.shape[1:]
    return select_fast_path(setting.name, setting.options, ctx.model, ctx.config.layer, shape, ctx.device.type)


def choose_path(ctx: RunContext, inputs: ImportanceInputs, fast: SelectedPath | None = None):
    """The exact path for the run: ``fast``'s (see :func:`fast_path`; its process settings applied here,
    where the path runs) or else the generic engine's affine or tail path."""
    from autointerp.importance.engine import read_cache
    from autointerp.importance.paths import TailPath

    if fast is not None:
        fast.path.prepare_process()
        return fast.factory(ctx.model, ctx.config.layer, inputs.shape[1:])()
    from autointerp.importance.affine import AffineTailPath, affine_jacobian

    example = read_cache(inputs.acts, slice(0, 4))
    tail = ctx.model.tail(ctx.config.layer)
    jacobian = affine_jacobian(tail, example)
    if jacobian is not None:  # pool + linear tails: no pass through the tail except at ties
        return AffineTailPath(tail, jacobian, example=example[:1])
    return TailPath(tail, example=example[:1], device=ctx.device)  # the tail's passes on the run's device


def exact_units(ctx: RunContext, inputs: ImportanceInputs, feats: list[int]) -> list[Unit]:
    """The exact method's units of work: chunks of ``importance.chunk_size`` features, each over the
    images in segments of ``importance.segment_images``."""
    from autointerp.importance.workers import Unit

    cfg = ctx.config.importance
    n = inputs.shape[0]
    segments = [(s, min(s + cfg.segment_images, n)) for s in range(0, n, cfg.segment_images)]
    return [Unit(tuple(ch), s, e) for ch in _chunks(feats, cfg.chunk_size) for s, e in segments]


def worker_plan(ctx: RunContext, inputs: ImportanceInputs, feats: list[int]) -> tuple[int, int]:
    """(worker processes, threads per unit) for the exact method (:func:`~autointerp.importance.workers.
    resolve_workers`); one process wherever the run's path is not a fast path that allows worker processes."""
    import torch

    from autointerp.importance.workers import resolve_workers

    workers, threads = resolve_workers(ctx.config.importance.workers, len(exact_units(ctx, inputs, feats)))
    fast = fast_path(ctx, inputs)
    if workers > 1 and not (fast is not None and fast.path.worker_processes):
        return 1, torch.get_num_threads()
    return workers, threads


def _unit_task(ctx: RunContext, inputs: ImportanceInputs, job: Any, workers: int) -> Any:
    """The exact method's :class:`~autointerp.importance.workers.UnitTask` for the run's executor: in this
    process the path is built from ``ctx``; elsewhere from a picklable factory (the InceptionV1 one, else
    :func:`path_from_run_folder`). Each pair's outcome is kept on every path but the InceptionV1 one
    (832 features x every image)."""
    from autointerp.importance.workers import UnitTask

    fast = fast_path(ctx, inputs)
    if workers > 1 or ctx.config.executor == "ray":
        if fast is not None:  # the fast path's own picklable factory, and the process settings it asks for
            job.make_path = fast.factory(ctx.model, ctx.config.layer, inputs.shape[1:])
            job.prepare_process = fast.path.prepare_process
        else:
            job.make_path = functools.partial(path_from_run_folder, str(ctx.root), ctx.config)
    else:
        job.make_path = functools.partial(choose_path, ctx, inputs, fast)
    per_image = fast is None or fast.path.per_image_outcomes
    # generic paths run the tail on the run's device (a GPU per Ray task where the cluster has them)
    return UnitTask(job, per_image=per_image, cuda=fast is None and ctx.config.device != "cpu")


def path_from_run_folder(root: str, config: Any) -> Any:
    """:func:`choose_path` for the run folder ``root`` with ``config`` (what a worker elsewhere builds: the
    model from the config, checked against the activation cache's fingerprint)."""
    from autointerp.runfolder import RunContext

    ctx = RunContext(root, config)
    ctx.model.to("cpu")
    inputs = ImportanceInputs(ctx)
    return choose_path(ctx, inputs, fast_path(ctx, inputs))


def _exact_segments(
    ctx: RunContext,
    inputs: ImportanceInputs,
    feats: list[int],
    ablation: Ablation,
    valid: torch.Tensor,
    store: ChunkStore,
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """The exact method in units (:func:`exact_units`): chunks of ``importance.chunk_size`` features, each
    worked through the images in segments of ``importance.segment_images``
    (:func:`~autointerp.importance.engine.evaluate_segment`: all of the chunk's features per image batch,
    so per-image work is done once per chunk), in ``importance.workers`` processes where the path allows
    (:mod:`autointerp.importance.workers`). Every finished unit is saved and reused; tallies add up in
    segment order, so a resumed run gives identical output."""
    from autointerp import executor
    from autointerp.importance.ablation import FeatureTally
    from autointerp.importance.workers import SINGLE_PROCESS_HINT, UnitJob

    cfg = ctx.config.importance
    units = exact_units(ctx, inputs, feats)
    todo = [u for u in units if not store.segment_path(list(u.features), u.start, u.end).exists()]
    info: dict[str, Any] = {}
    if todo:
        workers, threads = worker_plan(ctx, inputs, feats)
        job = UnitJob(str(inputs.paths.acts), inputs.labels, ablation, valid, cfg.k, cfg.batch_size, threads)

        def save(unit: Unit, result: UnitResult) -> None:
            arrays = dict(result.sums)
            arrays["fallback"] = np.asarray(result.fallback, np.int64)
            arrays["tier_names"] = np.asarray(list(result.tiers), dtype=str)
            arrays["tier_pairs"] = np.asarray(list(result.tiers.values()), np.int64)
            if result.outcomes is not None:  # each pair's outcome, for the reliability estimates
                arrays["image_flip"] = result.outcomes.flip
                arrays["image_delta_logprob"] = result.outcomes.delta_logprob
            store.save(list(unit.features), arrays, store.segment_path(list(unit.features), unit.start, unit.end))
            if workers > 1 or ctx.config.executor == "ray":  # the parent's own peak is in the summary's peak_rss_mb
                info["worker_peak_rss_mb"] = max(info.get("worker_peak_rss_mb", 0.0), result.peak_rss_mb)

        def describe(description: dict[str, str]) -> None:
            info.update(description)
            write_json(store.info_file, info)  # before any unit is saved: a resumed run finds it
            if "int8_tier" in description:  # whether the int8 tier runs on this machine, and why
                print(f"[importance] int8 tier: {description['int8_tier']}", file=sys.stderr)

        info["workers"], info["threads_per_worker"] = workers, threads
        # progress in ablations (feature × image pairs): the bar's ETA covers every chunk and segment
        total = sum(u.pairs for u in todo)
        task = _unit_task(ctx, inputs, job, workers)
        info["executor"] = ctx.config.executor
        if ctx.config.executor == "ray":
            print(f"[importance] {len(todo)} unit(s) as Ray tasks, {threads} thread(s) each", file=sys.stderr)
        elif workers > 1:
            print(f"[importance] {workers} worker processes, {threads} thread(s) each", file=sys.stderr)
        with executor.session(ctx.config, task, workers, SINGLE_PROCESS_HINT) as units_session:
            describe(units_session.description)
            where = f", {workers} workers" if workers > 1 and ctx.config.executor == "local" else ""
            with Progress(f"importance ({info['path']}{where})", total, "ablations") as bar:
                units_session.map(todo, save, bar.advance)
    elif store.info_file.exists():  # every unit was saved before an interruption: the path's description
        info.update(read_json(store.info_file))
    chunk_tallies = []
    fallback = 0
    tiers_total: dict[str, int] = {}
    segments = sorted({(u.start, u.end) for u in units})
    for ch in _chunks(feats, cfg.chunk_size):
        total = FeatureTally(np.asarray(ch, np.int64))
        for s, e in segments:  # in order: the float sums add up the same way on every run
            data = store.load(ch, store.segment_path(ch, s, e))
            part = FeatureTally(total.features, n_images=e - s)
            for name in part.SUMS:
                setattr(part, name, data[name])
            total.add(part)
            fallback += int(data["fallback"])
            for t, v in zip(data["tier_names"].tolist(), data["tier_pairs"].tolist(), strict=True):
                tiers_total[t] = tiers_total.get(t, 0) + int(v)
        chunk_tallies.append(_tally_arrays(total))
    info["boundary_fallbacks"] = fallback
    info["segments"] = len(segments)
    if tiers_total:
        info["pairs_by_tier"] = tiers_total  # pairs decided per tier of the path
    arrays = {name: np.concatenate([t[name] for t in chunk_tallies]) for name in _TALLY_COLUMNS}
    return arrays, info, bool(todo)


def _naive_chunks(
    ctx: RunContext,
    inputs: ImportanceInputs,
    feats: list[int],
    ablation: Ablation,
    valid: torch.Tensor,
    store: ChunkStore,
) -> tuple[dict[str, np.ndarray], dict[str, Any], bool]:
    """The naive method in chunks of ``importance.chunk_size`` features (finished chunks are reused)."""
    import torch

    from autointerp.importance.engine import read_cache
    from autointerp.importance.naive import naive_importance

    cfg = ctx.config.importance
    chunks = _chunks(feats, cfg.chunk_size)
    todo = [ch for ch in chunks if not store.has(ch)]
    if todo:
        model = ctx.model
        index_path = inputs.paths.dataset_index
        index = load_array(index_path) if index_path.exists() else np.arange(inputs.shape[0])
        images = ctx.dataset.batch(index.tolist(), ctx.image_size())
        cached = read_cache(inputs.acts, slice(None))
        layer_module = model.layer_module(ctx.config.layer)
        if layer_module is None:
            raise UserError(f"method 'naive' needs layer {ctx.config.layer!r} to be a named module of the model")
        with Progress("importance (naive full forward)", sum(map(len, todo)), "features") as bar:
            for ch in todo:
                tally = naive_importance(model.forward, layer_module, images, torch.as_tensor(inputs.labels), ch,
                                         ablation, cfg.k, valid, batch_size=cfg.batch_size, cached=cached,
                                         layout=model.layer_layout(ctx.config.layer))  # fmt: skip
                store.save(ch, _tally_arrays(tally))
                bar.advance(len(ch))
    parts = [store.load(ch) for ch in chunks]
    arrays = {name: np.concatenate([p[name] for p in parts]) for name in _TALLY_COLUMNS}
    return arrays, {"path": "naive_full_forward"}, bool(todo)


def _run_attribution(
    ctx: RunContext,
    inputs: ImportanceInputs,
    feats: list[int],
    ablation: Ablation,
    valid: torch.Tensor,
    store: ChunkStore,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from autointerp.importance.attribution import agreement, attribution_importance

    cfg = ctx.config.importance
    path = choose_path(ctx, inputs, fast_path(ctx, inputs))
    tail = path.tail
    whole = [feats]
    if not store.has(feats):
        with Progress("importance (attribution)", inputs.shape[0], "images") as bar:
            res = attribution_importance(tail, inputs.acts, inputs.labels, feats, ablation, cfg.k, valid,
                                         batch_size=cfg.batch_size, on_batch=bar.advance)  # fmt: skip
        store.save(feats, {"importance": res.importance, "mean_delta_logprob": res.mean_delta_logprob,
                           "temperature": np.asarray(res.temperature)})  # fmt: skip
    data = store.load(whole[0])
    rows = [
        {"feature_ind": f, "importance": float(data["importance"][i]),
         "mean_delta_logprob_true": float(data["mean_delta_logprob"][i]), "method": "attribution"}
        for i, f in enumerate(feats)
    ]  # fmt: skip
    summary: dict[str, Any] = {"temperature": float(data["temperature"])}
    for ref in ("exact", "naive"):
        ref_csv = ctx.paths.importance_method_csv(ref)
        exact = read_importance(ref_csv).check().values() if ref_csv.exists() else {}
        common = [f for f in feats if f in exact]
        if len(common) >= 3:
            est = np.array([r["importance"] for r in rows if r["feature_ind"] in exact])
            ex = np.array([exact[f] for f in common])
            agree = agreement(est, ex)
            if len(common) < 160:  # top-40 of few features says little: also the top quarter
                agree.update(agreement(est, ex, top=max(len(common) // 4, 1)))
            summary[f"agreement_with_{ref}"] = agree
            break
    return rows, summary


def _write_cumulative(
    ctx: RunContext, inputs: ImportanceInputs, rows: list[dict[str, Any]], ablation: Ablation, valid: torch.Tensor
) -> None:
    from autointerp.importance.cumulative import cumulative_ablation

    cfg = ctx.config.importance
    ranked = [r["feature_ind"] for r in sorted(rows, key=lambda r: (-r["importance"], r["feature_ind"]))]
    tail = ctx.model.tail(ctx.config.layer)
    table = cumulative_ablation(tail, inputs.acts, inputs.labels, ranked, ablation, cfg.k, valid, cfg.batch_size)
    write_ablation_curve(ctx.paths.cumulative_ablation_csv, table)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    from autointerp.importance.workers import peak_rss_mb as process_peak

    return process_peak()
