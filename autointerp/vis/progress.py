"""A feature-level progress bar that shows features per hour and the ETA, with in-batch progress."""

from __future__ import annotations

import sys
import time

from autointerp.progress import Progress


class FeatureProgress(Progress):
    """:class:`autointerp.progress.Progress` counting features, rate in features/hour.

    :meth:`partial` moves the bar inside a batch (e.g. per optimisation step) so the ETA is live even
    when one batch takes minutes. Without a terminal, one line per finished batch is logged instead.
    """

    def __init__(self, description: str, total: int) -> None:
        super().__init__(description, total, unit="features")
        self._partial = 0.0

    def __enter__(self) -> FeatureProgress:
        super().__enter__()
        self._t_start = time.perf_counter()
        return self

    def _rate_text(self, done: float) -> tuple[str, str]:
        elapsed = max(time.perf_counter() - self._t_start, 1e-9)
        per_hour = done / elapsed * 3600.0
        left = (self.total - done) / (done / elapsed) if done > 0 else float("inf")
        eta = (
            "?"
            if left == float("inf")
            else time.strftime("%H:%M:%S", time.gmtime(left))
            if left < 86400
            else f"{left / 3600:.0f}h"
        )
        return f"{per_hour:.1f} features/h", eta

    def partial(self, done_in_batch: float) -> None:
        """Fraction of the current batch done, in features (not yet counted by :meth:`advance`)."""
        self._partial = done_in_batch
        if self._bar is not None:
            rate, _ = self._rate_text(self.done + self._partial)
            self._bar.update(self._task, completed=self.done + self._partial, rate=rate)

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more features done."""
        self.done += n
        self._partial = 0.0
        rate, eta = self._rate_text(self.done)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=rate)
        else:
            print(f"{self.description}: {self.done}/{self.total} features ({rate}, ETA {eta})", file=sys.stderr)
