"""autointerp: automated interpretability scoring for vision-model features.

Heavy libraries (torch, open_clip, ...) are imported lazily inside functions so that
``import autointerp`` and ``autointerp --help`` stay instant.
"""

__version__ = "0.1.0"
