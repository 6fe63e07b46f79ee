"""Rater validity on a real network: do the raters tell directions the network ties to meaning from random ones?

Ground truth without people (issue 25, item 8). On the Coral MobileNetV2 (layer ``Conv_1``, 1280 channels, read
by the classifier through a global average pool) and its 1,000 real ImageNet images (64 px upscaled to 224, as
in the study), the benchmark builds *directions* over the layer's channels (:mod:`autointerp.directions`):

* **known-interpretable** — each class's classifier weight vector (``--n-class`` classes drawn at random) and
  one direction per superclass (dogs, birds, road vehicles, ... from ImageNet class-index ranges: the mean of the
  member classes' weight vectors);
* **known-uninterpretable** — ``--n-random`` Gaussian random directions, and ``--n-random`` random 8-image sets
  (features whose scores are random numbers).

Every feature's top-``k`` images (by the projected activation, spatially reduced with ``--reduce``) are written
into a run folder (``examples/index.json`` + ``activations/scores.npy``), and every rater that can run from
examples, activations, the dataset and the embedder is run on it through the project's rater registry
(``create_rater`` + ``RatingContext``): the benchmark measures the real raters. Raters that need visualisations
(``clip_vis_match``, ``fid``, ``auto_I``, ``clip_label``) are skipped, with the reason printed: no
visualisations are rendered for directions here.

Reported per rater: AUROC at separating interpretable from uninterpretable features (on ``I``, bootstrap 95 %
CI) for three contrasts, and the Spearman correlation of ``I`` with the superclass purity of the top-``k``
images. Printed beside: the plain baseline (mean pairwise cosine of the embeddings of the top-``k``) and the
candidate coherence statistics of :mod:`raters._coherence_stats`, on the same embeddings.

``--world demo`` runs the same benchmark on the embedded demo world (:mod:`autointerp.demo`), where the answer
key is planted: positives are concept directions (for each concept value, the difference between the mean
pooled activation of images with and without it), negatives are Gaussian random directions and random sets;
purity is the demo's concept purity.

    python benchmarks/rater_validity.py [--world coral|demo] [--n-class 200] [--n-random 200]
        [--raters clip_coherence,mis,random] [--embed-size 64|224] [--reduce mean|max] [--k 8] [--seed 0]
        [--out DIR] [--option mis.n_tasks=20]

Last line: ``auroc_<rater>: X`` for every rater run (known-interpretable directions vs Gaussian random
directions), then ``n_pos: N n_neg: M``. Results: ``OUT/results.json`` and ``OUT/rating-*/features.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from autointerp.embedders.base import Embedder  # noqa: E402

#: what the rating run can give a rater (no visualisations, importance or human answers for directions)
AVAILABLE_NEEDS = frozenset({"examples", "bottom_examples", "activations", "dataset", "embedder"})
#: scales of raters that are answer keys or people, not automatic raters (left out of the default selection)
REFERENCE_SCALES = frozenset({"answer_key", "human"})


def _r(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


#: Superclasses as 0-based ImageNet class indices in sorted-WordNet-id order (Coral output = index + 1).
#: Classes outside every superclass count as a group of their own for purity.
# fmt: off
SUPERCLASSES: dict[str, list[int]] = {
    "fish": _r(0, 6) + _r(389, 397),
    "birds": _r(7, 24) + _r(80, 100) + _r(127, 146),
    "amphibians": _r(25, 32),
    "turtles_lizards_crocodiles": _r(33, 51),
    "snakes": _r(52, 68),
    "spiders_and_kin": _r(69, 79),
    "sea_invertebrates_and_molluscs": _r(107, 126) + _r(327, 329),
    "whales_and_seals": _r(147, 150),
    "dogs": _r(151, 268),
    "wolves_and_foxes": _r(269, 280),
    "cats": _r(281, 293),
    "bears": _r(294, 297),
    "insects": _r(300, 326),
    "rabbits_and_rodents": _r(330, 338),
    "hoofed_mammals": _r(339, 355),
    "weasels_and_kin": _r(356, 362),
    "primates": _r(365, 384),
    "elephants": [101, 385, 386],
    "road_vehicles": [407, 436, 468, 511, 555, 569, 609, 627, 654, 656, 661, 675, 717, 734, 751, 757, 779, 817, 864,
                      867, 874],
    "boats": [403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 914],
    "trains": [466, 547, 565, 705, 820, 829],
    "aircraft": [404, 405, 895, 908],
    "musical_instruments": [401, 402, 420, 432, 486, 494, 513, 541, 546, 558, 566, 577, 579, 593, 594, 641, 642,
                            683, 684, 687, 699, 776, 822, 875, 881, 889],
    "clothing": [399, 400, 411, 445, 452, 457, 459, 474, 501, 568, 578, 601, 608, 610, 614, 617, 638, 639, 652, 655,
                 689, 697, 735, 775, 834, 841, 842, 869, 887, 906],
    "sports_balls": [429, 430, 522, 574, 722, 746, 768, 805, 852, 890],
    "buildings": [410, 425, 437, 442, 449, 483, 497, 500, 538, 580, 663, 668, 682, 698, 727, 743, 832, 853, 858,
                  873, 900, 915],
    "shops": [415, 424, 454, 467, 509, 582, 762, 788, 860, 865],
    "dishes_and_drinks": _r(924, 935) + _r(959, 969),
    "fruit_and_vegetables": _r(936, 946) + _r(948, 957),
    "landscapes": [970, 972, 973, 974, 975, 976, 977, 978, 979, 980],
    "fungi": [947, *_r(991, 997)],
}
# fmt: on


# --------------------------------------------------------------------------------------------------
# Metrics (pure functions)
# --------------------------------------------------------------------------------------------------
def _comparisons(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(n_pos, n_neg) matrix: 1 where the positive scores higher, 0.5 on ties, 0 below."""
    p, n = np.asarray(pos, np.float64)[:, None], np.asarray(neg, np.float64)[None, :]
    return (p > n).astype(np.float64) + 0.5 * (p == n)


def auroc(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of scores separating ``pos`` from ``neg`` (ties count half; NaNs dropped)."""
    p, n = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    if not len(p) or not len(n):
        return float("nan")
    return float(_comparisons(p, n).mean())


def bootstrap_auroc(
    pos: Sequence[float] | np.ndarray,
    neg: Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of :func:`auroc`, resampling positives and negatives separately (stratified)."""
    p, n = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    if not len(p) or not len(n) or n_boot < 1:
        return float("nan"), float("nan")
    cmp = _comparisons(p, n)
    rng = np.random.default_rng([int(seed), 0x726F63])
    cp = rng.multinomial(len(p), np.full(len(p), 1 / len(p)), size=n_boot).astype(np.float64)
    cn = rng.multinomial(len(n), np.full(len(n), 1 / len(n)), size=n_boot).astype(np.float64)
    values = np.einsum("bi,ij,bj->b", cp, cmp, cn) / (len(p) * len(n))
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def bootstrap_auroc_difference(
    a: np.ndarray, b: np.ndarray, is_pos: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """AUROC(a) − AUROC(b) of two statistics on the same features, with a paired, stratified percentile bootstrap
    CI (the same resampled features for both); features where either is NaN are left out."""
    a, b, is_pos = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(is_pos, bool)
    ok = np.isfinite(a) & np.isfinite(b)
    p, n = ok & is_pos, ok & ~is_pos
    if not p.any() or not n.any():
        return float("nan"), float("nan"), float("nan")
    diff = _comparisons(a[p], a[n]) - _comparisons(b[p], b[n])
    point = float(diff.mean())
    if n_boot < 1:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng([int(seed), 0x646966])
    n_p, n_n = int(p.sum()), int(n.sum())
    cp = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=n_boot).astype(np.float64)
    cn = rng.multinomial(n_n, np.full(n_n, 1 / n_n), size=n_boot).astype(np.float64)
    values = np.einsum("bi,ij,bj->b", cp, diff, cn) / (n_p * n_n)
    alpha = (1 - level) / 2
    return point, float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman correlation over the pairs where both are finite (NaN when either is constant or n < 3)."""
    from scipy import stats

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[ok], y[ok]).statistic)


def modal_share(groups: Sequence[int] | np.ndarray) -> float:
    """Share of the items that fall in the most common group."""
    g = np.asarray(groups).reshape(-1)
    if not len(g):
        return float("nan")
    return float(np.unique(g, return_counts=True)[1].max() / len(g))


def superclass_of_classes(n_classes: int = 1000) -> np.ndarray:
    """Group id per class index: the superclass's position in :data:`SUPERCLASSES`, or ``1000 + class`` for a
    class outside every superclass (its own group)."""
    out = 1000 + np.arange(n_classes, dtype=np.int64)
    for g, members in enumerate(SUPERCLASSES.values()):
        for c in members:
            if c < n_classes:
                out[c] = g
    return out


# --------------------------------------------------------------------------------------------------
# Worlds: a base run with cached activations, the directions, and the answer key
# --------------------------------------------------------------------------------------------------
@dataclass
class Feature:
    """One feature of the rating run: kind (``class``, ``superclass``, ``concept``, ``gaussian``,
    ``random_set``), name, and the group (coral) or concept value (demo) it stands for, if any."""

    kind: str
    name: str
    target: Any = None


@dataclass
class World:
    """What the benchmark needs from a world: the base run, directions + features, the rating run's config and
    dataset index, and the purity of a set of rows."""

    name: str
    base_root: Path
    layer: str
    reduce: str
    vectors: np.ndarray  # (F_dir, C) directions (positives, then Gaussian)
    features: list[Feature]  # directions first (same order as vectors), then random sets
    rating_config: Any  # RunConfig of the rating run
    dataset_index: np.ndarray  # (N,) row -> index in the rating run's dataset
    purity: Callable[[np.ndarray], float]  # rows -> purity of their labels/concepts
    target_share: Callable[[Feature, np.ndarray], float]  # feature, rows -> share showing its target (NaN: none)
    notes: dict[str, Any] = field(default_factory=dict)
    image_files: list[str] | None = None  # per rating-dataset index: the image file to use as example (or None)


def _base_run(cfg: Any, root: Path) -> Any:
    """Run (or reuse) the activation stage of ``cfg`` in ``root``; returns the RunContext."""
    from autointerp.runfolder import RunContext
    from autointerp.stages.activations import run_activations

    ctx = RunContext.create(cfg, root)
    meta_path = ctx.paths.activations / "meta.json"
    stale = False
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        stale = (meta.get("reduce"), meta.get("layer"), meta.get("n_images")) != (
            cfg.activations.reduce,
            cfg.layer,
            len(ctx.dataset),
        )
    run_activations(ctx, overwrite=stale)
    return ctx


def classifier_matrix(model: Any, layer: str) -> np.ndarray:
    """(num_outputs, C) weights of the linear classifier that reads the pooled ``layer`` (1×1 conv or linear)."""
    tail = model.tail(layer)
    channels = model.layers()[layer]
    found = []
    for name, p in tail.named_parameters():
        w = p.detach().cpu().numpy()
        if name.endswith("weight") and w.ndim in (2, 4) and w.shape[0] == model.num_outputs and w.shape[1] == channels:
            if w.ndim == 4 and w.shape[2:] != (1, 1):
                continue
            found.append(w.reshape(w.shape[0], channels))
    if len(found) != 1:
        from autointerp.errors import UserError

        raise UserError(f"layer {layer!r}: expected one linear classifier reading it in the tail, found {len(found)}")
    return found[0].astype(np.float64)


def _shared_dir(path: str | None) -> Path:
    from autointerp.errors import UserError

    shared = Path(path or os.environ.get("AUTOINTERP_SHARED") or REPO.parent / "shared")
    if not (shared / "models/coral/mobilenet_v2_1.0_224_quant.tflite").exists():
        raise UserError(
            f"{shared}: the shared data folder (Coral models, ImageNet sample) is missing; "
            "pass --shared DIR or use --world demo"
        )
    return shared


def build_coral_world(args: argparse.Namespace, out: Path) -> World:
    """The Coral MobileNetV2 world (see the module docstring)."""
    from autointerp.config import load_config
    from autointerp.data.imagefolder import ImageFolderDataset

    shared = _shared_dir(args.shared)
    coral = shared / "models/coral"
    overrides = [
        f"model.weights={coral / 'mobilenet_v2_1.0_224_quant.tflite'}",
        f"dataset.path={shared / 'data/imagenet_sample_64.npz'}",
        f"label_mapping.map_clsloc={shared / 'reference/imagenet/map_clsloc.txt'}",
        f"rate.embedder.path={coral / 'mobilenet_v1_1.0_224_quant_embedding_extractor.tflite'}",
        f"activations.reduce={args.reduce}",
        f"seed={args.seed}",
    ]
    if args.n_images:
        overrides.append(f"dataset.max_images={args.n_images}")
    cfg = load_config(REPO / "configs/mobilenetv2_coral.yaml", overrides)
    ctx = _base_run(cfg, out / f"base-coral-{args.n_images or 'all'}")
    layer = cfg.layer
    labels = np.load(ctx.paths.activations / "labels.npy")  # model output index of each row's true class
    rows_ds = np.load(ctx.paths.activations / "dataset_index.npy")
    model = ctx.model
    weights = classifier_matrix(model, layer)
    valid = np.flatnonzero(model.valid_outputs.cpu().numpy())
    offset = int(cfg.label_mapping.offset)
    names = [line.strip().split(",")[0] for line in (coral / "imagenet_labels.txt").read_text().splitlines()]

    rng = np.random.default_rng([args.seed, 0x636C73])
    n_class = min(args.n_class, len(valid))
    classes = np.sort(rng.choice(valid, size=n_class, replace=False))
    group_of = superclass_of_classes(len(valid))
    vectors = [weights[o] for o in classes]
    features = [
        Feature("class", f"class:{names[o] if o < len(names) else o}", int(group_of[o - offset])) for o in classes
    ]
    for g, (sname, members) in enumerate(SUPERCLASSES.items()):
        outs = [c + offset for c in members if c + offset < len(weights)]
        vectors.append(weights[outs].mean(axis=0))
        features.append(Feature("superclass", f"superclass:{sname}", g))
    gauss = np.random.default_rng([args.seed, 0x67617573]).standard_normal((args.n_random, weights.shape[1]))
    vectors += list(gauss)
    features += [Feature("gaussian", f"gaussian:{i}") for i in range(args.n_random)]
    features += [Feature("random_set", f"random_set:{i}") for i in range(args.n_random)]
    row_groups = group_of[np.clip(labels - offset, 0, len(group_of) - 1)]

    rating_cfg = cfg.model_copy(deep=True)
    dataset_index = rows_ds.astype(np.int64)
    image_files = None
    if args.embed_size == 224:
        folder = shared / "data/imagenet_sample_224"
        big = ImageFolderDataset(folder)
        wnids = np.load(shared / "data/imagenet_sample_64.npz")["wnids"]
        by_wnid: dict[str, list[int]] = {}
        for i, lab in enumerate(big.labels):
            by_wnid.setdefault(big.class_keys[int(lab)], []).append(i)
        pairs = [by_wnid.get(str(wnids[int(d)]), []) for d in rows_ds]
        if any(len(p) != 1 for p in pairs):
            from autointerp.errors import DataError

            raise DataError(f"{folder}: cannot pair the 64-px images with the 224-px copies one to one by WordNet id")
        dataset_index = np.array([p[0] for p in pairs], dtype=np.int64)
        rating_cfg.dataset = rating_cfg.dataset.model_copy(
            update={"type": "imagefolder", "path": str(folder), "max_images": None}
        )
        image_files = [str(f.resolve()) for f in big.files]

    def purity(rows: np.ndarray) -> float:
        return modal_share(row_groups[rows])

    def target_share(feat: Feature, rows: np.ndarray) -> float:
        if feat.target is None or feat.target >= len(SUPERCLASSES):
            return float("nan")
        return float(np.mean(row_groups[rows] == feat.target))

    return World(
        "coral",
        ctx.root,
        layer,
        args.reduce,
        np.asarray(vectors),
        features,
        rating_cfg,
        dataset_index,
        purity,
        target_share,
        notes={"model": model.name, "classes": [int(c) for c in classes]},
        image_files=image_files,
    )


def build_demo_world(args: argparse.Namespace, out: Path) -> World:
    """The demo world: concept directions (planted answer key) vs Gaussian directions and random sets."""
    from autointerp.cli.core import DEMO_CONFIG
    from autointerp.config import load_config
    from autointerp.demo import concept_purity
    from autointerp.directions import direction_scores

    if args.embed_size != 64:
        from autointerp.errors import UserError

        raise UserError("--embed-size 224 exists only for the coral world (the demo images are 64 px)")
    n_images = args.n_images or 2000
    overrides = [
        f"dataset.options.n_images={n_images}",
        f"activations.reduce={args.reduce}",
        f"seed={args.seed}",
        f"model.pretrained={'false' if args.demo_untrained else 'true'}",
    ]
    cfg = load_config(DEMO_CONFIG, overrides)
    tag = "untrained" if args.demo_untrained else "trained"
    ctx = _base_run(cfg, out / f"base-demo-{tag}-{n_images}")
    rows_ds = np.load(ctx.paths.activations / "dataset_index.npy")
    acts = np.load(ctx.paths.activations / "acts.npy", mmap_mode="r")
    channels = acts.shape[1]
    pooled = direction_scores(acts, np.eye(channels), "mean").astype(np.float64)  # (N, C) spatial means
    concepts = {k: np.asarray(v)[rows_ds] for k, v in ctx.dataset.concepts.items()}
    vectors, features = [], []
    for cname, column in concepts.items():
        for value in sorted(set(column.tolist())):
            mask = column == value
            if mask.all() or not mask.any():
                continue
            vectors.append(pooled[mask].mean(axis=0) - pooled[~mask].mean(axis=0))
            features.append(Feature("concept", f"concept:{cname}={value}", (cname, value)))
    if args.n_class < len(features):
        keep = np.sort(np.random.default_rng([args.seed, 0x636F6E]).choice(len(features), args.n_class, replace=False))
        vectors, features = [vectors[i] for i in keep], [features[i] for i in keep]
    gauss = np.random.default_rng([args.seed, 0x67617573]).standard_normal((args.n_random, channels))
    vectors += list(gauss)
    features += [Feature("gaussian", f"gaussian:{i}") for i in range(args.n_random)]
    features += [Feature("random_set", f"random_set:{i}") for i in range(args.n_random)]

    def purity(rows: np.ndarray) -> float:
        return float(concept_purity(concepts, rows))

    def target_share(feat: Feature, rows: np.ndarray) -> float:
        if feat.target is None:
            return float("nan")
        cname, value = feat.target
        return float(np.mean(concepts[cname][rows] == value))

    return World(
        "demo",
        ctx.root,
        cfg.layer,
        args.reduce,
        np.asarray(vectors),
        features,
        cfg.model_copy(deep=True),
        rows_ds.astype(np.int64),
        purity,
        target_share,
        notes={"model": ctx.model.name},
    )


# --------------------------------------------------------------------------------------------------
# The rating run folder
# --------------------------------------------------------------------------------------------------
def feature_scores(world: World, seed: int, chunk: int = 50) -> np.ndarray:
    """(N, F) float32: direction scores from the base run's cached activations, then random-set columns."""
    from autointerp.directions import Directions, direction_scores

    acts = np.load(world.base_root / "activations" / "acts.npy", mmap_mode="r")
    dirs = Directions(world.vectors, [f.name for f in world.features[: len(world.vectors)]], source="directions")
    dirs.check_width(acts.shape[1], world.layer)
    scores = direction_scores(acts, dirs, world.reduce, chunk, progress=f"direction scores {world.layer}")
    n_sets = len(world.features) - len(world.vectors)
    random_cols = np.random.default_rng([seed, 0x736574]).random((acts.shape[0], n_sets)).astype(np.float32)
    return np.concatenate([scores, random_cols], axis=1)


def write_rating_run(root: Path, world: World, scores: np.ndarray, k: int, seed: int) -> Any:
    """Write the rating run folder: config, activations (scores, dataset index), examples (top/bottom ``k``).

    Example images are one file per dataset image (``examples/images/NNNNN.png``, lossless, so an example and
    the same dataset image share one embedding), or the dataset's own file when ``world.image_files`` is set.
    The embedding cache ``ratings/cache`` survives reruns; old ratings are removed.
    """
    from PIL import Image

    from autointerp.atomic import save_npy, write_json, write_text
    from autointerp.config import dump_config
    from autointerp.data import load_dataset
    from autointerp.directions import top_k
    from autointerp.runfolder import RunContext

    for sub in ("activations", "examples"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for old in (root / "ratings").glob("*.csv") if (root / "ratings").exists() else []:
        old.unlink()
    cfg = world.rating_config.model_copy(update={"output_dir": str(root), "seed": seed})
    write_text(root / "config.yaml", dump_config(cfg))
    act = root / "activations"
    n, f = scores.shape
    save_npy(act / "scores.npy", scores.astype(np.float32))
    save_npy(act / "dataset_index.npy", world.dataset_index)
    top_idx, top_val = top_k(scores, k, seed)
    bot_idx, bot_val = top_k(scores, k, seed, bottom=True)
    np.savez(act / "topk.npz", top_idx=top_idx, top_val=top_val, bottom_idx=bot_idx, bottom_val=bot_val)
    write_json(
        act / "meta.json",
        {
            "model": world.notes.get("model"),
            "layer": f"{world.layer} (directions)",
            "n_images": int(n),
            "channels": int(f),
            "reduce": world.reduce,
            "top_k": k,
            "bottom_k": k,
            "directions": len(world.vectors),
            "kinds": sorted({feat.kind for feat in world.features}),
        },
    )
    dataset = load_dataset(cfg.dataset)
    written: dict[int, str] = {}

    def path_of(row: int) -> str:
        d = int(world.dataset_index[row])
        if d not in written:
            if world.image_files is not None:
                written[d] = world.image_files[d]
            else:
                rel = f"examples/images/{d:05d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.asarray(dataset.image(d))).save(root / rel, compress_level=1)
                written[d] = rel
        return written[d]

    index: dict[str, Any] = {}
    for j in range(f):
        index[str(j)] = {
            which: [
                {"path": path_of(int(r)), "dataset_index": int(world.dataset_index[int(r)]), "activation": float(v)}
                for r, v in zip(idx[j], val[j], strict=True)
            ]
            for which, idx, val in (("top", top_idx, top_val), ("bottom", bot_idx, bot_val))
        }
    write_json(
        root / "examples" / "index.json",
        {
            "settings": {"n_examples": k, "bottom_examples": True, "source": "benchmarks/rater_validity.py"},
            "features": index,
        },
    )
    return RunContext(root, cfg), top_idx


def select_raters(requested: str | None) -> tuple[list[str], dict[str, str]]:
    """Raters to run (``requested`` comma list, or every registered rater that can run here) and the skipped
    ones with the reason."""
    from autointerp.rating import RATERS

    skipped: dict[str, str] = {}
    names = RATERS.names()
    if requested:
        chosen = [n.strip() for n in requested.split(",") if n.strip()]
        for n in chosen:
            RATERS.get(n)  # unknown → one-line error listing the valid names
        return chosen, skipped
    chosen = []
    for n in names:
        cls = RATERS.get(n)
        missing = sorted(set(cls.needs) - AVAILABLE_NEEDS)
        if missing:
            why = {
                "visualizations": "no visualisations are rendered for directions",
                "human": "no human answers for directions",
                "importance": "no importance is computed for directions",
            }
            skipped[n] = f"needs {', '.join(missing)} ({'; '.join(why.get(m, m) for m in missing)})"
        elif getattr(cls, "scale", None) in REFERENCE_SCALES:
            skipped[n] = f"a reference, not an automatic rater (scale {cls.scale!r}); name it in --raters to run it"
        else:
            chosen.append(n)
    return chosen, skipped


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``RATER.KEY=VALUE`` items (values parsed as YAML) → ``{rater: {key: value}}``."""
    import yaml

    from autointerp.errors import UserError

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        rater, dot, opt = key.partition(".")
        if not sep or not dot or not rater or not opt:
            raise UserError(f"--option {item!r}: expected RATER.KEY=VALUE, e.g. mis.n_tasks=20")
        out.setdefault(rater, {})[opt] = yaml.safe_load(raw)
    return out


class CentredEmbedder(Embedder):
    """Embeddings of another (cached) embedder minus a fixed mean vector: raters given this embedder compare
    images by cosine *after centring*. ``plain`` is an :class:`~autointerp.embedders.cache.EmbeddingCache`, so
    nothing is embedded twice."""

    kind = "centred"

    def __init__(self, plain: Any, mean: np.ndarray) -> None:
        import hashlib

        super().__init__()
        self.plain, self.mean = plain, np.asarray(mean, dtype=np.float32)
        self.batch_size = 256
        self.id = f"{plain.embedder.id}|centred:{hashlib.sha1(self.mean.tobytes()).hexdigest()[:12]}"

    def _embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.plain.embed(list(images)) - self.mean


def run_raters(
    rctx: Any,
    names: Sequence[str],
    options: dict[str, dict[str, Any]],
    seed: int,
    features: Sequence[int],
    folder: Path,
    suffix: str = "",
) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """Run each rater through the registry on ``rctx``; ``I`` oriented so that larger = more interpretable.

    Returns ``(I by name+suffix, seconds, failures)``; each table is also written to ``folder/<name><suffix>.csv``.
    """
    from autointerp.errors import UserError
    from autointerp.rating import create_rater

    ratings: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name in names:
        t = time.perf_counter()
        rater = create_rater(name, seed=seed, **options.get(name, {}))
        try:
            rctx.require(rater)
            table = rater.score(rctx, features)
        except UserError as exc:
            failed[name + suffix] = str(exc)
            continue
        values = np.asarray(table.I, dtype=np.float64)
        if not getattr(rater, "higher_is_better", True):
            values = -values
        ratings[name + suffix] = values
        table.to_csv(folder / f"{name}{suffix}.csv")
        seconds[name + suffix] = round(time.perf_counter() - t, 2)
        rctx.embedder.flush()
    return ratings, seconds, failed


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------
def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build the world, write the rating run, run the raters and the statistics; returns the results."""
    from autointerp.errors import UserError
    from autointerp.progress import Progress
    from autointerp.rating import RatingContext, create_rater
    from raters._coherence_stats import candidate_scores

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.k < 2:
        raise UserError(f"--k {args.k}: coherence needs at least 2 examples")
    names, skipped = select_raters(args.raters)
    options = parse_options(args.option or [])
    for name in names:  # unknown raters and options fail here, before any work
        create_rater(name, seed=args.seed, **options.get(name, {}))
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 1)
        clock[0] = now

    builders = {"coral": build_coral_world, "demo": build_demo_world}
    world = builders[args.world](args, out)
    lap("base run (model, activations)")
    scores = feature_scores(world, args.seed)
    lap("direction scores")
    root = out / f"rating-{args.world}-{args.embed_size}px-{args.reduce}"
    run, top_idx = write_rating_run(root, world, scores, args.k, args.seed)
    from autointerp.directions import Directions

    names_dir = [f.name for f in world.features[: len(world.vectors)]]
    Directions(world.vectors, names_dir, source="directions").save(root / "directions.npz")  # for reuse
    lap("rating run folder")
    rctx = RatingContext(run)
    features = list(range(len(world.features)))
    kinds = np.array([f.kind for f in world.features])

    # embed every image once (batched, with a progress bar); the raters then read the cache
    n_rows = len(world.dataset_index)
    with Progress(f"embedding images ({rctx.embedder.embedder.id})", n_rows, "images") as bar:
        for lo in range(0, n_rows, 256):
            rctx.embed_dataset(world.dataset_index[lo : lo + 256])
            bar.advance(min(256, n_rows - lo))
    rctx.prefetch(features, ("top", "bottom"), null_size=args.pool)
    lap("embeddings")

    ratings, seconds, failed = run_raters(rctx, names, options, args.seed, features, root / "ratings")
    lap("raters")
    if args.centred:
        # the raters that read embeddings, again on embeddings centred on the dataset's mean embedding
        from autointerp.rating import RATERS

        mean = rctx.embed_dataset(world.dataset_index).astype(np.float64).mean(axis=0)
        cctx = RatingContext(run, embedder=CentredEmbedder(rctx.embedder, mean))
        embedding_raters = [n for n in names if "embedder" in RATERS.get(n).needs]
        more, more_s, more_f = run_raters(
            cctx, embedding_raters, options, args.seed, features, root / "ratings", suffix="_centred"
        )
        ratings.update(more)
        seconds.update(more_s)
        failed.update(more_f)
        cctx.embedder.flush()
        lap("raters on centred embeddings")

    # the plain baseline and the candidate statistics, on the same embeddings and null pool
    sets = [rctx.embed_paths(rctx.example_paths(f)) for f in features]
    pool = rctx.null_embeddings(args.pool)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: threads only add overhead
        stats = candidate_scores(sets, pool)
    rctx.embedder.flush()
    lap("candidate statistics")
    purity = np.array([world.purity(top_idx[j]) for j in features])
    target = np.array([world.target_share(world.features[j], top_idx[j]) for j in features])

    pos_kinds = {"class", "superclass", "concept"}
    pos = np.isin(kinds, list(pos_kinds))
    gauss, sets_mask = kinds == "gaussian", kinds == "random_set"
    contrasts = {
        "interpretable_vs_gaussian": (pos, gauss),
        "interpretable_vs_random_sets": (pos, sets_mask),
        "class_vs_gaussian": (kinds == ("class" if args.world == "coral" else "concept"), gauss),
    }
    primary = pos | gauss

    def summarise(values: np.ndarray) -> dict[str, Any]:
        res: dict[str, Any] = {}
        for cname, (p, n) in contrasts.items():
            lo, hi = bootstrap_auroc(values[p], values[n], args.bootstrap, args.seed)
            res[cname] = {
                "auroc": auroc(values[p], values[n]),
                "ci": [lo, hi],
                "n_pos": int(np.isfinite(values[p]).sum()),
                "n_neg": int(np.isfinite(values[n]).sum()),
            }
        res["spearman_purity"] = spearman(values[primary], purity[primary])
        res["spearman_purity_positives"] = spearman(values[pos], purity[pos])
        res["spearman_target_share"] = spearman(values[pos], target[pos])
        return res

    # paired: each candidate minus the plain baseline, on the same features and resamples (primary contrast)
    prim_pos, prim_mask = pos[primary], primary
    differences = {
        name: dict(
            zip(
                ("difference", "low", "high"),
                bootstrap_auroc_difference(v[prim_mask], stats["raw"][prim_mask], prim_pos, args.bootstrap, args.seed),
                strict=True,
            )
        )
        for name, v in {**ratings, **stats}.items()
        if name != "raw"
    }
    results: dict[str, Any] = {
        "world": args.world,
        "layer": world.layer,
        "reduce": args.reduce,
        "embed_size": args.embed_size,
        "k": args.k,
        "seed": args.seed,
        "n_images": int(scores.shape[0]),
        "embedder": rctx.embedder.embedder.id,
        "counts": {kind: int((kinds == kind).sum()) for kind in dict.fromkeys(kinds.tolist())},
        "raters": {n: {**summarise(v), "seconds": seconds[n]} for n, v in ratings.items()},
        "baseline": summarise(stats["raw"]),
        "candidates": {n: summarise(v) for n, v in stats.items()},
        "minus_baseline": differences,
        "skipped": skipped,
        "failed": failed,
        "rating_run": str(root),
        "mean_purity": {kind: float(np.nanmean(purity[kinds == kind])) for kind in dict.fromkeys(kinds.tolist())},
    }
    _write_features_csv(root / "features.csv", world, purity, target, ratings, stats)
    lap("metrics")
    results["timings"] = timings
    results["seconds"] = round(time.perf_counter() - t0, 1)
    from autointerp.atomic import write_json

    write_json(out / "results.json", _jsonable(results))
    return results


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_features_csv(
    path: Path,
    world: World,
    purity: np.ndarray,
    target: np.ndarray,
    ratings: dict[str, np.ndarray],
    stats: dict[str, np.ndarray],
) -> None:
    from autointerp.atomic import atomic_path

    header = ["feature_ind", "kind", "name", "purity", "target_share", *ratings, *(f"stat_{s}" for s in stats)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for j, feat in enumerate(world.features):
            cells = [purity[j], target[j], *(v[j] for v in ratings.values()), *(v[j] for v in stats.values())]
            writer.writerow([j, feat.kind, feat.name, *("" if not np.isfinite(c) else f"{c:.6g}" for c in cells)])


def format_report(res: dict[str, Any]) -> str:
    """The human-readable table and the machine-readable last line."""
    counts = res["counts"]
    lines = [
        f"rater validity — world {res['world']}, layer {res['layer']}, {res['n_images']} images, reduce "
        f"{res['reduce']}, top-{res['k']}, embeddings at {res['embed_size']} px ({res['embedder']})",
        "features: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
    ]
    if res["skipped"]:
        lines.append("raters not run: " + "; ".join(f"{n} — {why}" for n, why in res["skipped"].items()))
    for n, why in res["failed"].items():
        lines.append(f"rater {n} failed: {why}")

    def ci(c: dict[str, Any]) -> str:
        lo, hi = c["ci"]
        return f"{c['auroc']:.3f} [{lo:.3f}, {hi:.3f}]"

    head = (
        f"{'statistic':<24}{'interp. vs gaussian':<24}{'interp. vs random sets':<24}{'class vs gaussian':<24}"
        f"{'rho purity':>11}{'rho pur.(+)':>12}{'rho own(+)':>11}"
    )
    lines += ["", head, "-" * len(head)]

    def row(label: str, r: dict[str, Any]) -> str:
        return (
            f"{label:<24}{ci(r['interpretable_vs_gaussian']):<24}{ci(r['interpretable_vs_random_sets']):<24}"
            f"{ci(r['class_vs_gaussian']):<24}{r['spearman_purity']:>11.3f}{r['spearman_purity_positives']:>12.3f}"
            f"{r['spearman_target_share']:>11.3f}"
        )

    for n, r in res["raters"].items():
        lines.append(row(n, r))
    lines.append(row("baseline: raw cosine", res["baseline"]))
    for n, r in res["candidates"].items():
        if n != "raw":
            lines.append(row(f"candidate: {n}", r))
    lines.append("")
    lines.append(
        "AUROC minus the baseline's (interpretable vs gaussian, paired bootstrap 95% CI): "
        + ", ".join(
            f"{n} {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" for n, d in res["minus_baseline"].items()
        )
    )
    lines.append(
        "columns: AUROC [bootstrap 95% CI]; Spearman of the score with the purity of the top-k over the "
        "interpretable + Gaussian features, over the interpretable ones, and with the share of the top-k in "
        "the feature's own superclass/concept (interpretable ones)"
    )
    lines.append("mean purity of the top-k: " + ", ".join(f"{k} {v:.3f}" for k, v in res["mean_purity"].items()))
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in res["timings"].items()) + f"; total {res['seconds']}")
    lines.append(f"run folder: {res['rating_run']}")
    primary = "interpretable_vs_gaussian"
    last = [f"auroc_{n}: {r[primary]['auroc']:.4f}" for n, r in res["raters"].items()]
    counts = res["baseline"][primary]
    last += [f"n_pos: {counts['n_pos']}", f"n_neg: {counts['n_neg']}"]
    lines.append(" ".join(last))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--world", choices=["coral", "demo"], default="coral")
    p.add_argument("--n-class", type=int, default=200, help="class directions (demo: at most this many concepts)")
    p.add_argument("--n-random", type=int, default=200, help="Gaussian random directions, and random image sets")
    p.add_argument(
        "--raters", default=None, help="comma list (default: every rater that can run without visualisations)"
    )
    p.add_argument(
        "--embed-size",
        type=int,
        choices=[64, 224],
        default=64,
        help="embed the 64-px images (upscaled by the embedder) or their 224-px copies",
    )
    p.add_argument(
        "--reduce",
        choices=["mean", "max"],
        default="mean",
        help="spatial reduce of the projection (mean = the classifier's global pool)",
    )
    p.add_argument("--k", type=int, default=8, help="top examples per feature")
    p.add_argument("--pool", type=int, default=256, help="random dataset images in the null pool")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUROC CIs")
    p.add_argument("--n-images", type=int, default=None, help="use the first N images (coral) / N images (demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder, kept (default: a temporary folder, removed)")
    p.add_argument("--shared", default=None, help="the shared data folder (default ../shared)")
    p.add_argument("--option", action="append", metavar="RATER.KEY=VALUE", help="a rater option (repeatable)")
    p.add_argument(
        "--centred",
        action="store_true",
        help="also run the raters on embeddings centred on the dataset's mean embedding",
    )
    p.add_argument("--demo-untrained", action="store_true", help="demo world: random-init CNN (no training)")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark from the command line; prints the report, returns the results."""
    from autointerp.errors import UserError

    args = build_parser().parse_args(argv)
    for flag in ("n_class", "n_random"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag.replace('_', '-')} must be at least 1", file=sys.stderr)
            raise SystemExit(2)
    keep = args.out is not None
    if not keep:
        args.out = tempfile.mkdtemp(prefix="rater_validity_")
    try:
        res = run_benchmark(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if not keep:
            shutil.rmtree(args.out, ignore_errors=True)
    print(format_report(res))
    return res


if __name__ == "__main__":
    main()
