"""Model-specific fast paths of the exact importance method, behind one small interface.

The generic engine (:mod:`autointerp.importance.engine` with the tail, affine, attribution and naive
paths) works for any model and layer. A *fast path* serves one (model, layer) pair faster with the same
counts. Each registers a :class:`FastPath` in :data:`FAST_PATHS`:

* :meth:`FastPath.supports` says whether it serves a model at a layer;
* :meth:`FastPath.build` turns its validated options into a picklable factory of the
  :class:`~autointerp.importance.engine.AblationPath` (worker processes build their own);
* :meth:`FastPath.describe` is one line for listings and errors.

The config chooses one with ``importance.fast_path: {name: auto, options: {...}}``: ``auto`` picks the first
registered path that supports the run's model and layer and computes on the run's device (else the generic
engine: on a GPU, the tail on the device), ``none`` always the generic engine, any other value that path by
name. ``options`` are validated by the chosen path's :attr:`FastPath.Options` model. Paths live in their own
subpackages, imported only when the registry is first asked (:func:`select_fast_path`), so the generic
engine never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from autointerp.errors import ConfigError
from autointerp.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.importance.engine import AblationPath
    from autointerp.models.base import ModelAdapter

#: the subpackages of the paths that ship with autointerp (imported on first use of the registry)
BUILTIN = ("autointerp.importance.fastpaths.inceptionv1",)


class NoOptions(BaseModel):
    """Options of a path that takes none."""

    model_config = ConfigDict(extra="forbid")


class FastPath:
    """A model-specific exact path (module doc). Subclasses set :attr:`name` and :attr:`Options` and
    implement :meth:`supports`, :meth:`build` and :meth:`describe`."""

    #: the name the config uses (``importance.fast_path.name``)
    name: ClassVar[str] = ""
    #: the pydantic model of ``importance.fast_path.options`` (forbids unknown keys)
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: units of work may run in ``importance.workers`` processes (else in the stage's process)
    worker_processes: ClassVar[bool] = True
    #: units keep each (image, feature) pair's outcome, for per-image reliability estimates
    per_image_outcomes: ClassVar[bool] = False
    #: the device types the path computes on; ``auto`` passes over a path that lacks the run's (on a GPU
    #: the generic engine runs the tail there, which beats a CPU path), a path named in the config runs anyway
    devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def supports(self, model: ModelAdapter, layer: str, shape: tuple[int, int, int]) -> bool:
        """Whether this path serves ``model`` at ``layer`` with activations of ``shape`` (C, H, W)."""
        raise NotImplementedError

    def build(
        self, options: BaseModel, model: ModelAdapter, layer: str, shape: tuple[int, int, int]
    ) -> Callable[[], AblationPath]:
        """A picklable factory of the path for ``model`` at ``layer`` with validated ``options`` (an
        :attr:`Options` instance); anything timed once per run happens here, in the stage's process."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line: what the path serves and how."""
        raise NotImplementedError

    def prepare_process(self) -> None:
        """Process-wide settings a worker asks for before it builds the path (none by default)."""

    def options(self, raw: dict[str, Any]) -> BaseModel:
        """``raw`` (``importance.fast_path.options``) validated by :attr:`Options`; a one-line
        :class:`~autointerp.errors.ConfigError` naming the key otherwise."""
        try:
            return self.Options.model_validate(raw)
        except ValidationError as exc:
            errors = exc.errors()
            field = str(errors[0]["loc"][0]) if errors[0]["loc"] else ""
            key = f"importance.fast_path.options.{field}"
            allowed = ", ".join(self.Options.model_fields) or "(none)"
            if errors[0]["type"] == "extra_forbidden":
                raise ConfigError(
                    f"unknown config key {key!r} for fast path {self.name!r}; allowed keys here: {allowed}"
                ) from None
            # a union type reports one error per member: name them all
            reasons = " or ".join(dict.fromkeys(e["msg"] for e in errors if e["loc"][:1] == errors[0]["loc"][:1]))
            raise ConfigError(f"config key {key!r}: {reasons} (got {errors[0].get('input')!r})") from None


FAST_PATHS: Registry[FastPath] = Registry("importance fast path")


def _load_builtin() -> None:
    import importlib

    for module in BUILTIN:
        importlib.import_module(module)


FAST_PATHS.add_loader(_load_builtin)


def register_fast_path(path: FastPath) -> FastPath:
    """Register ``path`` under its :attr:`~FastPath.name` (``auto`` tries paths in registration order)."""
    if path.name in ("auto", "none", ""):
        raise ValueError(f"fast path name {path.name!r} is reserved")
    return FAST_PATHS.register(path.name, path)


@dataclass(frozen=True)
class SelectedPath:
    """A fast path chosen for a run, with its validated options."""

    path: FastPath
    options: BaseModel

    @property
    def key(self) -> dict[str, Any]:
        """What identifies the choice in a run's settings key."""
        return {"name": self.path.name, "options": self.options.model_dump(mode="json")}

    def factory(self, model: ModelAdapter, layer: str, shape: tuple[int, int, int]) -> Callable[[], AblationPath]:
        """:meth:`FastPath.build` with the chosen options."""
        return self.path.build(self.options, model, layer, shape)


def select_fast_path(
    name: str,
    options: dict[str, Any],
    model: ModelAdapter,
    layer: str,
    shape: tuple[int, int, int],
    device: str = "cpu",
) -> SelectedPath | None:
    """The fast path that ``importance.fast_path`` (``name``, ``options``) chooses for ``model`` at ``layer``
    (activations of ``shape``) on a ``device`` type (``cpu``, ``cuda``), or None for the generic engine
    (module doc; ``auto`` takes only a path that computes on ``device``, :attr:`FastPath.devices`). A named
    path that does not support the model and layer, or options it refuses, are one-line config errors."""
    if name == "none":
        return None
    FAST_PATHS.names()  # runs the loaders: registration order is what auto follows
    if name == "auto":
        for path in FAST_PATHS.items().values():
            if device in path.devices and path.supports(model, layer, shape):
                return SelectedPath(path, path.options(options))
        return None
    if FAST_PATHS.lookup(name) is None:
        valid = ", ".join(["auto", "none", *FAST_PATHS.names()])
        raise ConfigError(f"config key 'importance.fast_path.name' = {name!r} is not a fast path; valid: {valid}")
    path = FAST_PATHS.get(name)
    if not path.supports(model, layer, shape):
        raise ConfigError(
            f"importance.fast_path.name = {name!r} does not support layer {layer!r} of this model "
            f"({path.describe()}); use auto or none"
        )
    return SelectedPath(path, path.options(options))
