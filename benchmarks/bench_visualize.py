"""Feature-visualisation throughput: lucent's ``render_vis`` (one feature at a time) vs our batched
renderer, same model, same settings, same run.

Random-init InceptionV1 (the real architecture; no pretrained weights offline), layer ``mixed5a``,
the study's defaults: 128 px FFT + decorrelated images, standard transforms, Adam lr 0.05, 4 images
per feature with diversity weight 100 (objective ``channel - 1e2 * diversity``).

* lucent: ``render_vis(model, objective, param.image(128, batch=4))`` for one feature after another,
  exactly as a lucent user calls it (it upsamples to 224 and runs the whole network with weight grads).
* ours: :func:`autointerp.vis.render.render` on ``--batch-features`` features × 4 images per batch
  (forward stops at mixed5a, frozen weights, fast redirected-ReLU backward, per-image transforms).

Throughput is image-steps per second (images × optimisation steps / wall time); trials alternate the
two so load from other processes hits both alike, and the best trial of each is kept. The projection
is for all 832 features × 4 images × 512 steps on this machine.

    python benchmarks/bench_visualize.py [--steps 8] [--lucent-features 2] [--features 8]
        [--batch-features 8] [--trials 2] [--sweep] [--device cpu|cuda]

``--device cuda`` puts the model on the GPU for both (lucent then makes its images there itself); the
projection is then for that card. Name the card with the figures (the first line prints it).

Last line: ``lucent_image_steps_per_s: X ours_image_steps_per_s: Y speedup: Z``.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import torch

N_FEATURES, N_IMAGES, N_STEPS = 832, 4, 512


def _lucent_rate(model: torch.nn.Module, features: list[int], steps: int) -> float:
    from lucent.optvis import objectives, param, render

    t0 = time.perf_counter()
    for f in features:
        obj = objectives.channel("mixed5a", f) - 1e2 * objectives.diversity("mixed5a")
        render.render_vis(
            model, obj, lambda: param.image(128, batch=N_IMAGES), thresholds=(steps,), progress=False, show_image=False
        )
    return len(features) * N_IMAGES * steps / (time.perf_counter() - t0)


def _ours_rate(
    head: torch.nn.Module, features: list[int], steps: int, batch_features: int, device: str = "cpu", **kw: object
) -> float:
    from autointerp.vis.render import Job, RenderSettings, render

    settings = RenderSettings(steps=steps, **kw)
    t0 = time.perf_counter()
    for lo in range(0, len(features), batch_features):
        render(head, [Job(f) for f in features[lo : lo + batch_features]], settings, seed=0, device=device)
    return len(features) * N_IMAGES * steps / (time.perf_counter() - t0)


def _hours(rate: float) -> float:
    return N_FEATURES * N_IMAGES * N_STEPS / rate / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="optimisation steps timed per feature")
    ap.add_argument("--lucent-features", type=int, default=2)
    ap.add_argument("--features", type=int, default=8, help="features rendered by ours per trial")
    ap.add_argument("--batch-features", type=int, default=4, help="features per batch (the config default)")
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="also time ours at other batch sizes / without fast kernels")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU's figures")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # lucent/kornia deprecation chatter
    from autointerp.models.inceptionv1 import InceptionV1Adapter, load_inceptionv1

    torch.manual_seed(0)
    adapter = InceptionV1Adapter(load_inceptionv1(pretrained=False))
    adapter.to(args.device)
    model, head = adapter.module, adapter.head("mixed5a")
    card = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    print(
        f"InceptionV1 (random init) mixed5a, 128 px, {N_IMAGES} images/feature, {args.steps} steps timed; "
        f"device {card}; torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    )
    dev = args.device
    _lucent_rate(model, [0], 1)  # warm-up (allocator, oneDNN primitives / CUDA kernels)
    _ours_rate(head, list(range(args.batch_features)), 1, args.batch_features, dev)
    lucent, ours = [], []
    for trial in range(args.trials):
        feats = list(range(trial * args.features, (trial + 1) * args.features))
        lucent.append(_lucent_rate(model, feats[: args.lucent_features], args.steps))
        ours.append(_ours_rate(head, feats, args.steps, args.batch_features, dev))
        print(
            f"trial {trial}: lucent {lucent[-1]:.2f} image-steps/s, ours {ours[-1]:.2f} image-steps/s "
            f"(load {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    if args.sweep:
        for label, kw in (
            ("1 feature/batch", {"bf": 1}),
            ("4 features/batch", {"bf": 4}),
            ("16 features/batch", {"bf": 16}),
            ("no fast kernels", {"fast_kernels": False}),
            ("channels-last", {"channels_last": True}),
        ):
            bf = kw.pop("bf", args.batch_features)
            rate = _ours_rate(head, list(range(max(bf, args.features))), args.steps, bf, dev, **kw)
            print(f"  ours, {label}: {rate:.2f} image-steps/s", flush=True)
    best_l, best_o = max(lucent), max(ours)
    print(
        f"projection, 832 features x 4 images x 512 steps on this machine: lucent {_hours(best_l):.0f} h, "
        f"ours {_hours(best_o):.0f} h ({best_o / N_IMAGES * 3600 / N_STEPS:.1f} features/h)"
    )
    print(f"lucent_image_steps_per_s: {best_l:.3f} ours_image_steps_per_s: {best_o:.3f} speedup: {best_o / best_l:.2f}")


if __name__ == "__main__":
    main()
