"""Exact importance of InceptionV1 ``mixed5a`` on a GPU: the generic engine's tail path on the device against
the same path on the CPU, same run, same images.

On a CUDA device ``importance.fast_path: auto`` leaves ``mixed5a`` to the generic engine, whose tail path runs
the ablated copies on the device (:class:`autointerp.importance.paths.TailPath`, 2048 copies per pass, float32).
This times that path as the stage runs it: chunks of ``--chunk`` features, each over all ``--images`` images
(bound pass, then the pairs the bound cannot settle). Model, images, trained-like labels and the channel-mean
ablation are ``bench_importance.py``'s (rescaled random InceptionV1; the ImageNet sample in ../shared when present).
The baseline is the same path on the CPU for the first ``--cpu-features`` features over the same images; their
counts must be identical. Rates are (image, feature) pairs decided per second; ``projected_min`` is the 832 x 50,000
pairs of the study's layer at the device's rate.

    python benchmarks/bench_gpu_importance.py [--device cuda] [--images 512] [--features 832] [--cpu-features 4]

Last line: ``device: NAME device_pairs_per_s: X cpu_pairs_per_s: Y speedup: Z projected_min: W
counts_identical: true|false``
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp.importance.engine import evaluate_segment
from autointerp.importance.paths import TailPath
from autointerp.models.inceptionv1 import InceptionV1Adapter

STUDY_PAIRS = 832 * 50_000


def _bench_importance() -> Any:
    """The sibling ``bench_importance.py`` (its synthetic case), loaded from this folder."""
    spec = importlib.util.spec_from_file_location("bench_importance", Path(__file__).with_name("bench_importance.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_importance"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench_importance = _bench_importance()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # GPU-only branch: wait for the queued kernels before reading the clock
        torch.cuda.synchronize(device)


def timed_counts(
    case: Any, device: torch.device, features: list[int], chunk: int, batch: int
) -> tuple[np.ndarray, float]:
    """(correct_to_wrong, wrong_to_correct) per feature and the seconds the tail path took on ``device``."""
    tail = InceptionV1Adapter(case.model).tail("mixed5a")  # the module the stage's tail path runs
    path = TailPath(tail, example=case.acts32[:1], device=device)
    print(f"{device.type}: {path.describe()}, {path.pair_batch} ablated copies per pass", flush=True)
    labels = case.labels.numpy()
    args = (case.ablation, bench_importance.K, case.valid, batch)
    evaluate_segment(path, case.acts[:8], labels[:8], features[:2], *args)  # warm-up: kernels, allocator
    _sync(device)
    counts = []
    t0 = time.perf_counter()
    for lo in range(0, len(features), chunk):
        tally, _ = evaluate_segment(path, case.acts, labels, features[lo : lo + chunk], *args)
        counts.append(np.stack([tally.correct_to_wrong, tally.wrong_to_correct], 1))
    _sync(device)
    return np.concatenate(counts), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--features", type=int, default=832)
    ap.add_argument("--cpu-features", type=int, default=4, help="features the CPU baseline scores (counts compared)")
    ap.add_argument("--chunk", type=int, default=32, help="features per unit (importance.chunk_size)")
    ap.add_argument("--batch", type=int, default=256, help="images per batch (importance.batch_size)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    case = bench_importance.synthetic_case(args.images, args.seed)
    print(f"InceptionV1 mixed5a (rescaled random init), {args.images} images ({case.source}), top-{bench_importance.K}")
    feats = list(range(args.features))
    got, seconds = timed_counts(case, device, feats, args.chunk, args.batch)
    device_rate = args.images * len(feats) / seconds
    print(f"{name}: {len(feats)} features x {args.images} images in {seconds:.2f}s", flush=True)
    base = feats[: args.cpu_features]
    want, cpu_seconds = timed_counts(case, torch.device("cpu"), base, args.chunk, args.batch)
    cpu_rate = args.images * len(base) / cpu_seconds
    print(f"cpu ({torch.get_num_threads()} threads): {len(base)} features x {args.images} images in {cpu_seconds:.2f}s")
    identical = bool(np.array_equal(got[: len(base)], want))
    flips = int(got.sum())
    print(f"flips counted on the device: {flips} (correct->wrong + wrong->correct over {len(feats)} features)")
    print(
        f"device: {name.replace(' ', '_')} device_pairs_per_s: {device_rate:.1f} cpu_pairs_per_s: {cpu_rate:.1f} "
        f"speedup: {device_rate / cpu_rate:.2f} projected_min: {STUDY_PAIRS / device_rate / 60:.2f} "
        f"counts_identical: {str(identical).lower()}"
    )


if __name__ == "__main__":
    main()
