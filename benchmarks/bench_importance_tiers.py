"""Benchmark: the exact InceptionV1 ``mixed5a`` path with different tiers, alternating in one process.

A shared VM's speed can drift by more than 1.5x within minutes, so two separate runs of
``bench_importance.py`` cannot resolve a 10 % change. This runs the fast path (bound pass + rank-1
path, all 832 features) on the same images with each tier configuration in turn, several rounds,
and reports each configuration's best and median wall time, and the baseline's (the first
configuration) over each other's. The model and images are ``bench_importance.py``'s.

    python benchmarks/bench_importance_tiers.py [--images 128] [--rounds 3] \
        [--configs "lowrank=0,sparse=1" "lowrank=1,sparse=1"]
    python benchmarks/bench_importance_tiers.py --threads 1 --configs native=0 native=1   # the C loops

Last line: ``<config>_best_s: X ... speedup_<config>: Y ...`` (speedups over the first config).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_importance import K, cpu_model, synthetic_case  # run from benchmarks/ (its directory on sys.path)

from autointerp.importance.engine import evaluate_segment
from autointerp.importance.fastpaths.inceptionv1 import InceptionV1Mixed5a
from autointerp.importance.fastpaths.inceptionv1.path import InceptionMixed5aPath


def parse_config(text: str) -> dict[str, bool | str]:
    """``"lowrank=1,sparse=0,int8=auto"`` -> keyword arguments of :class:`InceptionMixed5aPath`."""
    values = {"1": True, "0": False, "true": True, "false": False, "auto": "auto"}
    out: dict[str, bool | str] = {"int8": False}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in ("int8", "sparse", "lowrank", "native") or value not in values:
            raise SystemExit(
                f"--configs {text!r}: expected int8|sparse|lowrank=1|0|auto or native=1|0 items, got {item!r}"
            )
        if key == "native" and value == "auto":
            raise SystemExit(f"--configs {text!r}: native takes 1 or 0 (the C loops where they build, or PyTorch)")
        out[key] = values[value]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", nargs="+", default=["lowrank=0,sparse=1", "lowrank=1,sparse=1"])
    args = ap.parse_args()
    InceptionV1Mixed5a().prepare_process()  # the process settings the stage's workers ask for
    torch.set_num_threads(args.threads)
    case = synthetic_case(args.images, args.seed)
    feats = list(range(832))
    labels = case.labels.numpy()
    paths = {c: InceptionMixed5aPath(case.model, compile=True, **parse_config(c)) for c in args.configs}
    for path in paths.values():  # compile every configuration's graphs before timing
        evaluate_segment(path, case.acts[:32], labels[:32], feats, case.ablation, K, case.valid, batch_size=64)
    times: dict[str, list[float]] = {c: [] for c in args.configs}
    counts: dict[str, list[int]] = {}
    for r in range(args.rounds):
        for c, path in paths.items():
            t0 = time.perf_counter()
            tally, _ = evaluate_segment(path, case.acts, labels, feats, case.ablation, K, case.valid, batch_size=64)
            times[c].append(time.perf_counter() - t0)
            counts.setdefault(c, (tally.correct_to_wrong + tally.wrong_to_correct).tolist())
            print(f"round {r + 1}: {c}: {times[c][-1]:.1f}s", flush=True)
    base = args.configs[0]
    same = all(v == counts[base] for v in counts.values())
    print(f"cpu: {cpu_model()}, {args.threads} threads; images {args.images} from {case.source}")
    print(f"counts identical across configurations: {same}")
    for c in args.configs:
        print(f"{c}: best {min(times[c]):.1f}s, median {statistics.median(times[c]):.1f}s over {args.rounds} rounds")
    name = {c: c.replace(",", "_").replace("=", "") for c in args.configs}
    figures = [f"{name[c]}_best_s: {min(times[c]):.2f}" for c in args.configs]
    figures += [f"speedup_{name[c]}: {min(times[base]) / min(times[c]):.3f}" for c in args.configs[1:]]
    print(" ".join(figures))
    if not same:
        raise SystemExit("tallies differ between configurations: a tier changed a count")


if __name__ == "__main__":
    main()
