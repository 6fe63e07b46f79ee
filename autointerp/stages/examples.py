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

from pathlib import Path

import numpy as np

from autointerp.atomic import atomic_dir
from autointerp.errors import DataError, UserError
from autointerp.features import select_features
from autointerp.progress import Progress
from autointerp.runfiles import (
    load_array,
    read_activation_meta,
    read_feature_entries,
    read_topk,
    write_feature_entry,
    write_index,
)
from autointerp.runfolder import EXAMPLES_DIR, META_JSON, RunContext, feature_dirname, feature_relpath
from autointerp.vis.selection import configured_example_features


def run_examples(ctx: RunContext, overwrite: bool = False, features: list[int] | None = None) -> Path:
    """Write the dataset examples of ``features`` (default: ``visualize.example_features``, i.e. every feature)."""
    from PIL import Image

    cfg = ctx.config.visualize
    meta = read_activation_meta(ctx.paths)
    topk = read_topk(ctx.paths)
    channels = int(meta["channels"])
    feats = select_features(features, configured_example_features(ctx), channels, ctx.config.layer)
    k = cfg.n_examples
    available = topk["top_idx"].shape[1]
    if k > available:
        raise UserError(
            f"config key 'visualize.n_examples' = {k} exceeds the cached top-k ({available}); "
            f"rerun activations with --set activations.top_k={k} --overwrite"
        )
    if cfg.crop_examples and meta.get("layer_kind") == "tokens":
        raise UserError(
            f"config key 'visualize.crop_examples' is true but layer {ctx.config.layer!r} is a transformer's token "
            "layer: every token sees the whole image, so there is no receptive field to crop; set it to false"
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
    pending = [f for f in feats if overwrite or not (out / feature_dirname(f) / META_JSON).exists()]
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
                                f"{ctx.paths.topk}: image index {index} is outside "
                                f"the dataset ({len(ds)} images); rerun activations with --overwrite"
                            )
                        image = np.asarray(ds.image(index))
                        item = {
                            "path": feature_relpath(EXAMPLES_DIR, f, f"{kind}_{r}.png"),
                            "dataset_index": index,
                            "activation": float(val[f, r]),
                        }
                        if crop is not None:
                            image, box, position = crop(image, index, f)
                            item["crop"] = list(box)
                            item["position"] = list(position)
                        Image.fromarray(image).save(tmp / f"{kind}_{r}.png")
                        entry[kind].append(item)
                write_feature_entry(tmp, entry)
            bar.advance()

    settings = {
        "n_examples": k,
        "bottom_examples": cfg.bottom_examples,
        "crop_examples": cfg.crop_examples,
        "reduce": meta.get("reduce", "max"),
    }
    if crop is not None:
        settings["receptive_field"] = list(crop.fraction)
    write_index(ctx.paths.examples_index, read_feature_entries(out), settings=settings)
    return out


class _Cropper:
    """Crops an example to the receptive field around the position where the feature is largest."""

    def __init__(self, ctx: RunContext, meta: dict) -> None:
        from autointerp.vis.receptive_field import receptive_field_fraction

        if not ctx.paths.acts.exists():
            raise DataError(f"{ctx.paths.acts} not found: visualize.crop_examples needs the cached activation maps")
        self.acts = load_array(ctx.paths.acts, mmap=True)
        rows = load_array(ctx.paths.dataset_index)
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
