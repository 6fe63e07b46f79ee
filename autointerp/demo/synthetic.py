"""A procedurally generated image world whose generating concepts are known.

Each 64×64 RGB image shows one shape on a background. Six concepts generate it:

==============  =====================================================  ==========
concept         values                                                 role
==============  =====================================================  ==========
``shape``       circle, square, triangle, star                         class
``colour``      red, green, blue, yellow                               class
``texture``     solid, stripes, dots, checker (pattern inside shape)   nuisance
``position``    centre, top_left, top_right, bottom_left, bottom_right nuisance
``size``        small, large                                           nuisance
``background``  dark, light, noise                                     nuisance
==============  =====================================================  ==========

The class label is ``shape × colour`` (16 classes, e.g. ``"red_circle"``), so a classifier has to
learn colour detectors and shape detectors; texture, position, size and background vary
independently and are there to be ignored (or to be picked up by a feature, which the purity
measures of :mod:`autointerp.demo.purity` then reveal).

Generation is deterministic: the concept table comes from ``numpy.random.default_rng(seed)`` and
each image ``i`` is drawn with its own generator seeded by ``(seed, i)``, so an image does not
depend on how many others are generated. Classes are balanced (each appears ``n // 16`` or
``n // 16 + 1`` times).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from autointerp.data.base import ImageDataset
from autointerp.errors import ConfigError

#: bump when rendering changes, so cached demo models trained on the old world are not reused
GENERATOR_VERSION = 1

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
}
TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker")
POSITIONS: dict[str, tuple[float, float]] = {  # centre of the shape as a fraction of the image (x, y)
    "centre": (0.5, 0.5),
    "top_left": (0.3, 0.3),
    "top_right": (0.7, 0.3),
    "bottom_left": (0.3, 0.7),
    "bottom_right": (0.7, 0.7),
}
SIZES: dict[str, float] = {"small": 0.15, "large": 0.24}  # shape radius as a fraction of the image size
BACKGROUNDS: tuple[str, ...] = ("dark", "light", "noise")

#: concept name -> its values, in the order used for integer codes
CONCEPT_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "position": tuple(POSITIONS),
    "size": tuple(SIZES),
    "background": BACKGROUNDS,
}
#: the concepts that make up the class label (label = shape_index * n_colours + colour_index)
CLASS_CONCEPTS: tuple[str, str] = ("shape", "colour")
N_CLASSES = len(SHAPES) * len(COLOURS)

_SUPERSAMPLE = 4  # shapes are drawn at 4× and box-downsampled: smooth edges


def class_keys() -> dict[int, str]:
    """Label -> class key, e.g. ``{0: "red_circle", 1: "green_circle", ...}``."""
    return {
        s * len(COLOURS) + c: f"{colour}_{shape}" for s, shape in enumerate(SHAPES) for c, colour in enumerate(COLOURS)
    }


@dataclass(frozen=True)
class ImageSpec:
    """The concepts of one image (values as strings) and its class label."""

    shape: str
    colour: str
    texture: str
    position: str
    size: str
    background: str

    @property
    def label(self) -> int:
        """Class index: ``shape_index * n_colours + colour_index``."""
        return SHAPES.index(self.shape) * len(COLOURS) + tuple(COLOURS).index(self.colour)


def sample_concepts(n_images: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Concept table for ``n_images`` images: name -> (N,) array of value strings.

    Classes (shape × colour) are balanced and shuffled; nuisance concepts are drawn uniformly and
    independently.
    """
    rng = np.random.default_rng([seed, 0])
    labels = rng.permutation(np.arange(n_images) % N_CLASSES)
    shape_idx, colour_idx = np.divmod(labels, len(COLOURS))
    table: dict[str, np.ndarray] = {
        "shape": np.asarray(SHAPES)[shape_idx],
        "colour": np.asarray(tuple(COLOURS))[colour_idx],
    }
    for name in ("texture", "position", "size", "background"):
        values = CONCEPT_VALUES[name]
        table[name] = np.asarray(values)[rng.integers(0, len(values), size=n_images)]
    return {name: table[name] for name in CONCEPT_VALUES}


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]] | None:
    """Vertices of ``shape`` (None for a circle) centred at (cx, cy) with circumradius ``r``."""
    if shape == "circle":
        return None
    if shape == "square":
        n, radii = 4, [r * 0.92]
        start = np.pi / 4
    elif shape == "triangle":
        n, radii = 3, [r * 1.1]
        start = -np.pi / 2
    elif shape == "star":
        n, radii = 10, [r * 1.12, r * 0.45]
        start = -np.pi / 2
    else:  # pragma: no cover - guarded by CONCEPT_VALUES
        raise ValueError(shape)
    points = []
    for k in range(n):
        theta = start + angle + 2 * np.pi * k / n
        rad = radii[k % len(radii)]
        points.append((cx + rad * np.cos(theta), cy + rad * np.sin(theta)))
    return points


def shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    """Float (size, size) coverage in [0, 1] of ``shape`` (anti-aliased by supersampling)."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    poly = _shape_polygon(shape, cx * s, cy * s, r * s, angle)
    if poly is None:
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], fill=255)
    else:
        draw.polygon(poly, fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def texture_pattern(texture: str, size: int, period: int, phase: int, angle_90: bool) -> np.ndarray:
    """Bool (size, size): where the texture shows the *secondary* (darker) colour."""
    yy, xx = np.mgrid[0:size, 0:size]
    if angle_90:
        xx, yy = yy, xx
    if texture == "solid":
        return np.zeros((size, size), dtype=bool)
    if texture == "stripes":
        return ((xx + phase) // (period // 2)) % 2 == 1
    if texture == "checker":
        return (((xx + phase) // (period // 2)) + ((yy + phase) // (period // 2))) % 2 == 1
    if texture == "dots":
        cx = (xx + phase) % period - period / 2 + 0.5
        cy = (yy + phase) % period - period / 2 + 0.5
        return cx * cx + cy * cy <= (period * 0.3) ** 2
    raise ValueError(texture)  # pragma: no cover - guarded by CONCEPT_VALUES


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "dark":
        level = rng.uniform(15, 55)
        return np.full((size, size, 3), level, dtype=np.float32) + rng.uniform(-8, 8, size=3).astype(np.float32)
    if kind == "light":
        level = rng.uniform(185, 235)
        return np.full((size, size, 3), level, dtype=np.float32) + rng.uniform(-8, 8, size=3).astype(np.float32)
    if kind == "noise":  # grey-level noise, blurred a little so it is texture-like rather than pixel salt
        noise = rng.uniform(40, 200, size=(size // 2, size // 2)).astype(np.float32)
        noise = np.kron(noise, np.ones((2, 2), dtype=np.float32))[:size, :size]
        return np.repeat(noise[:, :, None], 3, axis=2)
    raise ValueError(kind)  # pragma: no cover


def render(spec: ImageSpec, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """Render one image of ``spec`` as uint8 (size, size, 3); ``rng`` supplies the jitter.

    Jitter (all small enough not to change any concept): position ±4% of the image, radius ±8%,
    rotation ±20° (shapes other than circles), colour ±18 per channel, texture phase and
    orientation (stripes/checker/dots run vertically or horizontally).
    """
    fx, fy = POSITIONS[spec.position]
    cx = (fx + rng.uniform(-0.04, 0.04)) * size
    cy = (fy + rng.uniform(-0.04, 0.04)) * size
    r = SIZES[spec.size] * size * rng.uniform(0.92, 1.08)
    angle = np.deg2rad(rng.uniform(-20, 20)) if spec.shape != "circle" else 0.0
    mask = shape_mask(spec.shape, size, cx, cy, r, angle)

    colour = np.asarray(COLOURS[spec.colour], dtype=np.float32) + rng.uniform(-18, 18, size=3).astype(np.float32)
    period = max(4, int(round(size / 8)))
    pattern = texture_pattern(spec.texture, size, period, int(rng.integers(0, period)), bool(rng.integers(0, 2)))
    fill = np.where(pattern[:, :, None], colour * 0.45, colour)

    background = _background(spec.background, size, rng)
    image = background * (1 - mask[:, :, None]) + fill * mask[:, :, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate(n_images: int, seed: int = 0, image_size: int = 64) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n_images`` images (uint8 (N, S, S, 3)) and their concept table; deterministic in ``seed``."""
    concepts = sample_concepts(n_images, seed)
    images = np.empty((n_images, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n_images):
        images[i] = render_index(concepts, i, seed, image_size)
    return images, concepts


def render_index(concepts: dict[str, np.ndarray], i: int, seed: int, image_size: int = 64) -> np.ndarray:
    """Render image ``i`` of a concept table with the generator seeded by ``(seed, i)``."""
    spec = ImageSpec(**{name: str(concepts[name][i]) for name in CONCEPT_VALUES})
    return render(spec, np.random.default_rng([seed, 1, i]), image_size)


def labels_from_concepts(concepts: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) int64 class labels ``shape_index * n_colours + colour_index``."""
    shape_code = {v: i for i, v in enumerate(SHAPES)}
    colour_code = {v: i for i, v in enumerate(COLOURS)}
    return np.asarray(
        [
            shape_code[s] * len(COLOURS) + colour_code[c]
            for s, c in zip(concepts["shape"], concepts["colour"], strict=True)
        ],
        dtype=np.int64,
    )


class SyntheticDataset(ImageDataset):
    """The demo world: ``n_images`` generated images held in memory, with their concepts.

    ``labels`` are 0-based class indices (``class_keys[label]`` e.g. ``"red_circle"``), and
    ``concepts[name]`` is an (N,) array of value strings for each concept in
    :data:`CONCEPT_VALUES`.
    """

    def __init__(self, n_images: int = 2000, seed: int = 0, image_size: int = 64) -> None:
        if n_images < 1:
            raise ConfigError(f"dataset.n_images: expected a positive integer, got {n_images}")
        if image_size < 16:
            raise ConfigError(f"dataset.image_size: expected at least 16 pixels, got {image_size}")
        self.name = f"synthetic(n={n_images},seed={seed})"
        self.seed = seed
        self.image_size = image_size
        self.images_array, self.concepts = generate(n_images, seed, image_size)
        self.labels = labels_from_concepts(self.concepts)
        self.class_keys = class_keys()

    def __len__(self) -> int:
        return len(self.images_array)

    def image(self, index: int) -> np.ndarray:
        return self.images_array[index]

    def images(self, indices) -> list[np.ndarray]:  # type: ignore[override]
        return list(self.images_array[np.asarray(indices, dtype=np.int64)])


_OPTIONS = {"n_images": 2000, "seed": 0, "image_size": 64}


def build_synthetic_dataset(options: dict | None = None) -> SyntheticDataset:
    """Build the demo dataset from config options ``n_images`` (2000), ``seed`` (0), ``image_size`` (64)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(
            f"dataset.{unknown[0]}: unknown option for the synthetic dataset; valid: {', '.join(_OPTIONS)}"
        )
    values = {**_OPTIONS, **options}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"dataset.{key}: expected an integer, got {value!r}")
    return SyntheticDataset(int(values["n_images"]), int(values["seed"]), int(values["image_size"]))
