"""Optional ``torch.compile`` of elementwise-heavy functions, falling back to eager PyTorch.

The rank-1 importance path spends most of its non-convolution time in chains of elementwise
operations over ``(pairs, channels, 7, 7)`` tensors. Eager PyTorch materialises every intermediate;
``torch.compile`` (inductor, needs a C++ compiler) fuses each chain into one loop, several times
faster. Compilation happens on the first call (seconds, cached on disk by PyTorch). When it
fails (no compiler, unsupported platform), now or on a later recompilation, the eager function is
used for the rest of the process and a warning says why (once per distinct failure, not once per
function); results are the same up to float rounding either way.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

#: failures already reported (exception type and first line): a missing compiler fails every compiled
#: function the same way, and one warning says it
_reported: set[tuple[str, str]] = set()


def compiled_or_eager(
    fn: Callable[..., Any], batch_args: tuple[int | tuple[int, int], ...] = (0,)
) -> Callable[..., Any]:
    """``fn`` compiled with dynamic shapes on first use; ``fn`` itself once compiling has failed.

    Calls where a tensor among the positional arguments ``batch_args`` has fewer than 2 rows run
    eagerly: PyTorch specialises dynamic sizes 0 and 1, so such a call would compile another graph
    (seconds) for microseconds of work. An entry ``(i, dim)`` checks dimension ``dim`` of argument
    ``i`` instead of its rows (for a batch that is not the first dimension).
    """
    state: dict[str, Any] = {}
    checks = [(b, 0) if isinstance(b, int) else b for b in batch_args]

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        if state.get("eager") or any(args[i].shape[dim] < 2 for i, dim in checks):
            return fn(*args)
        try:
            if "compiled" not in state:
                import torch

                state["compiled"] = _without_duck_shapes(torch.compile(fn, dynamic=True))
            return state["compiled"](*args)
        except Exception as exc:
            state["eager"] = True
            first_line = (str(exc).splitlines() or [""])[0][:200]
            if (type(exc).__name__, first_line) not in _reported:
                _reported.add((type(exc).__name__, first_line))
                warnings.warn(
                    f"torch.compile of {fn.__name__} failed ({type(exc).__name__}: {first_line}); "
                    "running it eagerly (slower, same results; the same failure elsewhere is not repeated)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return fn(*args)  # a genuine error in fn raises again here, uncompiled

    wrapper.is_compiled = lambda: "compiled" in state and not state.get("eager")  # type: ignore[attr-defined]
    return wrapper


def _without_duck_shapes(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """Trace without "duck shaping": otherwise a batch that happens to have as many pairs as a layer
    has channels (e.g. 192) adds an equality guard, and the next batch size recompiles.

    The setting is process-wide from the first compile on (it only changes which guards new graphs
    get, never results): patching it around every call instead doubled the per-call overhead, which
    thousands of calls per segment pay."""
    try:
        from torch.fx.experimental import _config as fx_config
    except ImportError:  # pragma: no cover - PyTorch without the knob
        return compiled
    fx_config.use_duck_shape = False
    return compiled
