"""The embedded demo world: generator, purity answer key, demo CNN."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from autointerp.demo import purity as P
from autointerp.demo import synthetic as S
from autointerp.errors import ConfigError, DataError, WeightsError

# --------------------------------------------------------------------------------------------- generator


@pytest.fixture(scope="module")
def world() -> S.SyntheticDataset:
    return S.SyntheticDataset(n_images=400, seed=3)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world):
    again = S.SyntheticDataset(n_images=400, seed=3)
    assert again.images_array.tobytes() == world.images_array.tobytes()
    for name in S.CONCEPT_VALUES:
        assert np.array_equal(again.concepts[name], world.concepts[name])
    other = S.SyntheticDataset(n_images=400, seed=4)
    assert other.images_array.tobytes() != world.images_array.tobytes()


def test_image_does_not_depend_on_dataset_size(world):
    # image i is rendered from its own (seed, i) generator; the concept table is redrawn per size,
    # so render the same concepts directly
    img = S.render_index(world.concepts, 17, seed=3)
    assert np.array_equal(img, world.image(17))


def test_dataset_contract(world):
    assert len(world) == 400
    img = world.image(0)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert world.labels.dtype == np.int64 and world.labels.shape == (400,)
    assert set(world.labels.tolist()) == set(range(S.N_CLASSES))
    # balanced classes: 400 = 25 * 16
    assert np.all(np.bincount(world.labels, minlength=S.N_CLASSES) == 25)
    for i in range(0, 400, 37):
        key = world.class_keys[int(world.labels[i])]
        assert key == f"{world.concepts['colour'][i]}_{world.concepts['shape'][i]}"
    for name, values in S.CONCEPT_VALUES.items():
        assert set(world.concepts[name].tolist()) <= set(values)
    x = world.batch([0, 1, 2], 64)
    assert x.shape == (3, 3, 64, 64) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.allclose(x[1], torch.from_numpy(world.image(1)).permute(2, 0, 1).float() / 255)


def _render(**concepts: str) -> np.ndarray:
    spec = S.ImageSpec(**{"texture": "solid", "position": "centre", "size": "large", "background": "dark", **concepts})
    return S.render(spec, np.random.default_rng(0))


@pytest.mark.parametrize("colour", list(S.COLOURS))
def test_colour_shows_at_the_shape_centre_and_background_elsewhere(colour):
    img = _render(shape="circle", colour=colour).astype(int)
    centre = img[30:34, 30:34].reshape(-1, 3).mean(0)
    expected = np.asarray(S.COLOURS[colour])
    assert np.all(np.abs(centre - expected) <= 20)  # colour jitter is at most ±18
    corner = img[:4, :4].reshape(-1, 3).mean(0)
    assert corner.max() < 70  # dark background


@pytest.mark.parametrize("position", list(S.POSITIONS))
def test_position_puts_the_shape_where_it_says(position):
    img = _render(shape="square", colour="red", size="small", position=position).astype(int)
    redness = img[:, :, 0] - img[:, :, 1]
    ys, xs = np.nonzero(redness > 100)
    fx, fy = S.POSITIONS[position]
    assert abs(xs.mean() / 64 - fx) < 0.06 and abs(ys.mean() / 64 - fy) < 0.06


def test_shapes_have_their_expected_area_and_textures_darken_part_of_the_fill():
    area = {shape: float(S.shape_mask(shape, 64, 32, 32, 15).sum()) for shape in S.SHAPES}
    assert area["circle"] == pytest.approx(np.pi * 15**2, rel=0.02)
    # circumradius r → side r√2; PIL fills boundary pixels too, which adds ~1 supersampled pixel per side
    assert area["square"] == pytest.approx(2 * (15 * 0.92) ** 2, rel=0.06)
    assert area["star"] < area["triangle"] < area["square"] < area["circle"]
    solid = _render(shape="circle", colour="yellow", texture="solid", background="light")
    for texture in ("stripes", "dots", "checker"):
        img = _render(shape="circle", colour="yellow", texture=texture, background="light")
        inside = img[22:42, 22:42].reshape(-1, 3).astype(int)
        dark = (inside.sum(1) < 0.7 * solid[22:42, 22:42].reshape(-1, 3).astype(int).sum(1).mean()).mean()
        assert 0.1 < dark < 0.6, texture


def test_build_synthetic_dataset_options_and_errors():
    ds = S.build_synthetic_dataset({"n_images": 20, "seed": 5})
    assert len(ds) == 20 and ds.seed == 5
    with pytest.raises(ConfigError, match="dataset.n_imgs"):
        S.build_synthetic_dataset({"n_imgs": 5})
    with pytest.raises(ConfigError, match="dataset.seed"):
        S.build_synthetic_dataset({"seed": "zero"})
    with pytest.raises(ConfigError, match="n_images"):
        S.build_synthetic_dataset({"n_images": 0})


# --------------------------------------------------------------------------------------------- purity


def _table() -> dict[str, np.ndarray]:
    # 10 images; shape: 5 circles, 5 squares; colour: red, green, blue cycling (red at 0,3,6,9)
    return {
        "shape": np.array(["circle"] * 5 + ["square"] * 5),
        "colour": np.array(["red", "green", "blue"] * 3 + ["red"]),
        "constant": np.array(["x"] * 10),
    }


def test_purity_hand_computed_cases():
    c = _table()
    # all circles: shape fraction 1 → score 1
    assert P.purity(c, [0, 1, 2, 3, 4]) == pytest.approx(1.0)
    # {0, 3, 5}: circle 2/3 vs base 1/2 → (2/3-1/2)/(1/2) = 1/3; red 2/3 vs base 4/10 → (2/3-.4)/.6 = 4/9
    assert P.purity(c, [0, 3, 5]) == pytest.approx(4 / 9)
    best = P.best_concept(c, [0, 3, 5])
    assert (best["concept"], best["value"]) == ("colour", "red")
    assert best["fraction"] == pytest.approx(2 / 3) and best["base_rate"] == pytest.approx(0.4)
    assert best["per_concept"] == pytest.approx({"colour": 4 / 9, "shape": 1 / 3})
    assert "constant" not in best["per_concept"]  # no information, skipped
    # a set mirroring the dataset's base rates exactly scores 0 on shape
    assert P.concept_scores(c, [0, 5])[0]["score"] <= 0.5 + 1e-12
    assert P.best_concept(c, [0, 5])["per_concept"]["shape"] == pytest.approx(0.0)


def test_purity_against_a_brute_force_reference():
    rng = np.random.default_rng(0)
    c = {"a": rng.integers(0, 3, 200).astype(str), "b": rng.integers(0, 5, 200).astype(str)}
    for _ in range(20):
        idx = rng.choice(200, size=8, replace=False)
        ref = max(
            (np.mean(c[n][idx] == v) - np.mean(c[n] == v)) / (1 - np.mean(c[n] == v))
            for n in c
            for v in np.unique(c[n])
        )
        assert P.purity(c, idx) == pytest.approx(max(ref, 0.0))
        assert 0.0 <= P.purity(c, idx) <= 1.0


def test_purity_table_and_errors():
    c = _table()
    table = P.purity_table(c, np.array([[0, 1, 2], [5, 6, 7], [0, 3, 9]]))
    assert table[0]["purity"] == pytest.approx(1.0) and table[0]["concept"] == "shape"
    assert table[1]["value"] == "square"
    assert (table[2]["concept"], table[2]["value"], table[2]["purity"]) == ("colour", "red", pytest.approx(1.0))
    with pytest.raises(DataError, match="out of range"):
        P.purity(c, [0, 10])
    with pytest.raises(DataError, match="shape"):
        P.purity_table(c, np.array([0, 1]))
    with pytest.raises(DataError, match="no concept table"):
        P.purity({}, [0])


def test_planted_coherent_set_shares_the_most_concepts(world):
    idx, shared = P.planted_coherent_set(world.concepts, k=8, seed=1)
    assert len(idx) == 8 and len(set(idx.tolist())) == 8
    for name, value in shared.items():
        assert np.all(world.concepts[name][idx] == value)
    # no larger concept subset has a combination with 8 members
    keys = np.stack([world.concepts[n] for n in S.CONCEPT_VALUES], axis=1)
    n_shared = len(shared)
    from itertools import combinations

    for subset in combinations(range(keys.shape[1]), n_shared + 1):
        _, counts = np.unique(keys[:, subset], axis=0, return_counts=True)
        assert counts.max() < 8
    assert n_shared >= 2
    assert P.purity(world.concepts, idx) == pytest.approx(1.0)
    assert np.array_equal(P.planted_coherent_indices(world.concepts, 8, seed=1), idx)
    # k = 1 trivially shares everything
    one, shared_all = P.planted_coherent_set(world.concepts, k=1, seed=0)
    assert len(one) == 1 and set(shared_all) == set(S.CONCEPT_VALUES)
    # the random control is far less pure on average
    rand = np.mean([P.purity(world.concepts, P.random_indices(world.concepts, 8, s)) for s in range(20)])
    assert rand < 0.6


# --------------------------------------------------------------------------------------------- model

from autointerp.demo import model  # noqa: E402 - grouped with the tests that use it

# reduced training for speed: learns colour (a colour-only classifier scores 1/4) and starts on shape;
# the default settings (4000 images x 8 epochs) reach > 0.9, checked by the slow test at the end
TINY = {"n_train": 1000, "n_val": 400, "epochs": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    adapter = model.create_demo_cnn(pretrained=True, cache_dir=cache, verbose=False, **TINY)
    return adapter, cache


def test_reduced_training_beats_chance_on_held_out_images(trained, world):
    adapter, cache = trained
    assert adapter.summary["val_accuracy"] > 0.2  # chance is 1/16
    with torch.no_grad():
        pred = adapter.forward(world.batch(range(len(world)), 64)).argmax(1).numpy()
    assert (pred == world.labels).mean() > 0.2  # seed 3 never overlaps the training seeds
    files = list(cache.glob("demo_cnn_*.pt"))
    assert len(files) == 1 and not list(cache.glob(".*tmp*"))


def test_cached_weights_are_reused_without_training(trained, monkeypatch):
    adapter, cache = trained
    monkeypatch.setattr(model, "train_demo_cnn", lambda *a, **k: pytest.fail("retrained despite cache"))
    again = model.create_demo_cnn(cache_dir=cache, verbose=False, **TINY)
    for (name, a), (_, b) in zip(adapter.module.state_dict().items(), again.module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert again.summary == adapter.summary


def test_corrupt_cache_is_retrained(tmp_path):
    settings = model.TrainSettings(n_train=64, n_val=16, epochs=1)
    path = model.cache_path(settings, tmp_path)
    path.write_bytes(b"not a checkpoint")
    adapter = model.create_demo_cnn(cache_dir=tmp_path, verbose=False, n_train=64, n_val=16, epochs=1)
    assert adapter.summary["settings"]["n_train"] == 64
    assert torch.load(path, weights_only=True)["summary"] == adapter.summary


def test_training_is_deterministic(tmp_path):
    settings = model.TrainSettings(n_train=64, n_val=16, epochs=1)
    a, _ = model.train_demo_cnn(settings, verbose=False)
    b, _ = model.train_demo_cnn(settings, verbose=False)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "conv4"])
def test_head_then_tail_is_the_full_forward(trained, world, layer):
    adapter, _ = trained
    x = world.batch(range(16), 64)
    with torch.no_grad():
        act = adapter.head(layer)(x)
        logits = adapter.tail(layer)(act)
        full = adapter.forward(x)
    assert act.shape[:2] == (16, adapter.layers()[layer])
    assert torch.allclose(logits, full, atol=1e-6, rtol=0)
    # the tail really uses the activation: zeroing it changes the logits
    assert not torch.allclose(adapter.tail(layer)(torch.zeros_like(act)), full)


def test_layers_and_errors(trained):
    adapter, _ = trained
    assert adapter.layers() == {"conv1": 16, "conv2": 32, "conv3": 32, "conv4": 32}
    assert model.DEFAULT_LAYER in adapter.layers()
    assert adapter.head("conv3")(torch.rand(2, 3, 64, 64)).shape == (2, 32, 16, 16)
    from autointerp.errors import UserError

    with pytest.raises(UserError, match="conv3 \\(32\\)"):
        adapter.head("fc7")
    with pytest.raises(ConfigError, match="model.epoch"):
        model.create_demo_cnn(epoch=3)


def test_random_init_is_seeded_and_untrained(world):
    state = torch.random.get_rng_state()
    a = model.create_demo_cnn(pretrained=False)
    b = model.create_demo_cnn(pretrained=False)
    c = model.create_demo_cnn(pretrained=False, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    wa, wb, wc = (m.module.conv1[0].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.summary == {}
    with torch.no_grad():
        pred = a.forward(world.batch(range(len(world)), 64)).argmax(1).numpy()
    assert (pred == world.labels).mean() < 0.2


def test_weights_file_round_trip_and_errors(trained, tmp_path, world):
    adapter, _ = trained
    path = tmp_path / "w.pt"
    torch.save(adapter.module.state_dict(), path)  # a bare state dict also loads
    loaded = model.create_demo_cnn(weights=path)
    x = world.batch(range(8), 64)
    with torch.no_grad():
        assert torch.equal(loaded.forward(x), adapter.forward(x))
    with pytest.raises(WeightsError, match="not found"):
        model.create_demo_cnn(weights=tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("nope")
    with pytest.raises(WeightsError, match="bad.pt"):
        model.create_demo_cnn(weights=tmp_path / "bad.pt")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="do not fit"):
        model.create_demo_cnn(weights=tmp_path / "other.pt")


def test_registered_as_demo_cnn():
    from autointerp.models.base import MODELS

    assert MODELS.lookup("demo_cnn") is model.create_demo_cnn


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("AUTOINTERP_SKIP_DEMO_TRAINING") == "1", reason="AUTOINTERP_SKIP_DEMO_TRAINING=1")
def test_default_pretrained_model_is_accurate_on_the_demo_dataset():
    """The default weights (trained once and cached under $AUTOINTERP_CACHE or ~/.cache/autointerp)."""
    adapter = model.create_demo_cnn()
    demo = S.build_synthetic_dataset({"n_images": 800})  # the demo dataset's own seed (0)
    with torch.no_grad():
        pred = adapter.forward(demo.batch(range(len(demo)), 64)).argmax(1).numpy()
    assert (pred == demo.labels).mean() > 0.9
    assert model.cache_path(model.TrainSettings()).exists()
