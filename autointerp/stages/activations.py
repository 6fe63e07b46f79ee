"""Stage 1 — the activation pass: one streaming pass over the dataset, bounded memory.

Writes ``RUN/activations/`` (layout in docs/ARCHITECTURE.md): the layer activations themselves
(memory-mapped ``acts.npy``, float32 or float16) so importance needs no second pass through the
head, per-image channel scores (spatial max or mean), the dataset mean per channel (and per
position), top-k / bottom-k images per channel, true-class output indices and baseline accuracy.

The images are cut into shards of ``activations.shard_images``: the units of :mod:`autointerp.executor`
(this process, or Ray tasks with ``executor: ray``). Each shard returns its activations, scores, float64
sums and top-k hits; the driver writes them in shard order. Crash-safe and resumable: work goes to
``activations.partial/`` with a checkpoint after every shard; a rerun continues after the last one and
produces identical files (the same shards, summed in the same order). The finished folder appears by rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from autointerp.atomic import save_npy
from autointerp.errors import UserError
from autointerp.progress import Progress
from autointerp.runfiles import write_activation_meta
from autointerp.runfolder import (
    ACTS_NPY,
    DATASET_INDEX_NPY,
    LABELS_NPY,
    MEAN_NPY,
    MEAN_POSITION_NPY,
    SCORES_NPY,
    TOPK_NPZ,
    RunContext,
)


def _settings_key(ctx: RunContext) -> str:
    cfg = ctx.config
    blob = json.dumps(
        [
            cfg.model.model_dump(mode="json"),
            cfg.layer,
            cfg.dataset.model_dump(mode="json"),
            cfg.label_mapping.model_dump(mode="json"),
            cfg.activations.dtype,
            cfg.activations.reduce,
            cfg.activations.shard_images,
            ctx.image_size(),
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def topk_accuracy(logits, targets, valid, ks: list[int]) -> dict[str, int]:
    """Number of images whose target is among the top-k valid outputs, for each k."""
    masked = logits.masked_fill(~valid.to(logits.device), float("-inf"))
    kmax = min(max(ks), int(valid.sum()))
    top = masked.topk(kmax, dim=1).indices
    hit = top == targets.view(-1, 1).to(top.device)
    return {f"top{k}": int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


def run_activations(ctx: RunContext, overwrite: bool = False) -> Path:
    """Run (or resume, or skip) the activation pass; returns ``RUN/activations``."""
    import torch

    out_dir = ctx.paths.activations
    if ctx.paths.activations_meta.exists() and not overwrite:
        return out_dir
    cfg = ctx.config.activations
    model = ctx.unchecked_model  # this stage makes the cache the other stages check the model against
    fingerprint = ctx.model_fingerprint
    ds = ctx.dataset
    layer = ctx.config.layer
    n = len(ds)
    from autointerp.data.labels import model_targets

    targets = model_targets(ds, ctx.config.label_mapping, model.num_outputs, model.valid_outputs.cpu().numpy())
    for key, k in (("activations.top_k", cfg.top_k), ("activations.bottom_k", cfg.bottom_k)):
        if k > n:
            raise UserError(f"config key {key!r} = {k} is larger than the dataset ({n} images)")
    size = ctx.image_size()
    head = model.head(layer)
    tail = model.tail(layer)
    device = ctx.device
    try:  # one image through head and tail first: a size the network cannot take is a one-line error
        with torch.no_grad():
            probe = head(ds.batch([0], size).to(device))
            tail(probe)
    except RuntimeError as exc:
        raise UserError(
            f"config key 'dataset.image_size' = {size}: model {model.name!r} cannot run on {size}x{size} images "
            f"({str(exc).splitlines()[0]}); it was built for {model.input_size}x{model.input_size}"
        ) from None
    if probe.ndim != 4:
        raise UserError(f"layer {layer!r} gives a {probe.ndim}-D activation; expected (N, C, H, W)")
    _, c, h, w = probe.shape
    rows = model.scored_positions(layer)
    dtype = np.float16 if cfg.dtype == "float16" else np.float32

    partial = out_dir.with_name(out_dir.name + ".partial")
    key = _settings_key(ctx) + "-" + fingerprint  # a checkpoint made with other weights starts over
    state_file = partial / "checkpoint.npz"
    start = 0
    if overwrite and partial.exists():
        shutil.rmtree(partial)
    if state_file.exists():
        state = np.load(state_file)
        if str(state["key"]) == key:
            start = int(state["done"])
            sums, pos_sums = state["sums"], state["pos_sums"]
            hits = {k: int(v) for k, v in zip(cfg.accuracy_k, state["hits"], strict=True)}
        else:
            shutil.rmtree(partial)
    if start == 0:
        partial.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(partial / ACTS_NPY, mode="w+", dtype=dtype, shape=(n, c, h, w)).flush()
        np.lib.format.open_memmap(partial / SCORES_NPY, mode="w+", dtype=np.float32, shape=(n, c)).flush()
        sums = np.zeros(c, dtype=np.float64)
        pos_sums = np.zeros((c, h, w), dtype=np.float64)
        hits = {k: 0 for k in cfg.accuracy_k}
    maps = {name: np.load(partial / name, mmap_mode="r+") for name in (ACTS_NPY, SCORES_NPY)}

    def write(unit: tuple[int, int], shard: dict[str, np.ndarray]) -> None:
        """A finished shard into the memory maps, its sums onto the running ones (in shard order), then a
        checkpoint: a rerun continues after the last shard written."""
        nonlocal sums, pos_sums
        lo, hi = unit
        maps[ACTS_NPY][lo:hi] = shard["acts"]
        maps[SCORES_NPY][lo:hi] = shard["scores"]
        sums = sums + shard["sums"]
        pos_sums = pos_sums + shard["pos_sums"]
        for k, v in zip(cfg.accuracy_k, shard["hits"], strict=True):
            hits[k] += int(v)
        for array in maps.values():
            array.flush()
        if hi < n:
            _checkpoint(state_file, key, hi, sums, pos_sums, [hits[k] for k in cfg.accuracy_k])

    from autointerp import executor

    units = shards(start, n, cfg.shard_images)
    task = ActivationsTask(str(ctx.root), ctx.config, targets, dtype, local=ctx)
    workers, task.threads = executor.stage_workers(cfg.workers, len(units), "activations", ctx.config)
    with Progress(f"activations {layer}", n - start, "images") as bar:
        executor.run_units(ctx.config, task, units, write, bar.advance, workers=workers)
    scores = maps.pop(SCORES_NPY)
    maps.clear()  # closes the activations' memory map

    scores_arr = np.asarray(scores)
    order = np.argsort(-scores_arr, axis=0, kind="stable")  # (N, C): descending per channel
    top_idx = order[: cfg.top_k].T.copy()
    top_val = np.take_along_axis(scores_arr, order[: cfg.top_k], axis=0).T.copy()
    topk = {"top_idx": top_idx.astype(np.int64), "top_val": top_val.astype(np.float32)}
    if cfg.bottom_k:
        asc = np.argsort(scores_arr, axis=0, kind="stable")[: cfg.bottom_k]
        topk["bottom_idx"] = asc.T.astype(np.int64).copy()
        topk["bottom_val"] = np.take_along_axis(scores_arr, asc, axis=0).T.astype(np.float32).copy()
    del scores, scores_arr
    np.savez(partial / TOPK_NPZ, **topk)
    save_npy(partial / MEAN_NPY, (sums / (n * h * w)).astype(np.float32))
    save_npy(partial / MEAN_POSITION_NPY, (pos_sums / n).astype(np.float32))
    save_npy(partial / LABELS_NPY, targets.astype(np.int64))
    save_npy(partial / DATASET_INDEX_NPY, np.arange(n, dtype=np.int64))
    meta = {
        "model": model.name,
        "layer": layer,
        "n_images": n,
        "channels": int(c),
        "spatial": [int(h), int(w)],
        "layer_kind": model.layer_kind(layer),
        "scored_rows": list(rows.indices(h)[:2]),
        "dtype": cfg.dtype,
        "reduce": cfg.reduce,
        "image_size": size,
        "top_k": cfg.top_k,
        "bottom_k": cfg.bottom_k,
        "num_outputs": model.num_outputs,
        "accuracy": {f"top{k}": hits[k] / n for k in cfg.accuracy_k},
        "correct": {f"top{k}": hits[k] for k in cfg.accuracy_k},
        "settings_key": key,
        "model_fingerprint": fingerprint,
    }
    if state_file.exists():
        state_file.unlink()
    write_activation_meta(partial, meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(partial, out_dir)
    return out_dir


def _checkpoint(path: Path, key: str, done: int, sums: np.ndarray, pos_sums: np.ndarray, hits: list[int]) -> None:
    from autointerp.atomic import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, key=np.array(key), done=np.array(done), sums=sums, pos_sums=pos_sums, hits=np.array(hits))


def shards(start: int, n: int, size: int) -> list[tuple[int, int]]:
    """The image ranges ``[lo, hi)`` of the shards from ``start`` (a shard boundary) to ``n``."""
    return [(lo, min(lo + size, n)) for lo in range(start, n, size)]


class ActivationsTask:
    """Image shards of the activation pass as units of :mod:`autointerp.executor`: a unit is ``(lo, hi)``, its
    result the shard's activations (``dtype``), per-image scores, float64 sums over images (per channel, per
    position) and top-k hits. A worker elsewhere builds the model and dataset from the run folder and config."""

    label = "activations"
    threads = None

    def __init__(self, root: str, config, targets: np.ndarray, dtype, local: RunContext | None = None) -> None:
        self.root, self.config, self.targets, self.dtype = root, config, targets, dtype
        self.local = local
        self.cuda = config.device != "cpu"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "local": None}  # a worker elsewhere builds its own context

    def setup(self):
        ctx = self.local or RunContext(self.root, self.config)
        model = ctx.unchecked_model  # the cache these shards make is what later stages check the model against
        layer = self.config.layer
        self.cuda = ctx.device.type == "cuda"
        return model.head(layer), model.tail(layer), model.valid_outputs, model.scored_positions(layer), ctx

    def run(self, state, unit: tuple[int, int], progress) -> dict[str, np.ndarray]:
        import torch

        head, tail, valid, rows, ctx = state
        cfg = self.config.activations
        lo, hi = unit
        size, device = ctx.image_size(), ctx.device
        parts: dict[str, list[np.ndarray]] = {"acts": [], "scores": []}
        sums = pos_sums = None
        hits = dict.fromkeys(cfg.accuracy_k, 0)
        targets = torch.from_numpy(self.targets)
        with torch.no_grad():
            for b_lo in range(lo, hi, cfg.batch_size):
                b_hi = min(b_lo + cfg.batch_size, hi)
                a = head(ctx.dataset.batch(range(b_lo, b_hi), size).to(device))
                logits = tail(a)
                for name, v in topk_accuracy(logits, targets[b_lo:b_hi], valid, cfg.accuracy_k).items():
                    hits[int(name[3:])] += v
                a64 = a.double()
                batch_sums, batch_pos = a64.sum(dim=(0, 2, 3)).cpu().numpy(), a64.sum(dim=0).cpu().numpy()
                sums = batch_sums if sums is None else sums + batch_sums
                pos_sums = batch_pos if pos_sums is None else pos_sums + batch_pos
                scored = a[:, :, rows]  # a ViT's patch tokens (model.scored_positions); every position for a CNN
                red = scored.amax(dim=(2, 3)) if cfg.reduce == "max" else scored.mean(dim=(2, 3))
                parts["acts"].append(a.cpu().numpy().astype(self.dtype))
                parts["scores"].append(red.float().cpu().numpy())
                progress(b_hi - b_lo)
        return {
            "acts": np.concatenate(parts["acts"]),
            "scores": np.concatenate(parts["scores"]),
            "sums": sums,
            "pos_sums": pos_sums,
            "hits": np.array([hits[k] for k in cfg.accuracy_k], dtype=np.int64),
        }

    def weight(self, unit: tuple[int, int]) -> int:
        return unit[1] - unit[0]

    def describe(self, state) -> dict:
        return {}
