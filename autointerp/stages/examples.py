"""Stage 3 — dataset examples: the most (and optionally least) activating images of every feature.

Every feature of the layer gets its examples by default (``visualize.example_features: all``), so raters
that need only examples score the whole layer even where only a subset is visualised.

Reads the activation cache (``RUN/activations/topk.npz``; ``top_idx`` are indices into the run's
dataset) and writes ``RUN/examples/NNNN/top_i.png`` (full images at native resolution, as in the
study, or crops of the receptive field around the maximal position with ``visualize.crop_examples``),
``bottom_i.png`` with ``visualize.bottom_examples``, and ``RUN/examples/index.json``::

    {"settings": {...}, "features": {"12": {"top": [{"path": "examples/0012/top_0.png",
      "dataset_index": 4711, "activation": 3.2}, ...], "bottom": [...]}}}

Resumable per feature: a feature folder appears complete (atomic rename) or not at all, and existing
folders are kept unless ``overwrite``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autointerp.atomic import atomic_dir, write_json
from autointerp.errors import DataError, UserError
from autointerp.features import select_features
from autointerp.progress import Progress
from autointerp.runfolder import RunContext, feature_dirname
from autointerp.stages.activations import load_meta
from autointerp.vis.selection import configured_example_features


def load_topk(ctx: RunContext) -> dict[str, np.ndarray]:
    """The arrays of ``RUN/activations/topk.npz``."""
    path = ctx.paths.activations / "topk.npz"
    if not path.exists():
        raise DataError(f"{path} not found: the activation cache is incomplete; rerun `autointerp activations`")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def read_feature_entries(folder: Path) -> dict[str, dict]:
    """``{feature: entry}`` from every complete feature folder (``NNNN/meta.json``) under ``folder``."""
    out: dict[int, dict] = {}
    if folder.exists():
        for meta in folder.glob("[0-9][0-9][0-9][0-9]*/meta.json"):
            try:
                out[int(meta.parent.name)] = json.loads(meta.read_text(encoding="utf-8"))
            except (ValueError, json.JSONDecodeError):
                continue  # not a feature folder, or litter from a crash: redone on the next run
    return {str(f): out[f] for f in sorted(out)}


def run_examples(ctx: RunContext, overwrite: bool = False, features: list[int] | None = None) -> Path:
    """Write the dataset examples of ``features`` (default: ``visualize.example_features``, i.e. every feature)."""
    from PIL import Image

    cfg = ctx.config.visualize
    meta = load_meta(ctx)
    topk = load_topk(ctx)
    channels = int(meta["channels"])
    feats = select_features(features, configured_example_features(ctx), channels, ctx.config.layer)
    k = cfg.n_examples
    available = topk["top_idx"].shape[1]
    if k > available:
        raise UserError(
            f"config key 'visualize.n_examples' = {k} exceeds the cached top-k ({available}); "
            f"rerun activations with --set activations.top_k={k} --overwrite"
        )
    kinds = [("top", topk["top_idx"], topk["top_val"])]
    if cfg.bottom_examples:
        if "bottom_idx" not in topk or topk["bottom_idx"].shape[1] < k:
            raise UserError(
                f"config key 'visualize.bottom_examples' needs {k} bottom images per feature in the "
                f"activation cache; rerun activations with --set activations.bottom_k={k} --overwrite"
            )
        kinds.append(("bottom", topk["bottom_idx"], topk["bottom_val"]))

    out = ctx.paths.examples
    pending = [f for f in feats if overwrite or not (out / feature_dirname(f) / "meta.json").exists()]
    ds = ctx.dataset if pending else None
    crop = _Cropper(ctx, meta) if (cfg.crop_examples and pending) else None
    with Progress("examples", len(pending), "features") as bar:
        for f in pending:
            name = feature_dirname(f)
            entry: dict[str, list] = {"top": [], "bottom": []}
            with atomic_dir(out / name) as tmp:
                for kind, idx, val in kinds:
                    for r in range(k):
                        index = int(idx[f, r])
                        if not 0 <= index < len(ds):
                            raise DataError(
                                f"{ctx.paths.activations / 'topk.npz'}: image index {index} is outside "
                                f"the dataset ({len(ds)} images); rerun activations with --overwrite"
                            )
                        image = np.asarray(ds.image(index))
                        item = {
                            "path": f"examples/{name}/{kind}_{r}.png",
                            "dataset_index": index,
                            "activation": float(val[f, r]),
                        }
                        if crop is not None:
                            image, box, position = crop(image, index, f)
                            item["crop"] = list(box)
                            item["position"] = list(position)
                        Image.fromarray(image).save(tmp / f"{kind}_{r}.png")
                        entry[kind].append(item)
                write_json(tmp / "meta.json", entry)
            bar.advance()

    settings = {
        "n_examples": k,
        "bottom_examples": cfg.bottom_examples,
        "crop_examples": cfg.crop_examples,
        "reduce": meta.get("reduce", "max"),
    }
    if crop is not None:
        settings["receptive_field"] = list(crop.fraction)
    write_json(out / "index.json", {"settings": settings, "features": read_feature_entries(out)})
    return out


class _Cropper:
    """Crops an example to the receptive field around the position where the feature is largest."""

    def __init__(self, ctx: RunContext, meta: dict) -> None:
        from autointerp.vis.receptive_field import receptive_field_fraction

        acts_path = ctx.paths.activations / "acts.npy"
        if not acts_path.exists():
            raise DataError(f"{acts_path} not found: visualize.crop_examples needs the cached activation maps")
        self.acts = np.load(acts_path, mmap_mode="r")
        rows = np.load(ctx.paths.activations / "dataset_index.npy")
        self.row_of = {int(d): r for r, d in enumerate(rows)}
        size = int(meta.get("image_size") or ctx.image_size())
        self.fraction = receptive_field_fraction(ctx.model.head(ctx.config.layer), size, device=ctx.device)

    def __call__(self, image: np.ndarray, index: int, feature: int):
        from autointerp.vis.receptive_field import crop_box, max_position

        act_map = np.asarray(self.acts[self.row_of[index], feature], dtype=np.float32)
        position = max_position(act_map)
        box = crop_box(position, act_map.shape, image.shape[:2], self.fraction)
        top, left, bottom, right = box
        return np.ascontiguousarray(image[top:bottom, left:right]), box, position
