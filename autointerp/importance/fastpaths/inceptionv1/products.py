"""Matrix products by a fixed matrix in bfloat16, with sound error bounds (float32 where bfloat16 is not exact enough).

The InceptionV1 ``mixed5a`` path (:mod:`.path`) multiplies every undecided
pair's branch changes by the classifier's weights: (pairs, 384–512) @ (384–512, 1008) per tier,
a noticeable share of its time in float32. In bfloat16 (8-bit significand, float32 accumulation on
CPUs with AVX-512 BF16 or AMX) these products run faster, and their error is bounded:

* :class:`BoundedProduct` — ``a @ b`` with ``|result - a @ b| <= rel · (|a| @ |b|)`` elementwise. With
  both operands rounded to bfloat16 (8-bit significand: relative error ``2⁻⁸`` each), float32
  accumulation and a bfloat16 result (another ``2⁻⁸``), ``rel`` is ``3·2⁻⁸`` plus accumulation and
  second-order terms: :data:`BF16_REL`.
* :class:`UpperProduct` — an upper bound of ``a @ b`` for non-negative operands: both rounded *up* to
  bfloat16 and the result scaled up by more than its own rounding and accumulation error.

:func:`bf16_matmul_is_accurate` checks once that bfloat16 products here really accumulate in float32
(a sum of 1,024 ones, which bfloat16 accumulation leaves at 256, and random operands against the
bound), and :func:`bf16_matmul_is_fast` that they are faster than float32 here (CPUs without
bfloat16 instructions run them as slow reference loops); where not, both classes compute in float32
with float32's bound instead.
"""

from __future__ import annotations

import functools

import torch

from autointerp.importance.fastpaths.inceptionv1.speed import speedup

#: ``|bf16 product - exact| <= BF16_REL · |a| @ |b|``: 3·2⁻⁸ = 0.01172, plus float32 accumulation over
#: at most 1,024 terms (6.1e-5) and second-order terms (1.6e-5), rounded up
BF16_REL = 1.2e-2
_UP = 1.0 + 2.0**-7  # > 1 / ((1 - 2⁻⁸)·(1 - accumulation error)): undoes one bfloat16 rounding down
_TINY = 2.0**-126  # smallest normal float: keeps rounding up in the normal range (relative bound valid)


@functools.lru_cache(maxsize=1)
def bf16_matmul_is_accurate() -> bool:
    """True when bfloat16 matrix products here accumulate in float32 and meet :data:`BF16_REL`."""
    try:
        ones = torch.ones(1, 1024, dtype=torch.bfloat16)
        if float(ones @ ones.T) != 1024.0:  # bfloat16 accumulation would stop at 256
            return False
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(64, 512, generator=gen).exp().bfloat16()  # positive: no cancellation hides errors
        b = torch.randn(512, 96, generator=gen).bfloat16()
        got = (a @ b).double()
        exact = a.double() @ b.double()
        # the result's own rounding (2⁻⁸) plus float32 accumulation (512·2⁻²⁴ = 3e-5)
        return bool(((got - exact).abs() <= (2.0**-8 + 1e-4) * (a.double().abs() @ b.double().abs())).all())
    except (RuntimeError, NotImplementedError):
        return False


@functools.lru_cache(maxsize=1)
def bf16_matmul_is_fast() -> bool:
    """True when :func:`bf16_matmul_is_accurate` and a bfloat16 product of the classifier products'
    shape ((pairs, 384) @ (384, 1008)) runs at least 1.3× faster than in float32 here (timed once)."""
    if not bf16_matmul_is_accurate():
        return False
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(128, 384, generator=gen), torch.randn(384, 1008, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return speedup(lambda: a16 @ b16, lambda: a @ b) >= 1.3


def round_up_bf16(x: torch.Tensor) -> torch.Tensor:
    """bfloat16 values ``>= x`` for non-negative ``x`` (relative excess below ``2⁻⁶``)."""
    return (x.float() * _UP + _TINY).bfloat16()


def _use_bf16(bf16: bool | str) -> bool:
    """``bf16``: True (wherever accurate), False, or "auto" (wherever accurate and faster)."""
    if bf16 not in (True, False, "auto"):
        raise ValueError(f"bf16: expected True, False or 'auto', got {bf16!r}")
    if bf16 == "auto":
        return bf16_matmul_is_fast()
    return bool(bf16) and bf16_matmul_is_accurate()


class BoundedProduct:
    """``a @ b`` for a fixed ``b`` (K, N), float32 result, error at most ``rel · (|a| @ |b|)`` elementwise.

    bfloat16 when ``bf16`` and :func:`bf16_matmul_is_accurate` (``bf16="auto"``, the default: and
    :func:`bf16_matmul_is_fast`), with ``rel`` = :data:`BF16_REL`; else float32 with
    ``rel = float32_rel`` (the caller's float32 bound for its sizes).
    """

    def __init__(self, b: torch.Tensor, float32_rel: float, bf16: bool | str = "auto") -> None:
        self.bf16 = _use_bf16(bf16)
        self.b = (b.bfloat16() if self.bf16 else b.float()).contiguous()
        self.rel = BF16_REL if self.bf16 else float32_rel

    def __call__(self, a: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """``a @ b``, or only its ``columns`` (indices into ``b``'s N columns)."""
        b = self.b if columns is None else self.b.index_select(1, columns)
        if self.bf16:
            return (a.bfloat16() @ b).float()
        return a.float() @ b


class UpperProduct:
    """An upper bound of ``a @ b`` (float32) for non-negative ``a`` and a fixed non-negative ``b`` (K, N).

    bfloat16 as :class:`BoundedProduct` chooses it; in float32 the caller's safety factor must cover
    the (relative ``K·2⁻²⁴``) rounding of its sums of non-negative terms.
    """

    def __init__(self, b: torch.Tensor, bf16: bool | str = "auto") -> None:
        if bool((b < 0).any()):
            raise ValueError("UpperProduct needs a non-negative matrix")
        self.bf16 = _use_bf16(bf16)
        self.b = (round_up_bf16(b) if self.bf16 else b.float()).contiguous()

    def __call__(self, a: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """The upper bound of ``a @ b``, or of only its ``columns`` (indices into ``b``'s N columns)."""
        b = self.b if columns is None else self.b.index_select(1, columns)
        if self.bf16:
            return (round_up_bf16(a) @ b).float() * _UP
        return a.float() @ b
