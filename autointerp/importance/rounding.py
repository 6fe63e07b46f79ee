"""Constants the exact importance tiers share for their float-rounding bounds."""

from __future__ import annotations

#: every sound bound of the tiers is scaled up by this (far above the float rounding it must cover)
SAFETY = 1.0 + 1e-3
#: float32 unit roundoff
U = 2.0**-24
