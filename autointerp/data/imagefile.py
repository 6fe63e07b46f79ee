"""Reading one image file as RGB uint8, with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autointerp.errors import DataError


def read_rgb(path: str | Path, missing: str = "image file missing") -> np.ndarray:
    """``path`` as uint8 (H, W, 3) RGB; a missing file is ``"{path}: {missing}"``, an unreadable one
    ``"{path}: cannot read image (...)"``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: corrupt or not an image)") from None
