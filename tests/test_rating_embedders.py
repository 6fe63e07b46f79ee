"""Embedders and the embedding cache: handcrafted, open_clip (random init), torchvision, tflite
(the real Coral embedder on real ImageNet images), offline errors, each image embedded once."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from rater_harness import concept_image, make_world

from autointerp.embedders import Embedder, create_embedder, list_embedders
from autointerp.embedders.cache import EmbeddingCache, image_key
from autointerp.embedders.handcrafted import render_phrase
from autointerp.errors import ConfigError, DataError, WeightsError

CORAL = "models/coral/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"


class CountingEmbedder(Embedder):
    """Records every image it embeds (mean colour as the 'embedding')."""

    kind = "counting_test"

    def __init__(self) -> None:
        super().__init__()
        self.id = "counting-test"
        self.seen: list[str] = []

    def _embed_batch(self, images):
        self.seen += [image_key(im) for im in images]
        return np.stack([im.reshape(-1, 3).mean(0) for im in images])


def cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_registry_and_config_errors():
    assert {"handcrafted", "open_clip", "torchvision", "timm", "tflite"} <= set(list_embedders())
    with pytest.raises(ConfigError, match="missing key 'type'"):
        create_embedder({"model": "x"})
    with pytest.raises(ConfigError, match=r"unknown embedder 'clip2'; valid: .*handcrafted"):
        create_embedder({"type": "clip2"})
    with pytest.raises(ConfigError, match="unknown key 'sise' for type 'handcrafted'; allowed keys: size"):
        create_embedder({"type": "handcrafted", "sise": 3})


def test_handcrafted_separates_colours_and_is_deterministic():
    rng = np.random.default_rng(0)
    emb = create_embedder("handcrafted")
    red1, red2, blue = concept_image(0, rng), concept_image(0, rng), concept_image(2, rng)
    a, b, c = emb.embed([red1, red2, blue])
    assert cos(a, b) > cos(a, c) + 0.1
    np.testing.assert_array_equal(emb.embed([red1])[0], a)
    with pytest.raises(ValueError, match="expected uint8"):
        emb.embed([red1.astype(np.float32)])


def test_handcrafted_text_prototypes_point_at_matching_images():
    emb = create_embedder("handcrafted")
    assert list(emb.known_text(["red stripes", "a golden retriever", "blue star"])) == [True, False, True]
    assert render_phrase("a golden retriever") is None
    rng = np.random.default_rng(1)
    text = emb.encode_text(["red stripes", "green stripes", "blue stripes"])
    imgs = emb.embed([concept_image(c, rng) for c in (0, 1, 2)])
    sims = (imgs / np.linalg.norm(imgs, axis=1, keepdims=True)) @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    assert list(sims.argmax(axis=1)) == [0, 1, 2]


def test_cache_embeds_each_image_once_and_persists(tmp_path):
    rng = np.random.default_rng(2)
    imgs = [concept_image(i % 3, rng) for i in range(6)]
    counter = CountingEmbedder()
    cache = EmbeddingCache(counter, tmp_path)
    first = cache.embed(imgs + imgs[:2])  # duplicates in one call
    again = cache.embed(list(reversed(imgs)))
    assert len(counter.seen) == 6 and cache.computed == 6
    np.testing.assert_array_equal(again, first[:6][::-1])
    cache.flush()
    reopened = EmbeddingCache(CountingEmbedder(), tmp_path)
    np.testing.assert_array_equal(reopened.embed(imgs), first[:6])
    assert reopened.computed == 0 and reopened.embedder.seen == []
    # a different embedder id never reuses these rows
    other = CountingEmbedder()
    other.id = "counting-test-v2"
    assert EmbeddingCache(other, tmp_path).embed(imgs[:1]) is not None and len(other.seen) == 1


def test_corrupt_cache_is_a_one_line_error(tmp_path):
    cache = EmbeddingCache(CountingEmbedder(), tmp_path)
    cache.file.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="corrupt embedding cache"):
        EmbeddingCache(CountingEmbedder(), tmp_path)


def test_rating_context_shares_embeddings_between_files_and_dataset(tmp_path):
    world = make_world(tmp_path, n_features=3, n_images=60)
    counter = CountingEmbedder()
    ctx = world.context(embedder=counter)
    paths = ctx.example_paths(0)
    ctx.embed_paths(paths)
    n = len(counter.seen)
    ctx.embed_dataset(ctx.example_dataset_indices(0))  # the same pixels, read from the dataset
    ctx.embed_paths(paths)
    assert len(counter.seen) == n == len({image_key(ctx.load_image(p)) for p in paths})


@pytest.fixture(scope="module")
def clip_random():
    """open_clip ViT-B-32 with a seeded random init (no weights can be downloaded here)."""
    return create_embedder({"type": "open_clip", "model": "ViT-B-32", "pretrained": None, "device": "cpu"})


def test_open_clip_random_init_embeds_images_and_text(clip_random):
    rng = np.random.default_rng(3)
    out = clip_random.embed([concept_image(0, rng, 40), concept_image(1, rng, 64)])
    assert out.shape == (2, 512) and np.isfinite(out).all()
    assert clip_random.encode_text(["a photo of a dog", "stripes"]).shape == (2, 512)
    assert clip_random.id == "open_clip:ViT-B-32:random-init-seed0:224"


def test_open_clip_missing_weights_fail_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="open_clip ViT-B-32 pretrained='laion2b_s34b_b79k': weights unavailable"):
        create_embedder({"type": "open_clip", "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    assert time.perf_counter() - t0 < 30
    with pytest.raises(WeightsError, match="checkpoint file .*missing.pt not found"):
        create_embedder({"type": "open_clip", "model": "ViT-B-32", "pretrained": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match="is not a tag of ViT-B-32"):
        create_embedder({"type": "open_clip", "model": "ViT-B-32", "pretrained": "no_such_tag"})
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        create_embedder({"type": "open_clip", "model": "ViT-Q-99"})


def test_open_clip_loads_a_local_checkpoint(tmp_path, clip_random):
    """A checkpoint file gives the saved model's embeddings (the same network as the random init
    that was saved), and its id names the file's content, not the seed."""
    import torch

    ckpt = tmp_path / "clip.pt"
    torch.save(clip_random.module.state_dict(), ckpt)
    emb = create_embedder(
        {"type": "open_clip", "model": "ViT-B-32", "pretrained": str(ckpt), "device": "cpu", "seed": 99}
    )
    assert emb.id.startswith("open_clip:ViT-B-32:file-")
    img = concept_image(2, np.random.default_rng(0), 64)
    np.testing.assert_allclose(emb.embed([img])[0], clip_random.embed([img])[0], rtol=1e-4, atol=1e-4)


def test_torchvision_backbone_random_init_and_offline_weights(monkeypatch, tmp_path):
    emb = create_embedder({"type": "torchvision", "model": "resnet18", "device": "cpu"})
    out = emb.embed([concept_image(0, np.random.default_rng(0), 48)])
    assert out.shape == (1, 512)
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr("autointerp.embedders.torch_backbones.network_reachable", lambda host, **kw: False)
    with pytest.raises(WeightsError, match="unreachable"):
        create_embedder({"type": "torchvision", "model": "resnet18", "weights": "DEFAULT"})


def test_tflite_coral_embedder_on_real_photos(shared_dir):
    from PIL import Image

    emb = create_embedder({"type": "tflite", "path": str(shared_dir / CORAL)})
    assert emb.input_size == 224 and emb.id.startswith("tflite:mobilenet_v1")
    parrot = np.asarray(Image.open(shared_dir / "models/coral/parrot.jpg").convert("RGB"))
    hopper = np.asarray(Image.open(shared_dir / "models/coral/grace_hopper.bmp").convert("RGB"))
    e = emb.embed([parrot, hopper, parrot[:, ::-1].copy()])
    assert e.shape == (3, 1024) and (e >= 0).all()  # dequantised average-pool features
    assert cos(e[0], e[2]) > cos(e[0], e[1])  # a mirrored parrot is closer to the parrot than Grace Hopper
    with pytest.raises(WeightsError, match="not found"):
        create_embedder({"type": "tflite", "path": str(shared_dir / "nope.tflite")})


def test_coral_coherence_one_semantic_group_beats_random_sets(shared_dir):
    """Real embedder, real ImageNet images (one per class): 8-image sets of dog breeds or of birds
    are more coherent than random 8-image sets from the same 1000 images."""
    from raters.clip_coherence import coherence_scores

    data = np.load(shared_dir / "data/imagenet_sample_64.npz", allow_pickle=True)
    images = data["data"].reshape(-1, 3, 64, 64).transpose(0, 2, 3, 1)
    sorted_index = np.argsort(np.argsort(data["wnids"]))  # class index in sorted-wnid order
    dogs = np.flatnonzero((sorted_index >= 151) & (sorted_index <= 268))
    birds = np.flatnonzero(
        ((sorted_index >= 7) & (sorted_index <= 24))
        | ((sorted_index >= 80) & (sorted_index <= 100))
        | ((sorted_index >= 127) & (sorted_index <= 146))
    )
    assert len(dogs) == 118 and len(birds) == 59
    rng = np.random.default_rng(0)
    pool = rng.choice(len(images), 160, replace=False)
    group_sets = [rng.choice(dogs, 8, replace=False) for _ in range(6)] + [
        rng.choice(birds, 8, replace=False) for _ in range(6)
    ]
    random_sets = [rng.choice(len(images), 8, replace=False) for _ in range(12)]
    needed = np.unique(np.concatenate([pool, *group_sets, *random_sets]))
    emb = create_embedder({"type": "tflite", "path": str(shared_dir / CORAL)})
    vecs = dict(zip(needed.tolist(), emb.embed([images[i] for i in needed]), strict=True))
    stack = lambda idx: np.stack([vecs[int(i)] for i in idx])  # noqa: E731
    res = coherence_scores([stack(s) for s in group_sets + random_sets], stack(pool), n_null=500, seed=0)
    group, rand = res["q4"][:12], res["q4"][12:]
    assert group.min() > np.median(rand)
    assert np.mean(res["p_value"][:12] < 0.05) >= 0.75
    assert np.mean(res["p_value"][12:] < 0.05) <= 0.25
    assert res["coherence"][:12].mean() > res["coherence"][12:].mean() + 0.03


def test_unreachable_hub_switches_offline_mode_on_for_the_load_only(monkeypatch):
    import huggingface_hub.constants as constants

    from autointerp.embedders import _offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_offline, "network_reachable", lambda host, **kw: False)
    with _offline.hub_offline_if_unreachable() as offline:
        assert offline and constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    assert constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setattr(_offline, "network_reachable", lambda host, **kw: True)
    with _offline.hub_offline_if_unreachable() as offline:
        assert not offline and constants.HF_HUB_OFFLINE is False


def test_timm_backbone_random_init_checkpoint_and_offline_pretrained(monkeypatch, tmp_path):
    import torch

    emb = create_embedder({"type": "timm", "model": "resnet18", "device": "cpu"})
    img = concept_image(1, np.random.default_rng(0), 48)
    out = emb.embed([img])
    assert out.shape == (1, 512) and emb.id == "timm:resnet18:random-init-seed0:224"
    ckpt = tmp_path / "r18.pth"
    torch.save(emb.module.state_dict(), ckpt)
    loaded = create_embedder({"type": "timm", "model": "resnet18", "checkpoint": str(ckpt), "seed": 5, "device": "cpu"})
    np.testing.assert_allclose(loaded.embed([img]), out, rtol=1e-4, atol=1e-5)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsError, match="timm resnet18: weights unavailable"):
        create_embedder({"type": "timm", "model": "resnet18", "pretrained": True})
    assert time.perf_counter() - t0 < 30
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_embedder({"type": "timm", "model": "resnet_nope"})
