"""Benchmark: exact mean-ablation importance, naive per-feature full forward vs the fast path.

Model: InceptionV1 (lucent) studied at ``mixed5a``. No pretrained weights can be downloaded here,
so it is :func:`fastpaths.inceptionv1.synthetic.rescaled_inceptionv1`: He-normal convolutions (so
activations keep their scale through the depth) and a classifier scaled so logits have a trained
network's spread (std 3). Each image's "true class" is the output at a rank drawn from a trained
network's accuracy profile (top-1 0.45 / top-5 0.66 / top-10 0.74), so margins to the top-10
boundary look like a trained network's. Images: the real ImageNet sample in ../shared when present
(random images otherwise). The cache is float16 and memory-mapped, as in the stage.

Both methods run in this one run on the same images: naive = one full forward pass of the whole
model per (feature, image batch) with a hook, in this process with ``--threads`` threads (few
features; its rate counts the ablated passes only, not the one unablated pass it needs first, which
832 x 50,000 ablations need once); fast = the stage's engine (bound pass + rank-1 path) on all 832
features, in units of a segment of images as the stage runs it, in ``--workers`` worker processes
(default as the stage: one per CPU, one thread each; ``--workers 1``: in this process with
``--threads`` threads). The stage's 50,000 images make 25 segments of 2,048; the benchmark's few
hundred are split into four segments per worker (``--segment-images`` overrides), so the workers
stay busy until near the end as in the stage (the time a worker waits for the last unit still
counts). Counts are compared on the naive features.

    python benchmarks/bench_importance.py [--images 64] [--naive-features 3] [--threads 2] [--workers auto]

Last line: ``naive_ablated_per_s: X fast_ablated_per_s: Y speedup: Z skipped_fraction: W max_count_diff: D``
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autointerp.importance.ablation import Ablation, FeatureTally
from autointerp.importance.fastpaths.inceptionv1 import InceptionV1Mixed5a
from autointerp.importance.fastpaths.inceptionv1.path import InceptionMixed5aPath, inception_parts, reference_tail
from autointerp.importance.fastpaths.inceptionv1.quantized import int8_matmul_is_exact, int8_matmul_is_fast
from autointerp.importance.fastpaths.inceptionv1.synthetic import (
    hooked_forward_logits,
    rescaled_inceptionv1,
    trained_like_labels,
)
from autointerp.importance.naive import naive_importance
from autointerp.importance.workers import (
    Unit,
    UnitJob,
    UnitResult,
    WorkerPool,
    available_cpus,
    evaluate_unit,
    resolve_workers,
    warm_up,
)  # fmt: skip
from autointerp.stages.importance import peak_rss_mb

SHARED = Path(os.environ.get("AUTOINTERP_SHARED", Path(__file__).resolve().parents[2] / "shared"))
K = 10


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is unavailable)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        flags = info.get("flags", "").split()
        isa = "VNNI" if any("vnni" in f for f in flags) else "no VNNI"
        isa += ", AMX-INT8" if "amx_int8" in flags else ""  # int8 / bfloat16 matrix tiles (Sapphire Rapids on)
        return f"{info['model name']} (family {info.get('cpu family')} model {info.get('model')}, {isa})"
    except (OSError, KeyError):
        pass
    import platform

    return platform.processor() or "unknown CPU"


def int8_fast() -> bool:
    """Whether int8 products are exact and faster than float32 here (timed once, in this process)."""
    return int8_matmul_is_exact() and int8_matmul_is_fast()


def load_images(n: int, seed: int) -> tuple[torch.Tensor, str]:
    files = sorted(glob.glob(str(SHARED / "data" / "imagenet_sample_224" / "*" / "*.JPEG")))
    if len(files) >= n:
        from PIL import Image

        pick = np.random.default_rng(seed).choice(len(files), n, replace=False)
        arrs = [np.asarray(Image.open(files[i]).convert("RGB").resize((224, 224))) for i in sorted(pick)]
        return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0, "ImageNet sample (../shared)"
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 224, 224, generator=gen), "random images (../shared absent)"


@dataclass
class SyntheticCase:
    """The benchmark's images, model, float16 memory-mapped activation cache, labels and ablation."""

    images: torch.Tensor
    source: str
    model: torch.nn.Module
    valid: torch.Tensor
    acts: np.ndarray  # (N, 832, 7, 7) float16, memory-mapped
    acts32: torch.Tensor  # the same values as float32
    logits: torch.Tensor
    labels: torch.Tensor
    ablation: Ablation


def synthetic_case(n_images: int, seed: int) -> SyntheticCase:
    """Rescaled random InceptionV1, its ``mixed5a`` cache as the activations stage writes it (float16,
    memory-mapped), trained-like labels and the channel-mean ablation (see the module doc)."""
    images, source = load_images(n_images, seed)
    model = rescaled_inceptionv1(seed, example=images[:8] * 255 - 117)
    valid = torch.zeros(1008, dtype=torch.bool)
    valid[1:1001] = True
    tmp = tempfile.mkdtemp(prefix="bench_importance_")
    cache = np.lib.format.open_memmap(os.path.join(tmp, "acts.npy"), mode="w+", dtype=np.float16,
                                      shape=(len(images), 832, 7, 7))  # fmt: skip
    cap: list[torch.Tensor] = []
    h = model.mixed5a.register_forward_hook(lambda _m, _i, out: cap.append(out))
    with torch.no_grad():
        for s in range(0, len(images), 16):
            cap.clear()
            model(images[s : s + 16] * 255 - 117)
            cache[s : s + 16] = cap[0].numpy().astype(np.float16)
    h.remove()
    cache.flush()
    acts = np.load(os.path.join(tmp, "acts.npy"), mmap_mode="r")
    acts32 = torch.from_numpy(np.array(acts, dtype=np.float32))
    with torch.no_grad():
        z = reference_tail(model, acts32)
    labels = trained_like_labels(z, valid, seed)
    ablation = Ablation.from_means(acts32.double().mean((0, 2, 3)).float().numpy(), None, "channel", (832, 7, 7))
    return SyntheticCase(images, source, model, valid, acts, acts32, z, labels, ablation)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--naive-features", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--segment-images",
        type=int,
        default=None,
        help="images per segment (a unit of work, all features at once); default: four segments "
        "per worker (the stage: 2,048, configs/inceptionv1_mixed5a.yaml)",
    )
    ap.add_argument(
        "--workers",
        default="auto",
        help="worker processes for the fast path, one thread each: auto (one per CPU, as the stage) or N "
        "(1: this process, --threads threads)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true", help="eager PyTorch only (no torch.compile)")
    ap.add_argument(
        "--no-native",
        action="store_true",
        help="no C loops (fastpaths.inceptionv1.native): the rank-one tier's fit and pooling in PyTorch",
    )
    ap.add_argument(
        "--int8",
        choices=("auto", "true", "false"),
        default="auto",
        help="the int8 tier: auto (where faster than float32 here, as the stage), true (wherever "
        "exact, even where slow), false (float32 convolutions only)",
    )
    for tier, what, auto in (
        ("sparse", "the sparse exact tier", "the int8 tier is"),
        ("lowrank", "the rank-one tier", "the int8 tier is"),
    ):
        ap.add_argument(
            f"--{tier}",
            choices=("auto", "true", "false"),
            default="auto",
            help=f"{what}: auto (where {auto} off, as the stage), true or false",
        )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # the fast path's process settings (glibc keeps freed memory: fastpaths.inceptionv1.memory), asked for
    # here too, so the naive method runs under the same allocator as the fast one
    fast_path = InceptionV1Mixed5a()
    fast_path.prepare_process()

    case = synthetic_case(args.images, args.seed)
    images, model, valid, acts, acts32 = case.images, case.model, case.valid, case.acts, case.acts32
    z, labels, ablation, source = case.logits, case.labels, case.ablation, case.source

    ranked = z.masked_fill(~valid, -1e9).argsort(1, descending=True)
    top10 = float((ranked[:, :K] == labels[:, None]).any(1).float().mean())

    # naive: full forward per feature (with the cache substituted so both use identical activations)
    naive_feats = [int(f) for f in np.random.default_rng(args.seed).choice(832, args.naive_features, replace=False)]
    # (its one unablated pass over the images is not counted: 832 x 50,000 ablations need it once)
    forward = hooked_forward_logits(model)
    naive_seconds: dict[str, float] = {}
    c0 = time.process_time()
    with torch.no_grad():
        naive = naive_importance(forward, model.mixed5a, images, labels, naive_feats, ablation, K, valid,
                                 batch_size=16, cached=acts32, seconds=naive_seconds)  # fmt: skip
    c_naive = (time.process_time() - c0) * len(naive_feats) / (len(naive_feats) + 1)  # ablated share
    t_naive = naive_seconds["ablated"]
    naive_rate = len(naive_feats) * len(images) / t_naive

    # fast: bound pass + rank-1 path over all 832 features, segment by segment as the stage does.
    # torch.compile happens once per process (cached on disk by PyTorch): warmed up before timing,
    # reported separately (a one-off cost, negligible against 832 x 50,000)
    choice = {"auto": "auto", "true": True, "false": False}
    options = dict(compile=not args.no_compile, int8=choice[args.int8], sparse=choice[args.sparse],
                   lowrank=choice[args.lowrank], native=not args.no_native)  # fmt: skip
    setting = "auto" if args.workers == "auto" else int(args.workers)
    n = len(images)
    per_segment = args.segment_images or -(-n // (4 * (available_cpus() if setting == "auto" else setting)))
    segments = [(s, min(s + per_segment, n)) for s in range(0, n, per_segment)]
    workers, threads = resolve_workers(setting, len(segments))
    units = [Unit(tuple(range(832)), s, e) for s, e in segments]
    job = UnitJob(acts.filename, labels.numpy(), ablation, valid, K, batch_size=64, threads=threads, warm_up=True)
    results: dict[Unit, UnitResult] = {}
    t0 = time.perf_counter()
    if workers > 1:
        # the int8 speed check once, here, as the stage does (every worker then decides alike)
        parts = inception_parts(model)
        job.make_path = functools.partial(InceptionMixed5aPath, parts, int8_fast=int8_fast(), **options)
        job.prepare_process = fast_path.prepare_process  # each worker asks for it, as in the stage
        with WorkerPool(job, workers) as pool:  # started and warmed up (compiled) before the timing
            description = pool.description
            t_warm = time.perf_counter() - t0
            t0, f0 = time.perf_counter(), minor_faults()
            pool.run(units, lambda unit, result: results.__setitem__(unit, result))
            t_fast = time.perf_counter() - t0
    else:
        # torch.compile happens once per process (cached on disk by PyTorch): warmed up before timing,
        # reported separately (a one-off cost, negligible against 832 x 50,000)
        path = InceptionMixed5aPath(model, **options)
        warm_up(path, acts, job)
        description = path.describe()
        t_warm = time.perf_counter() - t0
        t0, f0 = time.perf_counter(), minor_faults()
        for unit in units:
            results[unit] = evaluate_unit(path, acts, job, unit)
        t_fast = time.perf_counter() - t0
    faults_fast = minor_faults() - f0  # this process only
    tally = FeatureTally(np.asarray(range(832)))
    for unit in units:  # in segment order, as the stage adds them
        part = FeatureTally(tally.features, n_images=unit.end - unit.start)
        for name, value in results[unit].sums.items():
            setattr(part, name, value)
        tally.add(part)
    done = list(results.values())
    fallback = sum(r.fallback for r in done)
    t_bound = sum(r.bound_pass_seconds for r in done)
    c_fast = sum(r.cpu_seconds for r in done)
    tiers = {t: sum(r.tiers.get(t, 0) for r in done) for t in done[0].tiers}
    seconds = {t: sum(r.seconds.get(t, 0.0) for r in done) for t in done[0].seconds}
    fast_rate = 832 * n / t_fast
    c2w, w2c = tally.correct_to_wrong, tally.wrong_to_correct
    bounded, exact, skipped = int(tally.n_bounded.sum()), int(tally.n_exact.sum()), int(tally.n_skipped.sum())

    diff = max(
        int(np.abs(c2w[naive_feats] - naive.correct_to_wrong).max()),
        int(np.abs(w2c[naive_feats] - naive.wrong_to_correct).max()),
    )
    pairs = 832 * len(images)
    print(f"model: rescaled random InceptionV1 mixed5a (He init, logit std 3); trained-like labels, top-10 {top10:.2f}")
    print(f"images: {len(images)} from {source}; cache float16 memory-mapped; threads {args.threads}")
    compiled = "eager" if args.no_compile else "torch.compile"
    tier_notes = "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in description.items()
                           if k.endswith(("_tier", "_loops")))  # fmt: skip
    print(f"fast path elementwise core: {compiled}; {tier_notes}")
    where = f"{workers} worker processes x {threads} thread" if workers > 1 else f"this process, {threads} threads"
    print(f"fast path runs in {where} (start-up and warm-up {t_warm:.1f}s, not timed)")
    print(
        f"cpu: {cpu_model()}, {available_cpus()} CPUs, PyTorch {torch.__version__} "
        f"(vector capability {torch.backends.cpu.get_cpu_capability()})"
    )
    print(f"naive: {len(naive_feats)} features x {len(images)} images in {t_naive:.1f}s, this process, "
          f"{torch.get_num_threads()} threads (+ {naive_seconds['baseline']:.1f}s for the unablated pass, "
          "not counted)")  # fmt: skip
    print(f"fast: 832 features x {len(images)} images in {t_fast:.1f}s ({len(segments)} segments; bound pass "
          f"{t_bound:.1f}s summed over workers); pairs: "
          f"{skipped / pairs:.3f} skipped by the cheap bound, {bounded / pairs:.3f} decided by the "
          f"finer bound, {exact / pairs:.3f} evaluated exactly ({fallback} boundary fallbacks)")  # fmt: skip
    print("pairs per tier of the rank-1 path: " + ", ".join(f"{k} {v}" for k, v in tiers.items()))
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in seconds.items())
    busy = t_fast * workers  # worker-seconds: what the parts below add up to
    print(f"fast path time by part (summed over {workers} worker(s), {busy:.1f} worker-seconds): bound pass "
          f"{t_bound:.1f}s, {parts}, rest (cache reads, per-batch state, tallies, idle at the end) "
          f"{busy - t_bound - sum(seconds.values()):.1f}s")  # fmt: skip
    print(f"flips found: {int(c2w.sum())} correct->wrong, {int(w2c.sum())} wrong->correct over {pairs} pairs")
    # CPU time is steadier than wall time on a shared machine (other processes do not inflate it as much)
    print(f"cpu time: naive {c_naive:.1f}s, fast {c_fast:.1f}s; cpu-time speedup "
          f"{(c_naive / (len(naive_feats) * len(images))) / (c_fast / pairs):.1f}")  # fmt: skip
    # page faults: thousands per chunk mean the allocator hands memory back (fastpaths.inceptionv1.memory)
    print(f"minor page faults during the fast path (this process): {faults_fast}")
    hours = 832 * 50_000 / fast_rate / 3600
    memory = f"peak RSS {peak_rss_mb():.0f} MiB"
    if workers > 1:
        worker_peak = max(r.peak_rss_mb for r in done)
        memory += f" here + {workers} workers of at most {worker_peak:.0f} MiB each"
    print(f"extrapolated 832 x 50,000: {hours:.2f} h at this rate; {memory}")
    print(
        f"naive_ablated_per_s: {naive_rate:.1f} fast_ablated_per_s: {fast_rate:.1f} "
        f"speedup: {fast_rate / naive_rate:.1f} "
        f"skipped_fraction: {skipped / pairs:.4f} max_count_diff: {diff}"
    )


if __name__ == "__main__":
    main()
