"""The shared rater test harness and a tiny planted run folder.

:func:`make_world` writes a real run folder (examples/visualisation PNGs, index files, activation
scores, importance) for a small in-memory dataset of coloured, striped images with known
concepts. Feature ``f`` responds to concept ``f % 6`` with a planted *purity*: feature 0 is
perfectly coherent (all 8 examples and all 4 visualisations show its concept), the last ones are
almost pure noise. Every useful rater must rank features by that purity better than chance.

:func:`check_rater` is the one harness every rater passes: metadata, output shape, determinism,
batch invariance, CSV round trip and (optionally) a planted feature ranked first.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from autointerp.config import RunConfig
from autointerp.data.base import ImageDataset
from autointerp.rating import NEEDS, RATERS, RatingContext, ScoreTable, create_rater
from autointerp.runfolder import RunContext

COLOURS = np.array(
    [[220, 30, 30], [30, 170, 40], [30, 60, 220], [240, 220, 30], [220, 40, 200], [30, 210, 220]], dtype=np.float32
)
SIZE = 32


def concept_image(concept: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Stripes of concept colour ``concept`` on grey, with a random orientation, phase and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(5, 9)
    phase = rng.uniform(0, period)
    mask = (((np.cos(theta) * xx + np.sin(theta) * yy + phase) % period) < period / 2).astype(np.float32)
    img = mask[..., None] * COLOURS[concept % len(COLOURS)] + (1 - mask[..., None]) * 110.0
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def noise_image(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """Smooth-ish random colour noise."""
    small = rng.uniform(0, 255, (size // 4, size // 4, 3))
    img = np.kron(small, np.ones((4, 4, 1))) + rng.normal(0, 30, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


class ConceptDataset(ImageDataset):
    """In-memory dataset: image i shows concept ``concepts['colour'][i]``."""

    name = "planted"

    def __init__(self, n: int = 240, seed: int = 0) -> None:
        rng = np.random.default_rng([seed, 1])
        self.concept = np.arange(n) % len(COLOURS)
        self._images = [concept_image(int(c), rng) for c in self.concept]
        self.labels = self.concept.astype(np.int64)
        self.concepts = {"colour": self.concept.copy()}

    def __len__(self) -> int:
        return len(self._images)

    def image(self, index: int) -> np.ndarray:
        return self._images[int(index)]


@dataclass
class World:
    """A planted run folder and what is known about it."""

    root: Path
    run: RunContext
    dataset: ImageDataset
    features: list[int]
    purity: np.ndarray  # fraction of each feature's top examples that show its concept
    scores: np.ndarray

    def context(self, **kwargs: Any) -> RatingContext:
        """A fresh rating context (new in-memory caches) on the world."""
        kwargs.setdefault("dataset", self.dataset)
        return RatingContext(self.run, **kwargs)


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def make_world(
    root: Path,
    n_features: int = 12,
    n_images: int = 240,
    seed: int = 0,
    k: int = 8,
    n_vis: int = 4,
    bottom: bool = True,
    config: dict[str, Any] | None = None,
    dataset: ImageDataset | None = None,
    match: np.ndarray | None = None,
) -> World:
    """Write a planted run folder into ``root`` (see the module docstring).

    ``dataset`` + ``match`` (an (N, n_features) bool array: image shows feature f's concept) plant
    the features on another image world; visualisations then blend a concept image of the dataset
    (not among the examples) with noise.
    """
    rng = np.random.default_rng([seed, 2])
    mix = np.linspace(1.0, 0.0, n_features)  # feature 0: pure concept; last: pure noise
    if dataset is None:
        ds: ImageDataset = ConceptDataset(n_images, seed)
        own = np.arange(n_features) % len(COLOURS)
        match = ds.concept[:, None] == own[None, :]
    else:
        ds, n_images = dataset, len(dataset)
        assert match is not None and match.shape == (n_images, n_features)
    # background activity, plus a concept preference that fades with the planted purity
    scores = 0.5 * rng.random((n_images, n_features)) + 0.4 * mix * match
    for f in range(n_features):  # the top k: round(mix * k) images of the concept, the rest of others
        n_pure = int(round(mix[f] * k))
        pure = rng.choice(np.flatnonzero(match[:, f]), n_pure, replace=False)
        other = rng.choice(np.flatnonzero(~match[:, f]), k - n_pure, replace=False)
        top = np.concatenate([pure, other])
        scores[top, f] = 1.0 + rng.random(k)
    scores = scores.astype(np.float32)

    act = root / "activations"
    act.mkdir(parents=True, exist_ok=True)
    np.save(act / "scores.npy", scores)
    np.save(act / "dataset_index.npy", np.arange(n_images, dtype=np.int64))

    examples: dict[str, Any] = {}
    vis: dict[str, Any] = {}
    purity = np.zeros(n_features)
    for f in range(n_features):
        order = np.argsort(-scores[:, f], kind="stable")
        entry: dict[str, list[dict[str, Any]]] = {"top": [], "bottom": []}
        for which, rows in (("top", order[:k]), ("bottom", order[::-1][:k] if bottom else [])):
            for j, i in enumerate(rows):
                rel = f"examples/{f:04d}/{which}_{j}.png"
                _save_png(root / rel, ds.image(int(i)))
                entry[which].append({"path": rel, "dataset_index": int(i), "activation": float(scores[i, f])})
        if not bottom:
            del entry["bottom"]
        examples[str(f)] = entry
        purity[f] = match[order[:k], f].mean()
        vis_paths = []
        candidates = np.setdiff1d(np.flatnonzero(match[:, f]), order[:k])
        if len(candidates) == 0:  # a rare concept: visualise it with its examples' images
            candidates = np.flatnonzero(match[:, f])
        for j in range(n_vis):
            if dataset is None:
                proto = concept_image(f, rng).astype(np.float32)
            else:
                proto = ds.image(int(rng.choice(candidates))).astype(np.float32)
            noise = noise_image(rng, proto.shape[0]).astype(np.float32)
            img = mix[f] * proto + (1 - mix[f]) * noise
            rel = f"visualizations/{f:04d}/vis_{j}.png"
            _save_png(root / rel, np.clip(img, 0, 255).astype(np.uint8))
            vis_paths.append(rel)
        vis[str(f)] = {"vis": vis_paths, "vis_activation": [1.0] * n_vis}
    (root / "examples" / "index.json").write_text(json.dumps({"features": examples}))
    (root / "visualizations" / "index.json").write_text(json.dumps({"seed": seed, "settings": {}, "features": vis}))
    (root / "importance").mkdir(exist_ok=True)
    with open(root / "importance" / "importance.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "layer", "feature_ind", "importance"])
        for f in range(n_features):
            w.writerow(["planted", "layer", f, float(n_features - f)])
    cfg = {"seed": seed, "dataset": {"type": "synthetic"}, "rate": {"embedder": {"type": "handcrafted"}}}
    for key, value in (config or {}).items():
        cfg.setdefault(key, {}).update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    run = RunContext(root, RunConfig.model_validate(cfg))
    return World(root, run, ds, list(range(n_features)), purity, scores)


# --------------------------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------------------------
def assert_tables_equal(a: ScoreTable, b: ScoreTable) -> None:
    """Same rows, columns and values (NaN equal to NaN)."""
    assert list(a.feature_ind) == list(b.feature_ind)
    assert a.columns == b.columns
    np.testing.assert_allclose(a.I, b.I, rtol=1e-9, atol=1e-12, equal_nan=True)
    for name in [*a.components, *a.extras]:
        x, y = a.column(name), b.column(name)
        if x.dtype == object:
            assert list(x) == list(y), name
        else:
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)


def check_rater(
    name: str,
    world: World,
    options: dict[str, Any] | None = None,
    planted: int | None = None,
    seed: int = 3,
    features: list[int] | None = None,
) -> ScoreTable:
    """Run the shared checks on rater ``name``; returns its table on ``features``."""
    options = options or {}
    features = list(world.features if features is None else features)
    cls = RATERS.get(name)
    # metadata
    assert cls.name == name
    assert cls.description and "\n" not in cls.description.strip()
    assert isinstance(cls.higher_is_better, bool)
    assert set(cls.needs) <= NEEDS
    assert all(isinstance(c, str) and c not in ("I", "feature_ind") for c in cls.components)

    ctx = world.context()
    table = create_rater(name, seed=seed, **options).score(ctx, features)
    # output shape
    assert isinstance(table, ScoreTable)
    assert list(table.feature_ind) == features
    assert list(table.components)[: len(cls.components)] == list(cls.components)
    assert len(table.I) == len(features) and np.isfinite(table.I).any()
    # determinism: a fresh instance and a fresh context give the same numbers
    again = create_rater(name, seed=seed, **options).score(world.context(), features)
    assert_tables_equal(table, again)
    # batch invariance: any split and order of the features gives the same rows
    odd = create_rater(name, seed=seed, **options).score(ctx, features[1::2][::-1])
    even = create_rater(name, seed=seed, **options).score(ctx, features[0::2])
    assert_tables_equal(ScoreTable.concat([odd, even]).select(features), table)
    single = create_rater(name, seed=seed, **options).score(ctx, features[-1:])
    assert_tables_equal(single, table.select(features[-1:]))
    # CSV round trip (NaN ↔ empty cell)
    path = world.root / "ratings" / f"_harness_{name}.csv"
    table.to_csv(path)
    back = ScoreTable.read_csv(path, components=list(table.components))
    assert_tables_equal(
        back, ScoreTable(table.feature_ind, table.I, table.components, {k: v for k, v in table.extras.items()})
    )
    path.unlink()
    # planted case
    if planted is not None:
        values = np.where(np.isfinite(table.I), table.I, -np.inf if cls.higher_is_better else np.inf)
        best = int(np.argmax(values) if cls.higher_is_better else np.argmin(values))
        assert table.feature_ind[best] == planted, f"{name}: planted feature {planted} not first ({table.I})"
    return table


def spearman_with_purity(table: ScoreTable, world: World, higher_is_better: bool = True) -> float:
    """Spearman correlation of a rater's I with the planted purity (sign-flipped for distances)."""
    from scipy import stats

    purity = world.purity[np.searchsorted(world.features, table.feature_ind)]
    values = table.I if higher_is_better else -table.I
    ok = np.isfinite(values)
    return float(stats.spearmanr(values[ok], purity[ok]).statistic)
