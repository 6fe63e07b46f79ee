"""compiled_or_eager: a compiler failure falls back to eager PyTorch with one warning, same results."""

from __future__ import annotations

import pytest
import torch

from autointerp.importance.fastpaths.inceptionv1 import compiled
from autointerp.importance.fastpaths.inceptionv1.compiled import compiled_or_eager


@pytest.fixture(autouse=True)
def _fresh_reports(monkeypatch):
    monkeypatch.setattr(compiled, "_reported", set())


def _fused(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.relu(a + w[:, None]).mean(1)


def test_compiler_failure_falls_back_to_eager_once(monkeypatch):
    calls = []

    def broken_compile(fn, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("no C++ compiler found\nlong traceback")

    monkeypatch.setattr(torch, "compile", broken_compile)
    f = compiled_or_eager(_fused)
    a, w = torch.randn(5, 7), torch.randn(5)
    with pytest.warns(RuntimeWarning, match="torch.compile of _fused failed .*no C\\+\\+ compiler found\\); running"):
        out = f(a, w)
    torch.testing.assert_close(out, _fused(a, w))
    torch.testing.assert_close(f(a * 2, w), _fused(a * 2, w))  # no second attempt, no second warning
    assert len(calls) == 1 and calls[0] == {"dynamic": True}
    assert not f.is_compiled()


def test_the_same_failure_is_reported_once_for_all_functions(monkeypatch, recwarn):
    def broken_compile(fn, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    a, w = torch.randn(5, 7), torch.randn(5)
    for _ in range(3):
        torch.testing.assert_close(compiled_or_eager(_fused)(a, w), _fused(a, w))
    assert [type(r.message) for r in recwarn.list] == [RuntimeWarning]


def test_genuine_errors_still_raise(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)  # "compiles" to itself
    f = compiled_or_eager(_fused)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="size"):
        f(torch.randn(5, 7), torch.randn(4))  # shape mismatch: raised again by the eager function


def test_one_row_calls_run_eagerly_without_compiling(monkeypatch):
    """Sizes 0 and 1 are specialised by PyTorch: such calls must not trigger (slow) recompilation."""
    compiled_calls = []

    def recording_compile(fn, **kwargs):
        def run(*args):
            compiled_calls.append(len(args[0]))
            return fn(*args)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    f = compiled_or_eager(_fused, batch_args=(0, 1))
    a, w = torch.randn(5, 7), torch.randn(5)
    torch.testing.assert_close(f(a[:1], w[:1]), _fused(a[:1], w[:1]))
    torch.testing.assert_close(f(a[:0], w[:0]), _fused(a[:0], w[:0]))
    assert compiled_calls == []
    torch.testing.assert_close(f(a, w), _fused(a, w))
    assert compiled_calls == [5]
    # a batch in another dimension: (argument, dimension)
    g = compiled_or_eager(_fused, batch_args=((0, 1),))
    torch.testing.assert_close(g(a[:, :1], w), _fused(a[:, :1], w))
    assert compiled_calls == [5]
    torch.testing.assert_close(g(a[:1], w[:1]), _fused(a[:1], w[:1]))
    assert compiled_calls == [5, 1]


def test_compiling_turns_duck_shaping_off():
    """Dynamic sizes that happen to be equal (pairs == channels) must not be tied by a guard."""
    from torch.fx.experimental import _config as fx_config

    f = compiled_or_eager(_fused)
    a, w = torch.randn(6, 7), torch.randn(6)
    torch.testing.assert_close(f(a, w), _fused(a, w))
    assert fx_config.use_duck_shape is False
