"""bfloat16 products with sound bounds (fastpaths.inceptionv1.products), against float64 references."""

from __future__ import annotations

import pytest
import torch

from autointerp.importance.fastpaths.inceptionv1.products import (
    BF16_REL,
    BoundedProduct,
    UpperProduct,
    bf16_matmul_is_accurate,
    round_up_bf16,
)

torch.set_num_threads(2)

needs_bf16 = pytest.mark.skipif(not bf16_matmul_is_accurate(), reason="bfloat16 products are inexact here")


def _operands(seed: int, k: int = 384, signed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands over six orders of magnitude (log-normal), so relative rounding matters everywhere."""
    gen = torch.Generator().manual_seed(seed)
    a = (torch.randn(96, k, generator=gen) * 3).exp() * 1e-3
    b = (torch.randn(k, 200, generator=gen) * 2).exp()
    if signed:
        a = a * torch.randn(96, k, generator=gen).sign()
        b = b * torch.randn(k, 200, generator=gen).sign()
    return a, b


@needs_bf16
@pytest.mark.parametrize("k", [384, 512, 1024])
def test_bounded_product_error_is_within_its_bound(k):
    a, b = _operands(k, k)
    prod = BoundedProduct(b, float32_rel=1e-4, bf16=True)  # wherever accurate, fast or not
    assert prod.bf16 and prod.rel == BF16_REL
    exact = a.double() @ b.double()
    scale = a.double().abs() @ b.double().abs()
    err = (prod(a).double() - exact).abs()
    assert bool((err <= prod.rel * scale).all())
    # it really is bfloat16: errors far above float32's, up to a sizeable share of the bound
    assert float((err / scale).max()) > 2e-3


def test_bounded_product_in_float32_when_asked():
    a, b = _operands(1)
    prod = BoundedProduct(b, float32_rel=1e-4, bf16=False)
    assert not prod.bf16 and prod.rel == 1e-4 and prod.b.dtype == torch.float32
    err = (prod(a).double() - a.double() @ b.double()).abs()
    assert bool((err <= 1e-4 * (a.double().abs() @ b.double().abs())).all())


def test_round_up_never_rounds_down():
    # values just above a bfloat16 number round to it under round-to-nearest; rounding up must not
    x = torch.tensor([1.0 + 2.0**-8 - 2.0**-20, 3.0 + 2.0**-20, 0.0, 1e-40, 2.0**-130, 1e30])
    assert bool((x.bfloat16().float() < x).any())  # the planted values do round down to nearest
    up = round_up_bf16(x)
    assert up.dtype == torch.bfloat16 and bool((up.float() >= x).all())
    assert bool((up.float() <= x * (1 + 2.0**-6) + 2.0**-125).all())


@needs_bf16
def test_upper_product_bounds_from_above():
    a, b = _operands(2, signed=False)
    # plant values that round-to-nearest would lower: every a just above a bfloat16 number
    a = a.bfloat16().float() * (1 + 2.0**-9)
    prod = UpperProduct(b, bf16=True)
    exact = a.double() @ b.double()
    got = prod(a).double()
    assert bool((got >= exact).all())
    assert float((got / exact).max()) < 1.04  # and not uselessly loose
    assert bool(((a.bfloat16() @ b.bfloat16()).double() < exact).any())  # plain bfloat16 would undershoot


def test_upper_product_rejects_negative_weights():
    with pytest.raises(ValueError, match="non-negative"):
        UpperProduct(-torch.ones(3, 2))


def test_accuracy_check_is_a_bool_and_consistent():
    ok = bf16_matmul_is_accurate()
    assert isinstance(ok, bool)
    if ok:  # float32 accumulation: a sum of 1,024 ones is exact (bfloat16 accumulation stops at 256)
        ones = torch.ones(1, 1024, dtype=torch.bfloat16)
        assert float(ones @ ones.T) == 1024.0


def test_bf16_choice_auto_needs_speed_as_well_as_accuracy(monkeypatch):
    from autointerp.importance.fastpaths.inceptionv1 import products

    b = torch.ones(8, 4)
    monkeypatch.setattr(products, "bf16_matmul_is_accurate", lambda: True)
    monkeypatch.setattr(products, "bf16_matmul_is_fast", lambda: False)
    assert not BoundedProduct(b, float32_rel=1e-4).bf16  # "auto": accurate but slow here
    assert BoundedProduct(b, float32_rel=1e-4).rel == 1e-4
    assert BoundedProduct(b, float32_rel=1e-4, bf16=True).bf16  # forced: accurate is enough
    assert not UpperProduct(b, bf16=False).bf16
    monkeypatch.setattr(products, "bf16_matmul_is_fast", lambda: True)
    assert UpperProduct(b).bf16
    with pytest.raises(ValueError, match="'auto'"):
        BoundedProduct(b, float32_rel=1e-4, bf16="yes")
