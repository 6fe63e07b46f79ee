"""Optional third-party packages ("extras") and the one-line error when one is missing.

The core install (``pip install autointerp``) runs every stage with the built-in demo model, the
``handcrafted`` embedder and the torchvision/InceptionV1 adapters. Other parts need an extra:

==============  ==============================  ===========================================
extra           packages                        needed by
==============  ==============================  ===========================================
``clip``        open-clip-torch                 the ``open_clip`` embedder (CLIP raters)
``timm``        timm                            the ``timm`` model adapter and embedder
``tflite``      tflite, ai-edge-litert          the ``tflite`` model adapter and embedder
``tensorflow``  tensorflow-cpu, keras           the ``tf_graphdef``/``lucid`` and ``keras`` model adapters
``survey``      fastapi, uvicorn                ``autointerp survey serve``
``dreamsim``    dreamsim                        the ``dreamsim`` embedder
``ray``         ray                             ``executor: ray`` (``--executor ray``)
==============  ==============================  ===========================================

Code that uses such a package imports it through :func:`require` (or inside :func:`extra_imports` for
``from x import y`` statements), so a missing package is reported in one line naming the extra, e.g.
``the survey needs the [survey] extra: pip install 'autointerp[survey]' (fastapi is not installed)``.
In-tree modules are never imported this way: a broken ``autointerp`` module fails with its real error.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Iterator
from types import ModuleType

from autointerp.errors import UserError

#: extra name -> the import names of the packages it installs (pyproject.toml lists the same extras)
EXTRAS: dict[str, tuple[str, ...]] = {
    "clip": ("open_clip",),
    "timm": ("timm",),
    "tflite": ("tflite", "ai_edge_litert"),
    "tensorflow": ("tensorflow", "keras"),
    "survey": ("fastapi", "uvicorn"),
    "dreamsim": ("dreamsim",),
    "ray": ("ray",),
}


class MissingExtraError(UserError):
    """An optional package is not installed; the message names the extra that installs it."""

    def __init__(self, what: str, extra: str, missing: str) -> None:
        self.what, self.extra, self.missing = what, extra, missing
        super().__init__(
            f"{what} needs the [{extra}] extra: pip install 'autointerp[{extra}]' ({missing} is not installed)"
        )


def _check_extra(extra: str) -> None:
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")


@contextlib.contextmanager
def extra_imports(extra: str, what: str) -> Iterator[None]:
    """Context manager around imports of an extra's packages: a missing package raises
    :class:`MissingExtraError` (one line naming ``extra``) instead of ``ModuleNotFoundError``.

    Only a missing *third-party* module is translated; a missing ``autointerp``/``raters`` module, or any
    other error raised while importing, propagates unchanged so a broken install fails loudly.
    """
    _check_extra(extra)
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing in ("autointerp", "raters"):
            raise
        raise MissingExtraError(what, extra, missing) from None


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import and return ``module`` (e.g. ``"open_clip"``, ``"ai_edge_litert.interpreter"``), part of ``extra``.

    ``what`` names the feature that needs it (``"the survey"``, ``"the open_clip embedder"``); when the
    package (or a package it depends on) is not installed this raises :class:`MissingExtraError`:
    ``<what> needs the [<extra>] extra: pip install 'autointerp[<extra>]' (<package> is not installed)``.
    """
    with extra_imports(extra, what):
        return importlib.import_module(module)


def installed(module: str) -> bool:
    """True when the top-level package of ``module`` can be imported (without importing it)."""
    top = module.split(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):  # a module in sys.modules without a spec, or None there
        return False


__all__ = ["EXTRAS", "MissingExtraError", "extra_imports", "installed", "require"]
