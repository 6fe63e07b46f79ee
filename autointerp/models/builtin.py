"""Imports the built-in adapters so their ``@register_model`` decorators run (lazily, on first lookup).

Plain imports: a broken adapter module fails with its real error instead of showing up as "unknown model".
None of these modules imports an optional package (timm, tflite, ...) at import time; their factories do,
through :func:`autointerp.extras.require`.
"""

from autointerp.demo import model as _demo_model  # noqa: F401
from autointerp.models import generic, inceptionv1, kerasmodel, openclip, tfgraph, tflite  # noqa: F401
