"""Benchmark: the rank-one tier's C loops (fastpaths.inceptionv1.native) against the PyTorch code
they replace (``torch.compile``d ``_fit`` and ``_pooled``), per pair, in one process, one thread.

Shapes are InceptionV1 ``mixed5b``'s: the 3×3 branch (192 bottleneck channels, 384 outputs) and the
5×5 branch (48, 128), 7×7 positions, blocks of 128 pairs as :class:`RankOneConv` runs them; random
data (the loops' speed does not depend on values). Each method runs ``--repeats`` blocks after a
warm-up, alternating, and the best of ``--rounds`` is kept. Results are compared too.

    python benchmarks/bench_native_loops.py [--rounds 5] [--repeats 20]

Last line: ``fit_torch_us: .. fit_native_us: .. pooled3_torch_us: .. pooled3_native_us: .. pooled5_torch_us: ..
pooled5_native_us: .. speedup_fit: .. speedup_pooled3: .. speedup_pooled5: ..`` (microseconds per pair)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from bench_importance import cpu_model  # run from benchmarks/ (its directory on sys.path)

from autointerp.importance.fastpaths.inceptionv1 import InceptionV1Mixed5a, lowrank, native
from autointerp.importance.fastpaths.inceptionv1.compiled import compiled_or_eager

PAIRS, H, W = 128, 7, 7


def us_per_pair(fn: Callable[[], object], repeats: int) -> float:
    """Microseconds per pair over ``repeats`` calls of ``PAIRS`` pairs."""
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats / PAIRS * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    InceptionV1Mixed5a().prepare_process()  # the process settings the stage's workers ask for
    torch.set_num_threads(1)
    if native.kernels() is None:
        raise SystemExit("native loops unavailable here (no C compiler, or AUTOINTERP_NATIVE=0): nothing to compare")
    gen = torch.Generator().manual_seed(0)
    n, images = 1024, 4
    rows, b_idx = torch.randperm(n, generator=gen)[:PAIRS], torch.randint(0, images, (PAIRS,), generator=gen)
    delta = torch.randn(n, H, W, generator=gen)
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {}
    check: dict[str, float] = {}

    dq = torch.randn(n, H, W, 192, generator=gen)
    order = torch.stack([torch.randperm(192, generator=gen) for _ in range(images)])
    fit = compiled_or_eager(lowrank._fit, (1,))

    def fit_torch() -> torch.Tensor:
        alpha = fit(dq, rows, delta)[0]
        return torch.empty_like(alpha).scatter_(1, order[b_idx], alpha)

    cases["fit"] = (fit_torch, lambda: native.rank_one_fit(dq, rows, delta, order, b_idx)[0])
    for name, k, pad, out in (("pooled3", 3, 1, 384), ("pooled5", 5, 2, 128)):
        taps = torch.randn(PAIRS, k * k, out, generator=gen) * 0.1
        r = torch.randn(images, H * W, out, generator=gen)
        extra = (r.abs().mean(1), torch.rand(PAIRS), torch.rand(PAIRS), torch.rand(out))
        pooled = compiled_or_eager(lowrank._pooled, (0,))
        cases[name] = (
            lambda t=taps, r=r, e=extra, k=k, p=pad, f=pooled: f(t, delta, rows, r, e[0], b_idx, *e[1:], 1e-6, k, p)[0],
            lambda t=taps, r=r, k=k, p=pad: native.rank_one_pooled(t, delta, rows, r, b_idx, k, p)[0],
        )  # fmt: skip
    times: dict[str, dict[str, float]] = {}
    for name, (torch_fn, native_fn) in cases.items():
        check[name] = float((torch_fn() - native_fn()).abs().max())  # also the warm-up (compiles)
        runs: dict[str, list[float]] = {"torch": [], "native": []}
        for _ in range(args.rounds):  # alternating: drift hits both alike
            runs["torch"].append(us_per_pair(torch_fn, args.repeats))
            runs["native"].append(us_per_pair(native_fn, args.repeats))
        times[name] = {m: min(v) for m, v in runs.items()}
    print(f"cpu: {cpu_model()}, one thread, PyTorch {torch.__version__}; blocks of {PAIRS} pairs, 7x7 positions")
    for name, diff in check.items():
        print(f"{name}: largest difference between the two {diff:.2e} (float32 rounding)")
    figures = [f"{name}_{m}_us: {t[m]:.1f}" for name, t in times.items() for m in ("torch", "native")]
    figures += [f"speedup_{name}: {t['torch'] / t['native']:.2f}" for name, t in times.items()]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
