"""Bootstrap CIs and permutation p-values: vectorised (ours) vs a per-resample scipy loop (baseline).

832 features (the study's layer size), synthetic importance with ties and a correlated score; the same
resample indices and permutations for both. Checks the two agree, then times each (best of trials).

    python benchmarks/bench_report_stats.py [--n 832] [--boot 2000] [--trials 2]

Last line: ``loop_s: X vectorised_s: Y speedup: Z spearman_ci_lo: .. spearman_ci_hi: ..``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats

from autointerp.analysis.stats import _bootstrap_correlations, correlation_test

REFS = {
    "spearman": lambda x, y: stats.spearmanr(x, y).statistic,
    "kendall": lambda x, y: stats.kendalltau(x, y).statistic,
    "pearson": lambda x, y: stats.pearsonr(x, y).statistic,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=832)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = np.round(rng.gamma(2.0, 8.0, args.n))  # integer importance: many ties, as the study's
    y = np.clip(x / x.max() + rng.normal(0, 0.2, args.n), 0, 1)
    idx = rng.integers(0, args.n, size=(args.boot, args.n))

    best_loop, best_vec = np.inf, np.inf
    for _ in range(args.trials):
        t = time.perf_counter()
        loop = {m: np.array([f(x[i], y[i]) for i in idx]) for m, f in REFS.items()}
        best_loop = min(best_loop, time.perf_counter() - t)
        t = time.perf_counter()
        vec = {m: _bootstrap_correlations(x, y, m, idx) for m in REFS}
        best_vec = min(best_vec, time.perf_counter() - t)
        for m in REFS:
            np.testing.assert_allclose(vec[m], loop[m], atol=1e-10)
    t = time.perf_counter()
    full = {m: correlation_test(x, y, m, n_boot=args.boot, n_perm=args.boot) for m in REFS}
    full_s = time.perf_counter() - t
    print(
        f"{args.n} features, {args.boot} resamples, 3 correlations; full correlation_test incl. "
        f"{args.boot} permutations each: {full_s:.2f}s"
    )
    lo, hi = full["spearman"]["ci95"]
    print(
        f"loop_s: {best_loop:.3f} vectorised_s: {best_vec:.3f} speedup: {best_loop / best_vec:.1f} "
        f"full_test_s: {full_s:.2f} spearman_ci_lo: {lo:.4f} spearman_ci_hi: {hi:.4f}"
    )


if __name__ == "__main__":
    main()
