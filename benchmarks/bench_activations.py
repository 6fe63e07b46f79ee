"""Activation-pass throughput vs plain inference, same images, same run.

Random-init InceptionV1 (the real architecture) at 224 on ../shared/data/imagenet_sample_64.npz
(64 -> 224 bilinear, as the study). Baseline: ``model(x)`` over the same batches (same data loading).
Ours: the full activation stage (head+tail, memory-mapped cache, means, scores, top-k, accuracy).
Trials alternate baseline/ours and the best of each is kept, to damp noise from other processes.

    python benchmarks/bench_activations.py [--images 256] [--batch 32] [--trials 2]

Last line: ``plain_images_per_s: X pass_images_per_s: Y overhead_pct: Z``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from autointerp.config import load_config
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOINTERP_SHARED", REPO.parent / "shared"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--trials", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("AUTOINTERP_NO_PROGRESS", "1")
    torch.manual_seed(0)
    overrides = [
        "model.pretrained=false",
        f"dataset.path={SHARED / 'data/imagenet_sample_64.npz'}",
        f"dataset.max_images={args.images}",
        f"label_mapping.map_clsloc={SHARED / 'reference/imagenet/map_clsloc.txt'}",
        f"activations.batch_size={args.batch}",
        "device=cpu",
    ]
    cfg = load_config(REPO / "configs/inceptionv1_mixed5a.yaml", overrides)
    plain_best = ours_best = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext.create(cfg, Path(tmp) / "run")
        model, ds = ctx.model, ctx.dataset
        n = len(ds)
        for trial in range(args.trials):
            t0 = time.perf_counter()
            with torch.no_grad():
                for lo in range(0, n, args.batch):
                    x = ds.batch(range(lo, min(lo + args.batch, n)), 224)
                    model.module(model.preprocess(x))
            plain = time.perf_counter() - t0
            t0 = time.perf_counter()
            run_activations(ctx, overwrite=True)
            ours = time.perf_counter() - t0
            plain_best, ours_best = min(plain_best, plain), min(ours_best, ours)
            print(f"trial {trial}: plain {n / plain:.2f} img/s, activation pass {n / ours:.2f} img/s")
    plain_rate, ours_rate = n / plain_best, n / ours_best
    overhead = 100.0 * (ours_best / plain_best - 1.0)
    print(f"images: {n} batch: {args.batch} threads: {torch.get_num_threads()}")
    print(f"plain_images_per_s: {plain_rate:.2f} pass_images_per_s: {ours_rate:.2f} overhead_pct: {overhead:.1f}")


if __name__ == "__main__":
    main()
