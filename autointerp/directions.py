"""Directions as features: vectors over a layer's channels (probe weights, sparse-autoencoder decoder rows,
classifier rows) scored like channels.

A *direction file* holds ``F`` vectors over the ``C`` channels of the studied layer:

* ``.npy`` — a 2-D float array ``(F, C)``; directions are named ``d0``, ``d1``, ...;
* ``.npz`` — key ``directions`` ``(F, C)`` and optional ``names`` ``(F,)`` strings.

A direction's score on an image mirrors a channel's score in the activation stage
(:mod:`autointerp.stages.activations`): the activation is projected onto the direction at every spatial position
(``Σ_c d_c · a[c, y, x]``) and the layer's spatial reduce (``activations.reduce``: ``max`` or ``mean``) gives one
number per image. A one-hot direction therefore reproduces the channel's column of ``RUN/activations/scores.npy``:
bit for bit for ``max`` on a float32 cache; for ``mean`` up to float32 summation order (projection and mean are
computed in float64 and rounded once; the stage sums float32 values in the model's memory layout, which can
differ in the last bit). A float16 cache was reduced before rounding, so its scores agree to float16 precision.

Scores are computed from the memory-mapped cache ``RUN/activations/acts.npy`` ``(N, C, H, W)`` in chunks of
images, so memory stays bounded by ``chunk × max(C, F) × H × W``. Rankings (:func:`top_k`) are stable and break
ties by a seeded permutation of the images, never by dataset index (a dataset sorted by class would otherwise
hand every tie to the first classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autointerp.errors import DataError, UserError

REDUCES = ("max", "mean")


@dataclass
class Directions:
    """``vectors`` (F, C) float64 and one name per direction; ``source`` is the file they came from."""

    vectors: np.ndarray
    names: list[str] = field(default_factory=list)
    source: str = "directions"

    def __post_init__(self) -> None:
        self.vectors = check_directions(self.vectors, source=self.source)
        if not self.names:
            self.names = [f"d{i}" for i in range(len(self.vectors))]
        if len(self.names) != len(self.vectors):
            raise DataError(f"{self.source}: {len(self.names)} names for {len(self.vectors)} directions")
        self.names = [str(n) for n in self.names]

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def width(self) -> int:
        """The number of channels each direction spans."""
        return int(self.vectors.shape[1])

    def check_width(self, channels: int, layer: str) -> None:
        """One-line error when the directions do not span ``channels`` channels of ``layer``."""
        if self.width != int(channels):
            raise DataError(f"{self.source} has width {self.width}; layer {layer} has {int(channels)} channels")

    def save(self, path: str | Path) -> None:
        """Write ``path`` (``.npz`` with ``directions`` and ``names``, or ``.npy`` without names), atomically."""
        from autointerp.atomic import atomic_path

        path = Path(path)
        if path.suffix == ".npy":
            with atomic_path(path, suffix=".npy") as tmp:
                np.save(tmp, self.vectors)
            return
        if path.suffix != ".npz":
            raise UserError(f"{path}: a direction file must end in .npy or .npz")
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, directions=self.vectors, names=np.array(self.names, dtype=str))


def check_directions(
    vectors: np.ndarray, source: str = "directions", channels: int | None = None, layer: str | None = None
) -> np.ndarray:
    """Validate an (F, C) array of directions and return it as float64.

    One-line :class:`DataError` for a wrong rank, a non-numeric dtype, no rows, a non-finite row, an all-zero row
    or (when ``channels`` is given) a width other than the layer's channel count.
    """
    arr = np.asarray(vectors)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{source}: directions must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{source}: expected a 2-D array (directions, channels), got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{source}: no directions (shape {tuple(arr.shape)})")
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise DataError(f"{source}: row {int(bad[0])} has non-finite values (NaN or inf); {bad.size} such row(s)")
    zero = np.flatnonzero(~arr.any(axis=1))
    if zero.size:
        raise DataError(
            f"{source}: row {int(zero[0])} is all zeros (a direction needs a non-zero vector); {zero.size} such row(s)"
        )
    if channels is not None and arr.shape[1] != int(channels):
        raise DataError(f"{source} has width {arr.shape[1]}; layer {layer or '?'} has {int(channels)} channels")
    return arr


def load_directions(path: str | Path, channels: int | None = None, layer: str | None = None) -> Directions:
    """Read a direction file (``.npy`` (F, C), or ``.npz`` with ``directions`` and optional ``names``).

    With ``channels`` the width is checked against the layer (``layer`` names it in the error).
    """
    path = Path(path)
    name = path.name
    if not path.exists():
        raise DataError(f"{path}: direction file not found")
    try:
        if path.suffix == ".npy":
            vectors, names = np.load(path, allow_pickle=False), []
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "directions" not in data.files:
                    raise DataError(f"{path}: missing key 'directions' (found: {', '.join(data.files) or 'none'})")
                vectors = data["directions"]
                names = [str(n) for n in np.asarray(data["names"]).reshape(-1)] if "names" in data.files else []
        else:
            raise DataError(f"{path}: a direction file must be .npy (F, C) or .npz with key 'directions'")
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable numpy file ({str(exc).splitlines()[0]})") from None
    vectors = check_directions(vectors, source=name)
    if names and len(names) != len(vectors):
        raise DataError(f"{path}: key 'names' has {len(names)} entries for {len(vectors)} directions")
    dirs = Directions(vectors, names, source=name)
    if channels is not None:
        dirs.check_width(channels, layer or "?")
    return dirs


def direction_scores(
    acts: np.ndarray,
    directions: np.ndarray | Directions,
    reduce: str = "max",
    chunk_size: int = 64,
    progress: str | None = None,
) -> np.ndarray:
    """Per-image scores (N, F) float32 of each direction: projection at every position, then the spatial reduce.

    ``acts`` (N, C, H, W) — typically ``np.load(RUN/activations/acts.npy, mmap_mode='r')`` — is read ``chunk_size``
    images at a time; (N, C) activations (no spatial axes) are projected directly. ``reduce`` is the layer's
    ``activations.reduce`` (``max`` or ``mean``). ``progress`` names a progress bar (None: none).
    """
    if reduce not in REDUCES:
        raise UserError(f"reduce = {reduce!r}; expected one of {', '.join(REDUCES)}")
    vec = directions.vectors if isinstance(directions, Directions) else check_directions(directions)
    if acts.ndim == 2:
        acts = acts.reshape(*acts.shape, 1, 1)
    if acts.ndim != 4:
        raise DataError(f"activations: expected (N, C, H, W), got shape {tuple(acts.shape)}")
    n, c, h, w = acts.shape
    if vec.shape[1] != c:
        raise DataError(f"directions have width {vec.shape[1]}; the activations have {c} channels")
    if chunk_size < 1:
        raise UserError(f"chunk_size = {chunk_size}; expected a positive number of images")
    out = np.empty((n, len(vec)), dtype=np.float32)
    bar = None
    if progress:
        from autointerp.progress import Progress

        bar = Progress(progress, n, "images").__enter__()
    try:
        for lo in range(0, n, chunk_size):
            hi = min(lo + chunk_size, n)
            block = np.asarray(acts[lo:hi], dtype=np.float64).reshape(hi - lo, c, h * w)
            # one matrix product per chunk: (F, C) @ (C, B·H·W), in float64
            proj = (vec @ block.transpose(1, 0, 2).reshape(c, -1)).reshape(len(vec), hi - lo, h * w)
            red = proj.max(axis=2) if reduce == "max" else proj.mean(axis=2)  # the stage's reduce, rounded once
            out[lo:hi] = red.T
            if bar is not None:
                bar.advance(hi - lo)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return out


def tie_break_permutation(n: int, seed: int) -> np.ndarray:
    """The seeded permutation of ``n`` images that orders ties (position in it decides, earlier first)."""
    return np.random.default_rng([int(seed), 0x74696573]).permutation(int(n))


def rank_images(scores: np.ndarray, seed: int, descending: bool = True) -> np.ndarray:
    """Row order (N, F) of each column of ``scores`` (N, F): by score, ties by the seeded permutation.

    Stable: equal scores keep the order of :func:`tie_break_permutation`, so the result depends on the scores and
    the seed only, not on where an image sits in the dataset.
    """
    s = np.asarray(scores)
    if s.ndim == 1:
        s = s[:, None]
    perm = tie_break_permutation(len(s), seed)
    shuffled = s[perm]
    order = np.argsort(-shuffled if descending else shuffled, axis=0, kind="stable")
    return perm[order]


def top_k(scores: np.ndarray, k: int, seed: int = 0, bottom: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(idx (F, k) int64, val (F, k) float32)``: the ``k`` highest (``bottom``: lowest) rows of each column,
    most extreme first, ties broken by the seeded permutation."""
    s = np.asarray(scores)
    if s.ndim == 1:
        s = s[:, None]
    if not 1 <= k <= len(s):
        raise UserError(f"k = {k}; expected 1..{len(s)} (the number of images)")
    rows = rank_images(s, seed, descending=not bottom)[:k]  # (k, F)
    vals = np.take_along_axis(s, rows, axis=0)
    return rows.T.astype(np.int64).copy(), vals.T.astype(np.float32).copy()


def run_direction_scores(
    run_root: str | Path, directions: Directions, chunk_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Scores (N, F) of ``directions`` on a run's activation cache (``RUN/activations/acts.npy`` and the
    ``reduce`` of its ``meta.json``), with a width check against the cached layer."""
    from autointerp.runfiles import load_array, read_activation_meta
    from autointerp.runfolder import RunPaths

    paths = RunPaths(Path(run_root))
    if not paths.activations_meta.exists() or not paths.acts.exists():
        raise DataError(
            f"{paths.activations}: no activation cache ({paths.activations_meta.name}, {paths.acts.name}); "
            "run `autointerp activations` first"
        )
    meta = read_activation_meta(paths)
    directions.check_width(int(meta["channels"]), str(meta.get("layer", "?")))
    acts = load_array(paths.acts, mmap=True)
    return direction_scores(
        acts,
        directions,
        meta.get("reduce", "max"),
        chunk_size,
        progress=f"direction scores {meta.get('layer', '')}" if progress else None,
    )


__all__ = [
    "REDUCES",
    "Directions",
    "check_directions",
    "direction_scores",
    "load_directions",
    "rank_images",
    "run_direction_scores",
    "tie_break_permutation",
    "top_k",
]
