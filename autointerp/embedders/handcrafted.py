"""A weight-free image descriptor (colour histogram, colour layout, oriented gradients).

Needs no downloads, so the demo and the tests run anywhere. It also embeds *simple* phrases —
colour names and pattern words ("red stripes", "blue dots", "checkerboard") — by rendering a
prototype image of the phrase and describing it, so the word-based ``clip_label`` rater works on
the demo. Phrases it does not know are reported by :meth:`known_text` and skipped by raters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from autointerp.embedders import register_embedder
from autointerp.embedders.base import Embedder, resize_square

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (250, 140, 20),
    "purple": (130, 40, 170),
    "violet": (140, 60, 200),
    "pink": (250, 130, 180),
    "cyan": (30, 210, 220),
    "magenta": (220, 40, 200),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    "brown": (130, 80, 30),
}

PATTERNS: dict[str, str] = {
    "stripes": "hstripes",
    "striped": "hstripes",
    "horizontal": "hstripes",
    "vertical": "vstripes",
    "diagonal": "dstripes",
    "checkerboard": "checker",
    "checkered": "checker",
    "checker": "checker",
    "grid": "grid",
    "dots": "dots",
    "dotted": "dots",
    "spots": "dots",
    "spotted": "dots",
    "polka": "dots",
    "rings": "rings",
    "ring": "rings",
    "gradient": "gradient",
    "smooth": "flat",
    "plain": "flat",
    "flat": "flat",
    "solid": "flat",
    "noise": "noise",
    "noisy": "noise",
    "texture": "noise",
}


SHAPES: dict[str, str] = {
    "circle": "circle",
    "circles": "circle",
    "round": "circle",
    "disk": "circle",
    "square": "square",
    "squares": "square",
    "box": "square",
    "triangle": "triangle",
    "triangles": "triangle",
    "star": "star",
    "stars": "star",
}


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n if n > 1e-8 else v).astype(np.float32)


def describe(img: np.ndarray, size: int = 64) -> np.ndarray:
    """The descriptor of one uint8 (H, W, 3) image: L2-normalised, weighted blocks.

    * hue histogram weighted by chroma (12 bins) — the colour of saturated (object) pixels,
      insensitive to grey backgrounds;
    * joint RGB histogram, 4 levels per channel (64 bins, Hellinger-mapped) — overall colour;
    * 4×4 grid of mean colours (48, low weight) — colour layout;
    * histogram of gradient orientations (8 bins) in 2×2 cells, magnitude-weighted (32) — texture;
    * the same orientation histogram weighted by chroma (8) — edges and patterns of coloured parts;
    * gradient energy at two scales, contrast, coloured-edge energy, and edge density and brightness
      spread inside coloured regions (6) — smoothness and patterns of objects.
    """
    x = resize_square(img, size).astype(np.float32) / 255.0
    q = np.minimum((x * 4).astype(np.int64), 3)
    codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    hist = np.bincount(codes.ravel(), minlength=64).astype(np.float32)
    hist = np.sqrt(hist / hist.sum())

    mx, mn = x.max(axis=2), x.min(axis=2)
    chroma = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)  # [-pi, pi]
    hue_bins = np.minimum(((hue + np.pi) / (2 * np.pi) * 12).astype(np.int64), 11)
    weight = np.clip(chroma - 0.15, 0.0, None)  # ignore near-grey pixels
    hue_hist = np.bincount(hue_bins.ravel(), weights=weight.ravel(), minlength=12).astype(np.float32)
    hue_hist = np.sqrt(hue_hist / (hue_hist.sum() + 1e-6))

    g4 = size // 4
    layout = x[: g4 * 4, : g4 * 4].reshape(4, g4, 4, g4, 3).mean(axis=(1, 3)).ravel() - 0.5

    gray = x.mean(axis=2)
    gy, gx = np.gradient(gray)
    cy, cx = np.gradient(chroma)
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    bins = np.minimum((ang / np.pi * 8).astype(np.int64), 7)
    h2 = size // 2
    cells = []
    for rr in (0, 1):
        for cc in (0, 1):
            sl = (slice(rr * h2, (rr + 1) * h2), slice(cc * h2, (cc + 1) * h2))
            cells.append(np.bincount(bins[sl].ravel(), weights=mag[sl].ravel(), minlength=8))
    orient = np.sqrt(np.concatenate(cells) / (mag.sum() + 1e-6)).astype(np.float32)
    cmag = np.hypot(cx, cy)
    cang = np.minimum((np.mod(np.arctan2(cy, cx), np.pi) / np.pi * 8).astype(np.int64), 7)
    corient = np.bincount(cang.ravel(), weights=cmag.ravel(), minlength=8).astype(np.float32)
    corient = np.sqrt(corient / (corient.sum() + 1e-6))

    half = gray[: h2 * 2, : h2 * 2].reshape(h2, 2, h2, 2).mean(axis=(1, 3))
    gy2, gx2 = np.gradient(half)
    salient = weight > 0
    area = max(int(salient.sum()), 1)
    # inside coloured regions: edge density (patterned vs solid) and brightness spread (stripes, dots)
    inner_edges = float((cmag * salient).sum() / area)
    inner_spread = float(gray[salient].std()) if salient.any() else 0.0
    energy = np.array(
        [
            mag.mean() * 4,
            np.hypot(gx2, gy2).mean() * 2,
            gray.std() * 2,
            cmag.mean() * 8,
            inner_edges * 8,
            inner_spread * 4,
        ],
        dtype=np.float32,
    )

    return np.concatenate(
        [
            _unit(hue_hist) * 1.2,
            _unit(hist) * 0.6,
            _unit(layout) * 0.3,
            _unit(orient) * 0.5,
            _unit(corient) * 0.8,
            np.tanh(energy) * 0.6,
        ]
    ).astype(np.float32)


def parse_phrase(text: str) -> tuple[list[str], str | None, str | None]:
    """Colour words, pattern and shape named in a phrase (``(["red"], "dots", "circle")`` for
    'a photo of a red dotted circle')."""
    words = re.findall(r"[a-z]+", text.lower())
    colours = [w for w in words if w in COLOURS]
    pattern = next((PATTERNS[w] for w in words if w in PATTERNS), None)
    if pattern == "hstripes" and "vertical" in words:
        pattern = "vstripes"
    if pattern == "hstripes" and "diagonal" in words:
        pattern = "dstripes"
    shape = next((SHAPES[w] for w in words if w in SHAPES), None)
    return colours, pattern, shape


def _pattern_mask(pattern: str | None, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / 8
    if pattern is None or pattern == "flat":
        return np.ones((size, size), np.float32)
    if pattern == "hstripes":
        return (np.floor(yy / (period / 2)) % 2 == 0).astype(np.float32)
    if pattern == "vstripes":
        return (np.floor(xx / (period / 2)) % 2 == 0).astype(np.float32)
    if pattern == "dstripes":
        return (np.floor((xx + yy) / (period / 2)) % 2 == 0).astype(np.float32)
    if pattern == "checker":
        return ((np.floor(xx / period) + np.floor(yy / period)) % 2 == 0).astype(np.float32)
    if pattern == "grid":
        return ((xx % period < 1.5) | (yy % period < 1.5)).astype(np.float32)
    if pattern == "dots":
        return (np.hypot(xx % period - period / 2, yy % period - period / 2) < period / 4).astype(np.float32)
    if pattern == "rings":
        return (np.floor(np.hypot(xx - size / 2, yy - size / 2) / (period / 2)) % 2 == 0).astype(np.float32)
    if pattern == "gradient":
        return xx / (size - 1)
    return (np.random.default_rng(0).random((size, size)) > 0.5).astype(np.float32)  # noise


def _shape_mask(shape: str, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    c, r = size / 2, size * 0.3
    if shape == "circle":
        draw.ellipse([c - r, c - r, c + r, c + r], fill=255)
    elif shape == "square":
        draw.rectangle([c - r * 0.85, c - r * 0.85, c + r * 0.85, c + r * 0.85], fill=255)
    elif shape == "triangle":
        draw.polygon([(c, c - r), (c - r, c + r * 0.8), (c + r, c + r * 0.8)], fill=255)
    else:  # star
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon([(c + rr * np.cos(a), c - rr * np.sin(a)) for a, rr in zip(angles, radii, strict=True)], fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def render_phrase(text: str, size: int = 64) -> np.ndarray | None:
    """A prototype uint8 image of a colour/pattern/shape phrase, or None when nothing in it is known.

    The pattern is drawn in the first colour (white when none) over the second colour (grey when a
    colour is named, else black); a shape restricts the coloured pattern to the shape, on grey.
    """
    colours, pattern, shape = parse_phrase(text)
    if not colours and pattern is None and shape is None:
        return None
    fg = np.array(COLOURS[colours[0]] if colours else (240, 240, 240), dtype=np.float32)
    second = COLOURS[colours[1]] if len(colours) > 1 else ((128, 128, 128) if colours or shape else (20, 20, 20))
    bg = np.array(second, dtype=np.float32)
    mask = _pattern_mask(pattern, size)
    if shape is not None:
        inside = _shape_mask(shape, size)
        img = (
            inside[..., None] * (mask[..., None] * fg + (1 - mask[..., None]) * bg * 0.5) + (1 - inside[..., None]) * bg
        )
    else:
        img = mask[..., None] * fg + (1 - mask[..., None]) * bg
    return np.clip(img, 0, 255).astype(np.uint8)


@register_embedder
class HandcraftedEmbedder(Embedder):
    """Colour + texture descriptor with no weights (see :func:`describe`)."""

    kind = "handcrafted"
    supports_text = True
    logit_scale = 30.0

    def __init__(self, size: int = 64, batch_size: int = 256) -> None:
        super().__init__()
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.id = f"handcrafted-v2-{self.size}"

    def _embed_batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([describe(img, self.size) for img in images])

    def known_text(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([render_phrase(t, 8) is not None for t in texts], dtype=bool)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Descriptors of rendered prototypes; unknown phrases give zero vectors."""
        out = []
        for t in texts:
            img = render_phrase(t, self.size)
            out.append(describe(img, self.size) if img is not None else None)
        dim = next((len(v) for v in out if v is not None), len(describe(np.zeros((8, 8, 3), np.uint8), self.size)))
        return np.stack([v if v is not None else np.zeros(dim, np.float32) for v in out])
