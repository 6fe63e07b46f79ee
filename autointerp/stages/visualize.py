"""Stage 4 — feature visualisations, feature cards, a contact sheet and a quality check.

For every feature: ``visualize.n_images`` diverse visualisations (Lucid's method, batched over
features by :mod:`autointerp.vis.render`), optional negative ones, and a feature card (visualisations
above, the dataset examples of :mod:`autointerp.stages.examples` below, caption
``feature N · importance X``). Writes (layout in docs/ARCHITECTURE.md)::

    RUN/visualizations/NNNN/vis_0.png ... card.png meta.json (neg_0.png ... with visualize.negative)
    RUN/visualizations/index.json      seed, settings, per-feature paths, activations, quality, flags
    RUN/visualizations/contact_sheet.png
    RUN/visualizations/quality.csv     per-feature quality check

**Quality check.** Each visualisation is resized to the size the activation cache used and measured
exactly like the cache (spatial max or mean of the channel, ``meta.json`` ``reduce``); the best of the
``n`` is compared with the strongest dataset example. A visualisation weaker than a natural image is a
failed optimisation: flagged ``weak`` and counted in the summary.

Resumable per feature (a feature folder appears complete or not at all); ``overwrite`` redoes the
selected features. Same config and seed → same images.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

from autointerp.atomic import atomic_dir, write_bytes
from autointerp.errors import DataError
from autointerp.features import select_features
from autointerp.runfiles import (
    read_activation_meta,
    read_feature_entries,
    read_importance,
    read_index,
    read_topk,
    write_feature_entry,
    write_index,
)
from autointerp.runfolder import CARD_PNG, VISUALIZATIONS_DIR, RunContext, feature_dirname, feature_relpath
from autointerp.stages.examples import run_examples
from autointerp.vis.selection import chunks, configured_features


def render_settings(ctx: RunContext):
    """The :class:`~autointerp.vis.render.RenderSettings` of ``ctx.config.visualize``."""
    from autointerp.vis.render import RenderSettings

    v = ctx.config.visualize
    return RenderSettings(n_images=v.n_images, steps=v.steps, size=v.size, lr=v.lr, diversity=v.diversity)


def _settings_key(ctx: RunContext, settings_json: dict) -> str:
    blob = json.dumps([settings_json, ctx.config.seed, ctx.config.visualize.negative], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _png_bytes(image) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def quality_check(vis_activation: list[float], example_max: float) -> dict:
    """Compare the best visualisation with the strongest dataset example (same measure); non-finite values
    are written as null (:func:`autointerp.atomic.write_json`)."""
    vis_max = max(vis_activation) if vis_activation else None
    ratio = None
    if vis_max is not None and example_max > 0:
        ratio = vis_max / example_max
    ok = vis_max is not None and vis_max >= example_max
    return {
        "vis_max": None if vis_max is None else float(vis_max),
        "example_max": float(example_max),
        "ratio": ratio,
        "ok": ok,
        "n_above": int(sum(v >= example_max for v in vis_activation)),
    }


def run_visualize(ctx: RunContext, overwrite: bool = False, features: list[int] | None = None) -> Path:
    """Render, check and draw cards for ``features`` (default ``visualize.features``, else all)."""
    from autointerp.vis.progress import FeatureProgress
    from autointerp.vis.render import Job

    cfg = ctx.config.visualize
    meta = read_activation_meta(ctx.paths)
    layer = ctx.config.layer
    model = ctx.model
    channels = model.check_layer(layer)
    feats = select_features(features, configured_features(ctx), channels, layer)
    if int(meta["channels"]) != channels:
        raise DataError(
            f"{ctx.paths.activations_meta}: cache has {meta['channels']} channels but layer "
            f"{layer!r} has {channels}; rerun activations with --overwrite"
        )
    run_examples(ctx, overwrite=False, features=feats)
    examples = read_index(ctx.paths.examples_index, required=f"run `autointerp examples {ctx.root}`")
    top_val = read_topk(ctx.paths)["top_val"]
    importance = read_importance(ctx.paths.importance_csv).check().values() if ctx.paths.importance_csv.exists() else {}
    settings = render_settings(ctx)
    settings_json = settings.to_json()
    key = _settings_key(ctx, settings_json)
    out = ctx.paths.visualizations
    existing = read_feature_entries(out)
    pending = [f for f in feats if overwrite or f not in existing]
    stale = [f for f in feats if f not in pending and existing[f].get("settings_key") != key]
    if stale:
        print(
            f"visualize: {len(stale)} feature(s) (e.g. {stale[0]}) were rendered with other settings; "
            "kept — use --overwrite to redo them",
            file=sys.stderr,
        )

    if not pending and ctx.paths.visualizations_index.exists():
        return out  # every requested feature is done: the stage is skipped, nothing is rewritten
    measure_size = int(meta.get("image_size") or ctx.image_size())
    reduce = meta.get("reduce", "max")
    seed = ctx.config.seed
    if pending:
        from autointerp import executor

        task = VisualizeTask(str(ctx.root), ctx.config, settings, measure_size, reduce, local=ctx)
        todo = set(pending)
        # batches are cut from the whole feature list, not from what is left, so a resumed run renders every
        # feature with the same batch-mates (batched kernels round by batch) and gives identical images
        units = [tuple(b) for b in chunks(feats, cfg.batch_features) if todo.intersection(b)]
        workers, task.threads = executor.stage_workers(cfg.workers, len(units), "visualize", ctx.config)
        with FeatureProgress(f"visualize {layer}", sum(len(u) for u in units)) as bar:
            done = [0.0]

            def advance(features: float) -> None:  # fractions of features, as the renders step
                done[0] += features
                whole = int(done[0] + 1e-6) - bar.done
                if whole > 0:
                    bar.advance(whole)
                bar.partial(max(0.0, done[0] - bar.done))

            def write(batch: tuple[int, ...], rendered: tuple[list, list[list[float]]]) -> None:
                results, measured = rendered
                by_job = {r.job: (r, m) for r, m in zip(results, measured, strict=True)}
                for f in (f for f in batch if f in todo):
                    _write_feature(
                        ctx,
                        f,
                        by_job[Job(f)],
                        by_job.get(Job(f, -1)),
                        examples.get(f),
                        float(top_val[f, 0]),
                        importance.get(f),
                        key,
                    )

            executor.run_units(ctx.config, task, units, write, advance, workers=workers)

    entries = read_feature_entries(out)
    summary = _summarise(entries)
    fields = {
        "seed": seed,
        "settings": {
            **settings_json,
            "negative": cfg.negative,
            "measure_size": measure_size,
            "reduce": reduce,
            "model": model.name,
            "layer": layer,
        },
        "quality_summary": summary,
    }
    write_index(ctx.paths.visualizations_index, entries, **fields)
    _write_quality_csv(ctx.paths.quality_csv, entries)
    _write_contact_sheet(ctx, ctx.paths.contact_sheet, entries, f"{model.name} {layer}")
    print(_summary_line(summary), file=sys.stderr)
    return out


class VisualizeTask:
    """Batches of features to render as units of :mod:`autointerp.executor`: a unit is a tuple of features,
    its result the :class:`~autointerp.vis.render.RenderResult` of each job (positive, then negative ones
    with ``visualize.negative``) and each one's measured activations (:func:`_measure`); the driver writes
    the feature folders. Workers elsewhere build the model from the run folder and config (checked
    against the activation cache); in this process it is ``local``'s."""

    label = "visualize"
    threads = None

    def __init__(self, root: str, config, settings, measure_size: int, reduce: str, local: RunContext | None = None):
        self.root, self.config, self.settings = root, config, settings
        self.measure_size, self.reduce = measure_size, reduce
        self.local = local
        self.cuda = config.device != "cpu"  # "auto" takes a GPU where the Ray cluster has one

    def __getstate__(self) -> dict:
        return {**self.__dict__, "local": None}  # a worker elsewhere builds its own context

    def setup(self):
        ctx = self.local or RunContext(self.root, self.config)
        self.cuda = ctx.device.type == "cuda"
        return ctx.model.scored_head(self.config.layer), ctx.device

    def run(self, state, unit: tuple[int, ...], progress) -> tuple[list, list[list[float]]]:
        from autointerp.vis.render import Job, render

        head, device = state
        steps, n = self.settings.steps, len(unit)
        sent = [0.0]

        def on_step(step: int) -> None:
            target = n * min(step, steps) / steps
            progress(target - sent[0])
            sent[0] = target

        jobs = [Job(f) for f in unit] + ([Job(f, -1) for f in unit] if self.config.visualize.negative else [])
        results = render(head, jobs, self.settings, self.config.seed, device=device, on_step=on_step)
        measured = _measure(head, results, self.measure_size, self.reduce, device)
        progress(n - sent[0])
        return results, measured

    def weight(self, unit: tuple[int, ...]) -> int:
        return len(unit)

    def describe(self, state) -> dict:
        return {}


def _measure(head, results, size: int, reduce: str, device) -> list[list[float]]:
    """Activation of each saved (uint8) visualisation at the cache's input size, reduced like the cache."""
    import torch
    import torch.nn.functional as F

    from autointerp.vis.render import channel_activation

    rows, feats, owners = [], [], []
    for k, r in enumerate(results):
        if r.images is None:
            continue
        rows.append(torch.from_numpy(r.images).permute(0, 3, 1, 2).float() / 255.0)
        feats.extend([r.job.feature] * len(r.images))
        owners.extend([k] * len(r.images))
    out: list[list[float]] = [[] for _ in results]
    if not rows:
        return out
    x = torch.cat(rows)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    values = channel_activation(head, x, feats, device=device, reduce=reduce)
    for owner, v in zip(owners, values.tolist(), strict=True):
        out[owner].append(float(v))
    return out


def _write_feature(
    ctx: RunContext,
    feature: int,
    pos,
    neg,
    example_entry: dict | None,
    example_max: float,
    importance: float | None,
    key: str,
) -> None:
    from autointerp.vis.compose import card_caption, feature_card

    result, vis_act = pos
    name = feature_dirname(feature)
    flags = list(result.flags)
    quality = quality_check(vis_act, example_max)
    if result.images is not None and not quality["ok"]:
        flags.append("weak")
    entry: dict = {
        "vis": [],
        "vis_activation": vis_act,
        "render_activation": result.objective,
        "card": feature_relpath(VISUALIZATIONS_DIR, feature, CARD_PNG),
        "quality": quality,
        "flags": flags,
        "seed": result.seed,
        "lr": result.lr,
        "settings_key": key,
    }
    if importance is not None:
        entry["importance"] = importance
    examples_np = []
    if example_entry is not None:
        from PIL import Image

        for item in example_entry["top"]:
            with Image.open(ctx.root / item["path"]) as im:
                examples_np.append(np.asarray(im.convert("RGB")))
    with atomic_dir(ctx.paths.visualizations / name) as tmp:
        if result.images is not None:
            for i, img in enumerate(result.images):
                (tmp / f"vis_{i}.png").write_bytes(_png_bytes(img))
                entry["vis"].append(feature_relpath(VISUALIZATIONS_DIR, feature, f"vis_{i}.png"))
        if neg is not None:
            neg_result, neg_act = neg
            entry["neg"] = []
            entry["neg_activation"] = neg_act
            entry["neg_flags"] = neg_result.flags
            for i, img in enumerate(neg_result.images if neg_result.images is not None else []):
                (tmp / f"neg_{i}.png").write_bytes(_png_bytes(img))
                entry["neg"].append(feature_relpath(VISUALIZATIONS_DIR, feature, f"neg_{i}.png"))
        vis = list(result.images) if result.images is not None else [None] * ctx.config.visualize.n_images
        cell = max(64, ctx.config.visualize.size)
        card = feature_card(vis, examples_np, card_caption(feature, importance), cell=cell)
        (tmp / CARD_PNG).write_bytes(_png_bytes(card))
        write_feature_entry(tmp, entry)


def _summarise(entries: dict[int, dict]) -> dict:
    ratios = [e["quality"]["ratio"] for e in entries.values() if e["quality"].get("ratio") is not None]
    flagged = {
        flag: [int(f) for f, e in entries.items() if flag in e.get("flags", [])]
        for flag in ("weak", "nonfinite", "retried_lr")
    }
    return {
        "n_features": len(entries),
        "n_ok": sum(bool(e["quality"]["ok"]) for e in entries.values()),
        "n_weak": len(flagged["weak"]),
        "n_nonfinite": len(flagged["nonfinite"]),
        "n_retried_lr": len(flagged["retried_lr"]),
        "median_ratio": float(np.median(ratios)) if ratios else None,
        "min_ratio": float(np.min(ratios)) if ratios else None,
        "weak_features": flagged["weak"],
        "nonfinite_features": flagged["nonfinite"],
    }


def _summary_line(s: dict) -> str:
    med = "n/a" if s["median_ratio"] is None else f"{s['median_ratio']:.2f}"
    line = (
        f"visualize quality: {s['n_ok']}/{s['n_features']} features' best visualisation beats their strongest "
        f"dataset example (median ratio {med}); weak {s['n_weak']}, non-finite {s['n_nonfinite']}, "
        f"retried with smaller lr {s['n_retried_lr']}"
    )
    if s["weak_features"]:
        line += f"; weak: {', '.join(map(str, s['weak_features'][:20]))}" + (" ..." if s["n_weak"] > 20 else "")
    return line


def _write_quality_csv(path: Path, entries: dict[int, dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["feature_ind", "vis_max", "example_max", "ratio", "ok", "n_above", "flags"])
    for f, e in entries.items():
        q = e["quality"]
        w.writerow(
            [
                f,
                q["vis_max"],
                q["example_max"],
                q["ratio"],
                int(q["ok"]),
                q.get("n_above", ""),
                ";".join(e.get("flags", [])),
            ]
        )
    write_bytes(path, buf.getvalue().encode())


def _write_contact_sheet(ctx: RunContext, path: Path, entries: dict[int, dict], title: str) -> None:
    from PIL import Image

    from autointerp.vis.compose import contact_sheet

    tiles = []
    for f, e in entries.items():
        image = None
        if e["vis"]:
            with Image.open(ctx.root / e["vis"][0]) as im:
                image = np.asarray(im.convert("RGB"))
        tiles.append((str(f), image, bool(e["quality"]["ok"])))
    sheet = contact_sheet(tiles, f"{title}: feature visualisations ({len(tiles)} features, red label = weak)")
    write_bytes(path, _png_bytes(sheet))
