"""Embedding throughput, and scoring every rater on 832 features × 12 images with one embedding per image.

1. open_clip ViT-B-32 (random init; no weights can be downloaded here) image-embedding throughput
   on CPU, against the weight-free handcrafted descriptor and a cache hit, on the same images.
2. A synthetic run of ``--features`` features (4 visualisations + 8 dataset examples each, the
   examples drawn from a shared dataset as in a real run) scored by every automatic rater
   (clip_coherence, clip_vis_match, clip_label, fid, mis, auto_I, random) through the rate stage.
   Baseline: the images the raters ask for (what a cache-less implementation would embed).
   Ours: images actually embedded, which must equal the distinct images needed.

    python benchmarks/bench_embeddings.py [--features 832] [--clip-images 48] [--embedder handcrafted]
        [--device cpu|cuda] [--batch-size 16]

Last line: ``clip_images_per_s: .. handcrafted_images_per_s: .. total_s: .. images_requested: ..
embeddings_computed: .. images_needed: .. embeddings_computed/images_needed: ..``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("AUTOINTERP_NO_PROGRESS", "1")

from autointerp.config import RunConfig
from autointerp.data.base import ImageDataset
from autointerp.embedders import create_embedder
from autointerp.embedders.cache import EmbeddingCache, image_key
from autointerp.runfolder import RunContext
from autointerp.stages.rate import run_rate

RATERS = ["random", "clip_coherence", "clip_vis_match", "clip_label", "fid", "mis", "auto_I"]


class RandomImages(ImageDataset):
    """``n`` random 64×64 images made of coloured blocks (cheap, all distinct)."""

    name = "bench"

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._blocks = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        self.labels = np.zeros(n, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._blocks)

    def image(self, index: int) -> np.ndarray:
        return np.kron(self._blocks[int(index)], np.ones((8, 8, 1), dtype=np.uint8))


def build_run(root: Path, n_features: int, n_images: int, seed: int = 0) -> tuple[RunContext, RandomImages]:
    """A run folder: activations, examples (top/bottom 8 from the dataset), 4 visualisations each."""
    rng = np.random.default_rng(seed)
    ds = RandomImages(n_images, seed)
    scores = rng.random((n_images, n_features), dtype=np.float32)
    (root / "activations").mkdir(parents=True)
    np.save(root / "activations" / "scores.npy", scores)
    np.save(root / "activations" / "dataset_index.npy", np.arange(n_images, dtype=np.int64))
    examples, vis = {}, {}
    written: set[int] = set()
    (root / "examples" / "images").mkdir(parents=True)
    for f in range(n_features):
        order = np.argsort(-scores[:, f])
        entry = {}
        for which, rows in (("top", order[:8]), ("bottom", order[::-1][:8])):
            entry[which] = []
            for i in rows:
                rel = f"examples/images/{int(i):05d}.png"  # one file per dataset image (shared, as links would be)
                if int(i) not in written:
                    Image.fromarray(ds.image(int(i))).save(root / rel, compress_level=1)
                    written.add(int(i))
                entry[which].append({"path": rel, "dataset_index": int(i), "activation": float(scores[i, f])})
        examples[str(f)] = entry
        paths = []
        (root / "visualizations" / f"{f:04d}").mkdir(parents=True)
        for j in range(4):
            rel = f"visualizations/{f:04d}/vis_{j}.png"
            img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(np.kron(img, np.ones((4, 4, 1), dtype=np.uint8))).save(root / rel, compress_level=1)
            paths.append(rel)
        vis[str(f)] = {"vis": paths}
    (root / "examples" / "index.json").write_text(json.dumps({"features": examples}))
    (root / "visualizations" / "index.json").write_text(json.dumps({"features": vis}))
    return RunContext(root, RunConfig.model_validate({"seed": seed})), ds


def throughput(embedder, images: list[np.ndarray], repeats: int = 1) -> float:
    """Images per second of ``embedder.embed`` (best of ``repeats``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        embedder.embed(images)
        best = min(best, time.perf_counter() - t0)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=832)
    parser.add_argument("--dataset-images", type=int, default=2000)
    parser.add_argument("--clip-images", type=int, default=48)
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="open_clip images per forward pass")
    parser.add_argument("--embedder", default="handcrafted", help="embedder type for the full scoring run")
    args = parser.parse_args()

    import torch

    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, device: {args.device}")
    # -- 1. throughput -----------------------------------------------------------------------
    rng = np.random.default_rng(0)
    imgs = [
        np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((8, 8, 1), dtype=np.uint8))
        for _ in range(args.clip_images)
    ]
    clip = create_embedder(
        {
            "type": "open_clip",
            "model": args.clip_model,
            "pretrained": None,
            "device": args.device,
            "batch_size": args.batch_size,
        }
    )
    clip.embed(imgs[:2])  # warm-up
    clip_ips = throughput(clip, imgs)
    hand_ips = throughput(create_embedder("handcrafted"), imgs, repeats=2)
    cache = EmbeddingCache(clip)
    cache.embed(imgs)
    t0 = time.perf_counter()
    cache.embed(imgs)
    cached_ips = len(imgs) / (time.perf_counter() - t0)
    print(
        f"open_clip {args.clip_model} random init: {clip_ips:.1f} images/s; handcrafted: {hand_ips:.1f} images/s; "
        f"open_clip cache hit: {cached_ips:.0f} images/s"
    )

    # -- 2. every rater on N features × 12 images -----------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run, ds = build_run(Path(tmp) / "run", args.features, args.dataset_images)
        print(f"built a run of {args.features} features in {time.perf_counter() - t0:.1f}s")
        spec = {"type": args.embedder}
        if args.embedder == "open_clip":
            spec.update(model=args.clip_model, pretrained=None, device=args.device)
        base = create_embedder(spec)
        requested: list[str] = []
        computed: list[str] = []
        original = EmbeddingCache.get

        def counting_get(self, keys):  # every look-up a rater makes = what a cache-less rater would embed
            requested.extend(k for k in keys if not k.startswith("text:"))
            return original(self, keys)

        inner = base._embed_batch

        def counting_embed(images):
            computed.extend(image_key(im) for im in images)
            return inner(images)

        base._embed_batch = counting_embed
        EmbeddingCache.get = counting_get
        try:
            t0 = time.perf_counter()
            run_rate(run, raters=RATERS, embedder=base, dataset=ds)
            total = time.perf_counter() - t0
        finally:
            EmbeddingCache.get = original
        needed = len(set(requested))
        ratio = len(computed) / needed
        print(
            f"scored {len(RATERS)} raters on {args.features} features in {total:.1f}s with {args.embedder}; "
            f"images requested by raters {len(requested)}, distinct images needed {needed}, "
            f"embeddings computed {len(computed)} (distinct {len(set(computed))})"
        )
        print(
            f"estimated open_clip {args.clip_model} embedding time for those images on this machine: "
            f"{needed / clip_ips:.0f}s (a cache-less design: {len(requested) / clip_ips:.0f}s)"
        )
    print(
        f"clip_images_per_s: {clip_ips:.2f} handcrafted_images_per_s: {hand_ips:.1f} total_s: {total:.1f} "
        f"images_requested: {len(requested)} embeddings_computed: {len(computed)} images_needed: {needed} "
        f"embeddings_computed/images_needed: {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
