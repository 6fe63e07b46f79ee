"""Imports the built-in adapters so their ``@register_model`` decorators run (lazily, on first lookup)."""

import contextlib

from autointerp.models import generic, inceptionv1  # noqa: F401

# Adapters written alongside (demo model, TFLite import) register themselves when present.
for _name in ("autointerp.demo.model", "autointerp.models.tflite"):
    with contextlib.suppress(ModuleNotFoundError):
        __import__(_name)
