"""Whether a low-precision matrix product actually runs faster than float32 on this machine.

The InceptionV1 ``mixed5a`` path trades float32 work for int8 products (:mod:`.quantized`) and
bfloat16 products (:mod:`.products`). Both pay off only where the CPU has instructions for them
(int8: AVX-512 VNNI or AVX-VNNI; bfloat16: AVX-512 BF16 or AMX). Elsewhere PyTorch falls back to
reference loops, many times *slower* than float32 (docs/performance.md). So each is timed once
against float32 on the shapes the path uses, before it is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _seconds(fn: Callable[[], object], budget: float) -> float:
    """Best wall time of a few calls of ``fn`` after one untimed warm-up call (which may compile a
    kernel: oneDNN builds its int8 kernels on first use), stopping once ``budget`` seconds have been
    spent after the first timed call: a slow candidate costs about two calls, not many. (The warm-up
    once counted as a sample when it alone used up the budget, on a loaded machine, and made int8
    products look slower than float32.)"""
    fn()
    start = time.perf_counter()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - start > budget:
            break
    return best


def speedup(candidate: Callable[[], object], baseline: Callable[[], object], budget: float = 0.3) -> float:
    """How many times faster ``candidate`` runs than ``baseline`` here (best of a few calls each;
    above 1: faster). Each side stops repeating after ``budget`` seconds."""
    return _seconds(baseline, budget) / max(_seconds(candidate, budget), 1e-9)
