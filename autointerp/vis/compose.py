"""Feature cards and contact sheets (PIL), laid out like the study's figures.

A card shows the feature visualisations in the top row and the dataset examples below (rows of the
same width), with the caption ``feature N · importance X`` above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
PLACEHOLDER = (200, 200, 200)
TEXT = (20, 20, 20)
FAIL = (200, 30, 30)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fit(image: np.ndarray | None, cell: int, label: str = "failed") -> Image.Image:
    """``image`` scaled to fit a ``cell``² square (aspect kept, centred on white); grey when None."""
    tile = Image.new("RGB", (cell, cell), BACKGROUND)
    if image is None:
        tile.paste(PLACEHOLDER, (0, 0, cell, cell))
        ImageDraw.Draw(tile).text((cell // 2, cell // 2), label, fill=FAIL, font=_font(max(10, cell // 8)), anchor="mm")
        return tile
    img = Image.fromarray(np.asarray(image, dtype=np.uint8))
    scale = cell / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size != img.size:
        img = img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    tile.paste(img, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return tile


def format_importance(value: float) -> str:
    """Importance as a short string: integers without decimals, else 3 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def card_caption(feature: int, importance: float | None = None) -> str:
    """``feature N · importance X`` (importance omitted when unknown)."""
    text = f"feature {feature}"
    if importance is not None and math.isfinite(importance):
        text += f" · importance {format_importance(importance)}"
    return text


def feature_card(
    visualizations: Sequence[np.ndarray | None],
    examples: Sequence[np.ndarray],
    caption: str,
    cell: int = 128,
    gap: int = 6,
    margin: int = 10,
) -> Image.Image:
    """Visualisations in the top row(s), dataset examples below, caption on top.

    The grid is ``max(4, len(visualizations))`` columns wide, so 4 visualisations and 8 examples give
    one row above two rows, as in the study.
    """
    cols = max(4, len(visualizations))
    vis_rows = max(1, math.ceil(len(visualizations) / cols))
    ex_rows = math.ceil(len(examples) / cols)
    title_h = max(18, cell // 5)
    label_h = max(14, cell // 8)
    title_font = _font(max(12, title_h - 4))
    width = max(2 * margin + cols * cell + (cols - 1) * gap, 2 * margin + int(title_font.getlength(caption)) + 1)
    height = margin + title_h + label_h + vis_rows * (cell + gap) + label_h + ex_rows * (cell + gap) + margin
    card = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(card)
    draw.text((margin, margin), caption, fill=TEXT, font=title_font)
    y = margin + title_h
    small = _font(max(10, label_h - 3))
    draw.text((margin, y), "feature visualisations", fill=(90, 90, 90), font=small)
    y += label_h
    for rows, items in ((vis_rows, visualizations), (ex_rows, examples)):
        for k, item in enumerate(items):
            r, c = divmod(k, cols)
            card.paste(_fit(item, cell), (margin + c * (cell + gap), y + r * (cell + gap)))
        y += rows * (cell + gap)
        if items is visualizations:
            draw.text((margin, y), "dataset examples (most activating)", fill=(90, 90, 90), font=small)
            y += label_h
    return card


def contact_sheet(
    tiles: Sequence[tuple[str, np.ndarray | None, bool]],
    title: str,
    cell: int = 96,
    gap: int = 4,
    margin: int = 10,
    columns: int | None = None,
) -> Image.Image:
    """A grid of ``(label, image, ok)`` tiles (one per feature); labels of failed checks in red."""
    n = max(1, len(tiles))
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    label_h = max(12, cell // 7)
    title_h = 24
    title_font = _font(16)
    width = max(2 * margin + cols * cell + (cols - 1) * gap, 2 * margin + int(title_font.getlength(title)) + 1)
    height = 2 * margin + title_h + rows * (cell + label_h + gap)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((margin, margin), title, fill=TEXT, font=title_font)
    font = _font(max(9, label_h - 3))
    for k, (label, image, ok) in enumerate(tiles):
        r, c = divmod(k, cols)
        x = margin + c * (cell + gap)
        y = margin + title_h + r * (cell + label_h + gap)
        sheet.paste(_fit(image, cell), (x, y))
        draw.text((x + cell // 2, y + cell + 1), label, fill=TEXT if ok else FAIL, font=font, anchor="mt")
    return sheet
