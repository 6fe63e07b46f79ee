"""A tiny name → factory registry (as timm's ``register_model`` / open_clip's ``list_models``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from autointerp.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise an error listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loaders: list[Callable[[], None]] = []

    def add_loader(self, loader: Callable[[], None]) -> None:
        """Register a callable that imports modules which register more items (run lazily once)."""
        self._loaders.append(loader)

    def _load(self) -> None:
        # A loader is dropped only once it succeeded: if it raises (a broken module), the next lookup
        # raises again instead of reporting "unknown <kind>".
        while self._loaders:
            self._loaders[0]()
            self._loaders.pop(0)

    def register(self, name: str, item: T | None = None, *, overwrite: bool = False):
        """Register ``item`` under ``name``; usable as a decorator when ``item`` is omitted."""

        def _add(obj: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        if item is None:
            return _add
        return _add(item)

    def get(self, name: str) -> T:
        """Return the item registered as ``name``, or raise a UserError listing valid names."""
        self._load()
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise UserError(f"unknown {self.kind} {name!r}; valid: {valid}")
        return self._items[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._items)

    def items(self) -> dict[str, T]:
        """A copy of every registered ``{name: item}`` (without running the lazy loaders)."""
        return dict(self._items)

    def lookup(self, name: str) -> T | None:
        """The item registered as ``name``, or None (without running the lazy loaders)."""
        return self._items.get(name)

    def unregister(self, name: str) -> T | None:
        """Remove ``name`` (plug-in reloading, tests); returns what was registered, or None."""
        return self._items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items
