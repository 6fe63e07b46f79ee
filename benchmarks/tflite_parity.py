"""Parity and speed of the TFLite → torch conversion on the real Coral MobileNetV2, vs LiteRT itself.

On the 1000 real ImageNet images of ``../shared/data/imagenet_sample_224`` (224 centre crops, one per class):

* top-1 agreement of the converted float torch model with the int8 interpreter's own predictions (argmax
  of its uint8 softmax output; ``agreement_top1_tie_aware`` also counts torch's class as agreeing when the
  interpreter's quantised output has a tie at the top);
* top-1 / top-5 accuracy of both models (labels: class folder wnid → sorted-wnid index + 1 =
  ``imagenet_labels.txt`` line; output 0 = background is never predicted);
* images/s of both on this machine (the interpreter runs one image per call, XNNPACK, ``--threads``);
* the study's protocol for the torch model: ``imagenet_sample_64.npz`` (64×64) upscaled bilinearly to 224,
  top-1/5/10 (as the pipeline feeds it: unrounded floats), and the interpreter on the same upscaled images
  rounded to uint8 — agreement there is measured with the torch model on the same uint8-rounded images;
* the same agreements with ``simulate_quantization=True`` (activations rounded to their int grids).

    python benchmarks/tflite_parity.py [--images 1000] [--threads 2]

Last line: ``agreement_top1: X tflite_top1: .. tflite_top5: .. torch_top1: .. torch_top5: ..``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOINTERP_SHARED", REPO.parent / "shared"))
MODEL = SHARED / "models/coral/mobilenet_v2_1.0_224_quant.tflite"


def top1(scores: np.ndarray) -> np.ndarray:
    """Argmax over the real classes (output 0, background, excluded)."""
    s = scores.astype(np.float64).copy()
    s[:, 0] = -np.inf
    return s.argmax(1)


def topk_hits(scores: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    """Bool per image: the target is among the k highest scores (output 0, background, excluded)."""
    s = scores.astype(np.float64).copy()
    s[:, 0] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return (top == targets[:, None]).any(axis=1)


def torch_logits(adapter, x_batches) -> tuple[np.ndarray, float]:
    out = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in x_batches:
            out.append(adapter.forward(x).numpy())
    return np.concatenate(out), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="evenly spaced subset of the 1000 images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    os.environ.setdefault("AUTOINTERP_NO_PROGRESS", "1")
    torch.set_num_threads(args.threads)

    from autointerp.config import LabelMappingConfig
    from autointerp.data.imagefolder import ImageFolderDataset
    from autointerp.data.labels import model_targets
    from autointerp.data.npz import NpzDataset
    from autointerp.models.tflite import TFLiteAdapter, run_tflite_interpreter

    adapter = TFLiteAdapter(MODEL)
    ds = ImageFolderDataset(SHARED / "data/imagenet_sample_224")
    idx = np.unique(np.linspace(0, len(ds) - 1, args.images).round().astype(int))
    images = np.stack(ds.images(idx))
    targets = ds.labels[idx] + 1  # sorted-wnid position + 1 (0 = background)
    labels_txt = (SHARED / "models/coral/imagenet_labels.txt").read_text().splitlines()
    assert labels_txt[0].strip().lower() == "background" and len(labels_txt) == 1001
    print(f"{len(idx)} images at 224; labels: sorted wnid + 1, e.g. {ds.class_keys[0]} -> {labels_txt[1]!r}")

    t0 = time.perf_counter()
    probs = run_tflite_interpreter(MODEL, images, num_threads=args.threads, show_progress=False)
    t_tfl = time.perf_counter() - t0
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    batches = [x_all[i : i + args.batch] for i in range(0, len(x_all), args.batch)]
    logits, t_torch = torch_logits(adapter, batches)
    simulated = TFLiteAdapter(MODEL, simulate_quantization=True)
    logits_sim, t_sim = torch_logits(simulated, batches)
    agree_sim = float((top1(logits_sim) == top1(probs)).mean())

    p = probs.copy()
    p[:, 0] = -np.inf
    tfl_pred = p.argmax(1)
    lg = logits.copy()
    lg[:, 0] = -np.inf
    torch_pred = lg.argmax(1)
    agree = float((tfl_pred == torch_pred).mean())
    tied = p == p.max(1, keepdims=True)
    n_ties = int((tied.sum(1) > 1).sum())
    agree_ties = float(tied[np.arange(len(p)), torch_pred].mean())
    acc = {
        f"{name}_top{k}": float(topk_hits(s, targets, k).mean())
        for name, s in (("tflite", probs), ("torch", logits))
        for k in (1, 5)
    }
    print(
        f"interpreter: {len(idx) / t_tfl:.1f} images/s; torch (float, batch {args.batch}): "
        f"{len(idx) / t_torch:.1f} images/s; {args.threads} threads (2-core machine shared with other jobs)"
    )
    print(
        f"top-1 agreement {agree:.3f} (tie-aware {agree_ties:.3f}; {n_ties} images with a tie at the top of "
        f"the interpreter's uint8 softmax)"
    )
    print("accuracy at 224: " + " ".join(f"{k}={v:.3f}" for k, v in acc.items()))
    print(f"simulate_quantization: top-1 agreement {agree_sim:.3f}, {len(idx) / t_sim:.1f} images/s")

    # the study's protocol: 64x64 images upscaled bilinearly to 224 (the pipeline's dataset.batch)
    npz = NpzDataset(SHARED / "data/imagenet_sample_64.npz")
    mapping = LabelMappingConfig(
        type="sorted_wnid", map_clsloc=str(SHARED / "reference/imagenet/map_clsloc.txt"), offset=1
    )
    t64 = model_targets(npz, mapping, adapter.num_outputs, adapter.valid_outputs.numpy())
    n64 = len(npz) if args.images >= len(npz) else args.images
    sel = np.unique(np.linspace(0, len(npz) - 1, n64).round().astype(int))
    up = [npz.batch(sel[i : i + args.batch], 224) for i in range(0, len(sel), args.batch)]
    logits64, _ = torch_logits(adapter, up)
    up_uint8 = torch.cat(up).mul(255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    probs64 = run_tflite_interpreter(MODEL, up_uint8, num_threads=args.threads, show_progress=False)
    study = {
        f"{name}_top{k}": float(topk_hits(s, t64[sel], k).mean())
        for name, s in (("torch", logits64), ("tflite", probs64))
        for k in (1, 5, 10)
    }
    p64 = probs64.copy()
    p64[:, 0] = -np.inf
    l64 = logits64.copy()
    l64[:, 0] = -np.inf
    agree64_float_input = float((p64.argmax(1) == l64.argmax(1)).mean())
    x_u8 = [
        torch.from_numpy(up_uint8[i : i + args.batch]).permute(0, 3, 1, 2).float() / 255
        for i in range(0, len(up_uint8), args.batch)
    ]
    agree64 = float((top1(torch_logits(adapter, x_u8)[0]) == top1(probs64)).mean())
    agree64_sim = float((top1(torch_logits(simulated, x_u8)[0]) == top1(probs64)).mean())
    print(
        "study protocol (64 -> 224 bilinear): "
        + " ".join(f"{k}={v:.3f}" for k, v in study.items())
        + f"; top-1 agreement on the same uint8 images {agree64:.3f} (simulate_quantization {agree64_sim:.3f}; "
        f"{agree64_float_input:.3f} when torch gets the unrounded upscale)"
    )
    print(
        f"agreement_top1: {agree:.4f} tflite_top1: {acc['tflite_top1']:.4f} tflite_top5: {acc['tflite_top5']:.4f} "
        f"torch_top1: {acc['torch_top1']:.4f} torch_top5: {acc['torch_top5']:.4f} "
        f"agreement_top1_tie_aware: {agree_ties:.4f} torch64_top1: {study['torch_top1']:.4f} "
        f"torch64_top5: {study['torch_top5']:.4f} torch64_top10: {study['torch_top10']:.4f} "
        f"agreement64_top1: {agree64:.4f} agreement_sim_top1: {agree_sim:.4f} agreement64_sim_top1: {agree64_sim:.4f} "
        f"tflite_images_per_s: {len(idx) / t_tfl:.1f} torch_images_per_s: {len(idx) / t_torch:.1f}"
    )


if __name__ == "__main__":
    main()
