"""Timing probes that decide whether low-precision products are worth using (fastpaths.inceptionv1.speed)."""

from __future__ import annotations

import time

import pytest

from autointerp.importance.fastpaths.inceptionv1 import path as inception
from autointerp.importance.fastpaths.inceptionv1.speed import speedup


def test_speedup_orders_a_fast_and_a_slow_function():
    fast, slow = (lambda: time.sleep(0.001)), (lambda: time.sleep(0.02))
    assert speedup(fast, slow) > 5
    assert speedup(slow, fast) < 0.2


def test_a_slow_candidate_is_not_repeated_past_the_budget():
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.05)

    speedup(slow, lambda: None, budget=0.01)
    assert len(calls) == 2  # the untimed warm-up, then one timed call that already spent the budget


def test_a_slow_first_call_does_not_count():
    """A kernel built on its first call (oneDNN's int8 kernels are) is timed on the calls after it, even
    when that first call alone took longer than the budget."""
    calls = []

    def builds_then_fast():
        calls.append(1)
        time.sleep(0.2 if len(calls) == 1 else 0.001)

    assert speedup(builds_then_fast, lambda: time.sleep(0.01), budget=0.05) > 3


@pytest.mark.parametrize(
    ("setting", "exact", "fast", "on", "says"),
    [
        ("auto", True, True, True, "on"),
        ("auto", True, False, False, "not faster than float32"),
        (True, True, False, True, "even where not faster"),
        ("auto", False, True, False, "missing or inexact"),
        (True, False, True, False, "missing or inexact"),
        (False, True, True, False, "int8: false"),
    ],
)
def test_int8_tier_runs_only_where_exact_and_auto_only_where_faster(monkeypatch, setting, exact, fast, on, says):
    monkeypatch.setattr(inception, "int8_matmul_is_exact", lambda: exact)
    monkeypatch.setattr(inception, "int8_matmul_is_fast", lambda: fast)
    chosen, note = inception._int8_choice(setting)
    assert chosen is on and says in note


def test_int8_setting_must_be_true_false_or_auto():
    with pytest.raises(ValueError, match="'auto'"):
        inception.InceptionMixed5aPath(None, int8="sometimes")
