"""Rich progress bars with rate and ETA, shared by every long stage."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """Progress bars are drawn on a terminal unless AUTOINTERP_NO_PROGRESS is set."""
    if os.environ.get("AUTOINTERP_NO_PROGRESS"):
        return False
    return sys.stderr.isatty() or bool(os.environ.get("AUTOINTERP_FORCE_PROGRESS"))


class Progress:
    """A progress bar over ``total`` units named ``unit`` (e.g. 'images', 'features').

    Use as a context manager and call :meth:`advance`. Draws nothing when not on a terminal,
    but always logs one summary line at the end.
    """

    def __init__(self, description: str, total: int, unit: str = "items") -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        import time

        self._t0 = time.perf_counter()
        if progress_enabled():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, rate="")
        return self

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more units done."""
        import time

        self.done += n
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            self._bar.update(self._task, advance=n, rate=f"{self.done / elapsed:.1f} {self.unit}/s")

    def __exit__(self, *exc: object) -> None:
        import time

        elapsed = time.perf_counter() - self._t0
        if self._bar is not None:
            self._bar.__exit__(*exc)
        if exc[0] is None:
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            print(
                f"{self.description}: {self.done} {self.unit} in {elapsed:.1f}s ({rate:.1f} {self.unit}/s)",
                file=sys.stderr,
            )


def track(items: Iterable[T], description: str, total: int, unit: str = "items") -> Iterator[T]:
    """Iterate over ``items`` with a progress bar."""
    with Progress(description, total, unit) as bar:
        for item in items:
            yield item
            bar.advance()
