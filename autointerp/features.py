"""Which features (channels) a stage works on, validated against the layer's channel count."""

from __future__ import annotations

from collections.abc import Sequence

from autointerp.errors import UserError


def select_features(
    requested: Sequence[int] | None, configured: Sequence[int] | None, channels: int, layer: str
) -> list[int]:
    """``requested`` (e.g. ``--features``), else ``configured`` (``visualize.features``), else all channels;
    sorted, without duplicates. An index outside ``0..channels-1`` is a :class:`UserError`."""
    chosen = requested if requested is not None else configured
    if chosen is None:
        return list(range(channels))
    feats = sorted({int(f) for f in chosen})
    bad = [f for f in feats if not 0 <= f < channels]
    if bad:
        raise UserError(f"channel index {bad[0]} out of range for layer {layer!r} (valid: 0..{channels - 1})")
    if not feats:
        raise UserError("no features selected (--features or the config's features list is empty)")
    return feats
