"""Directions as features (autointerp.directions) and the rater validity benchmark (benchmarks/rater_validity.py).

* one-hot directions reproduce the activation stage's ``scores.npy`` (max and mean reduce) on a real cache;
* scores equal an independent einsum + reduce, whatever the chunk size;
* bad direction files get one-line errors (width, non-finite rows, zero rows, missing key, names);
* top-k ties are broken by the seeded permutation, not by dataset index;
* the benchmark's AUROC helper equals sklearn's, its bootstrap CI is stratified and seeded;
* a tiny end-to-end benchmark on the demo world, and (with ../shared) a reduced Coral run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from test_activations import _tiny_cnn  # tests/ helper: the same tiny CNN as the activation tests

from autointerp.config import config_from_dict
from autointerp.directions import (
    Directions,
    check_directions,
    direction_scores,
    load_directions,
    rank_images,
    run_direction_scores,
    tie_break_permutation,
    top_k,
)
from autointerp.errors import DataError, UserError
from autointerp.models.generic import ModuleAdapter
from autointerp.runfolder import RunContext
from autointerp.stages.activations import run_activations

REPO = Path(__file__).resolve().parents[1]


def _benchmark() -> ModuleType:
    name = "rater_validity_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "rater_validity.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# ------------------------------------------------------------------ a real activation cache of a tiny CNN
def _run(tmp: Path, reduce: str, dtype: str = "float32") -> RunContext:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(37, 12, 12, 3), dtype=np.uint8)
    np.savez(tmp / "data.npz", data=images.transpose(0, 3, 1, 2).reshape(37, -1), labels=rng.integers(0, 4, 37))
    cfg = config_from_dict(
        {
            "model": {"name": "module"},
            "layer": "2",
            "device": "cpu",
            "dataset": {"type": "npz", "path": str(tmp / "data.npz"), "image_size": 16},
            "label_mapping": {"type": "identity"},
            "activations": {"batch_size": 5, "top_k": 3, "reduce": reduce, "dtype": dtype, "accuracy_k": [1]},
        }
    )
    ctx = RunContext.create(cfg, tmp / f"run_{reduce}")
    ctx.__dict__["model"] = ModuleAdapter(_tiny_cnn(), input_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)
    run_activations(ctx)
    return ctx


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_one_hot_directions_reproduce_scores(tmp_path: Path, reduce: str) -> None:
    ctx = _run(tmp_path, reduce)
    scores = np.load(ctx.paths.activations / "scores.npy")
    acts = np.load(ctx.paths.activations / "acts.npy", mmap_mode="r")
    channels = scores.shape[1]
    got = direction_scores(acts, np.eye(channels), reduce, chunk_size=4)
    assert got.dtype == np.float32 and got.shape == scores.shape
    if reduce == "max":
        np.testing.assert_array_equal(got, scores)  # the maximum of the same float32 values: bit for bit
    else:  # the stage sums float32 values in the model's memory layout: equal up to that summation order
        np.testing.assert_allclose(got, scores, rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(acts).max())
    # a permuted, scaled one-hot picks the permuted columns, scaled
    perm = np.array([3, 0, 4, 1, 2])
    got2 = run_direction_scores(ctx.root, Directions(2.0 * np.eye(channels)[perm]), chunk_size=7, progress=False)
    np.testing.assert_allclose(got2, 2.0 * got[:, perm], rtol=0, atol=1e-7 * np.abs(acts).max())


def test_scores_match_an_independent_projection_at_any_chunk_size() -> None:
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(23, 6, 4, 5)).astype(np.float32)
    dirs = rng.normal(size=(9, 6))
    proj = np.einsum("fc,nchw->nfhw", dirs, acts.astype(np.float64))
    for reduce, ref in (("max", proj.max(axis=(2, 3))), ("mean", proj.mean(axis=(2, 3)))):
        for chunk in (1, 7, 100):
            np.testing.assert_allclose(
                direction_scores(acts, dirs, reduce, chunk_size=chunk), ref, rtol=1e-5, atol=1e-5
            )
    flat = rng.normal(size=(10, 6)).astype(np.float32)  # (N, C) activations without spatial axes
    np.testing.assert_allclose(direction_scores(flat, dirs, "max"), flat @ dirs.T, rtol=1e-5, atol=1e-5)


def _error(tmp: Path, name: str, write, **kwargs) -> str:
    path = tmp / name
    write(path)
    with pytest.raises(DataError) as exc:
        load_directions(path, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_direction_files_get_one_line_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    msg = _error(
        tmp_path, "directions.npy", lambda p: np.save(p, rng.normal(size=(4, 1000))), channels=1280, layer="Conv_1"
    )
    assert msg == "directions.npy has width 1000; layer Conv_1 has 1280 channels"
    bad = rng.normal(size=(5, 8))
    bad[3, 2] = np.nan
    msg = _error(tmp_path, "nan.npy", lambda p: np.save(p, bad))
    assert msg.startswith("nan.npy: row 3 has non-finite values")
    zero = rng.normal(size=(5, 8))
    zero[2] = 0.0
    assert "row 2 is all zeros" in _error(tmp_path, "zero.npy", lambda p: np.save(p, zero))
    assert "missing key 'directions'" in _error(tmp_path, "x.npz", lambda p: np.savez(p, weights=zero))
    assert "2 entries for 5 directions" in _error(
        tmp_path, "names.npz", lambda p: np.savez(p, directions=rng.normal(size=(5, 8)), names=np.array(["a", "b"]))
    )
    assert "2-D" in _error(tmp_path, "flat.npy", lambda p: np.save(p, np.ones(8)))
    assert "not found" in _error(tmp_path, "absent.npy", lambda p: None)
    with pytest.raises(DataError, match="width 5; layer L has 8"):
        check_directions(np.ones((2, 5)), "d", channels=8, layer="L")


def test_npz_round_trip_keeps_names(tmp_path: Path) -> None:
    vecs = np.random.default_rng(0).normal(size=(3, 7))
    Directions(vecs, ["probe:cat", "sae:12", "x"]).save(tmp_path / "d.npz")
    back = load_directions(tmp_path / "d.npz", channels=7)
    np.testing.assert_array_equal(back.vectors, vecs)
    assert back.names == ["probe:cat", "sae:12", "x"]
    Directions(vecs).save(tmp_path / "d.npy")
    assert load_directions(tmp_path / "d.npy").names == ["d0", "d1", "d2"]
    with pytest.raises(UserError, match="must end in"):
        Directions(vecs).save(tmp_path / "d.txt")


def test_top_k_breaks_ties_by_the_seeded_permutation() -> None:
    n = 50
    scores = np.zeros((n, 2), dtype=np.float32)
    scores[:, 1] = np.arange(n) % 5  # groups of ten tied images
    for seed in (0, 1, 2):
        perm = tie_break_permutation(n, seed)
        position = np.empty(n, dtype=np.int64)
        position[perm] = np.arange(n)
        idx, val = top_k(scores, 12, seed)
        # reference: sort by (-score, position in the permutation)
        for j in range(2):
            ref = np.lexsort((position, -scores[:, j]))[:12]
            np.testing.assert_array_equal(idx[j], ref)
            np.testing.assert_array_equal(val[j], scores[ref, j])
        low, _ = top_k(scores, 12, seed, bottom=True)
        np.testing.assert_array_equal(low[1], np.lexsort((position, scores[:, 1]))[:12])
    all_tied = [tuple(top_k(scores[:, :1], 10, s)[0][0]) for s in range(4)]
    assert len(set(all_tied)) == 4  # the seed decides ties
    assert tuple(range(10)) not in all_tied  # ... never the dataset order
    # a unique maximum comes first whatever the seed; the ranking is a permutation of the images
    col = np.random.default_rng(5).normal(size=(30, 1))
    assert all(top_k(col, 1, s)[0][0, 0] == int(np.argmax(col)) for s in range(3))
    assert sorted(rank_images(col, 3)[:, 0].tolist()) == list(range(30))


def test_auroc_helper_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    bench = _benchmark()
    rng = np.random.default_rng(0)
    for _ in range(5):
        pos = np.round(rng.normal(0.5, 1, 40), 1)  # rounding makes ties
        neg = np.round(rng.normal(0, 1, 55), 1)
        ref = roc_auc_score(np.r_[np.ones(40), np.zeros(55)], np.r_[pos, neg])
        assert bench.auroc(pos, neg) == pytest.approx(ref, abs=1e-12)
        lo, hi = bench.bootstrap_auroc(pos, neg, n_boot=400, seed=1)
        assert lo < ref < hi and (lo, hi) == bench.bootstrap_auroc(pos, neg, n_boot=400, seed=1)
    assert bench.auroc([1.0, np.nan], [0.0]) == 1.0 and np.isnan(bench.auroc([], [0.0]))
    assert bench.bootstrap_auroc([2.0, 3.0], [0.0, 1.0], n_boot=50) == (1.0, 1.0)  # no resample reorders them
    assert bench.modal_share([3, 3, 1, 3]) == 0.75
    # paired difference of two statistics on the same features
    is_pos = np.r_[np.ones(40, bool), np.zeros(55, bool)]
    a, b = np.r_[pos, neg], np.r_[pos, neg] + rng.normal(0, 1.5, 95)
    y = is_pos.astype(int)
    d, lo, hi = bench.bootstrap_auroc_difference(a, b, is_pos, n_boot=400, seed=2)
    assert d == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12) and lo < d < hi
    assert bench.bootstrap_auroc_difference(a, a, is_pos, n_boot=50) == (0.0, 0.0, 0.0)


def test_superclasses_are_disjoint_imagenet_indices() -> None:
    bench = _benchmark()
    members = [c for m in bench.SUPERCLASSES.values() for c in m]
    assert len(members) == len(set(members)) and 0 <= min(members) and max(members) < 1000
    groups = bench.superclass_of_classes()
    assert groups[151] == groups[268] == list(bench.SUPERCLASSES).index("dogs")  # Chihuahua .. Mexican hairless
    assert groups[999] == 1999  # toilet tissue: a group of its own


def _last_line(text: str) -> dict[str, float]:
    parts = text.strip().splitlines()[-1].split()
    return {parts[i].rstrip(":"): float(parts[i + 1]) for i in range(0, len(parts), 2)}


def test_tiny_end_to_end_benchmark_on_the_demo_world(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = _benchmark()
    res = bench.main(
        [
            "--world",
            "demo",
            "--demo-untrained",
            "--n-images",
            "240",
            "--n-random",
            "12",
            "--raters",
            "clip_coherence,random",
            "--bootstrap",
            "100",
            "--out",
            str(tmp_path),
        ]
    )
    last = _last_line(capsys.readouterr().out)
    n_concepts = res["counts"]["concept"]
    assert 15 <= n_concepts <= 22 and res["counts"]["gaussian"] == res["counts"]["random_set"] == 12
    assert last["n_pos"] == n_concepts and last["n_neg"] == 12
    assert set(last) == {"auroc_clip_coherence", "auroc_random", "n_pos", "n_neg"}
    assert last["auroc_clip_coherence"] == pytest.approx(
        res["raters"]["clip_coherence"]["interpretable_vs_gaussian"]["auroc"], abs=1e-4
    )
    # planted answer: each concept direction's top-8 share its concept value; random sets do not
    run = Path(res["rating_run"])
    with open(run / "features.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    concepts = RunContext.open(next(tmp_path.glob("base-demo-*"))).dataset.concepts
    lift = []
    for r in rows:
        if r["kind"] == "concept":
            cname, value = r["name"].removeprefix("concept:").split("=")
            base = float(np.mean(np.asarray(concepts[cname]).astype(str) == value))
            lift.append((float(r["target_share"]) - base) / (1 - base))
    assert np.mean(lift) > 0.3  # chance-corrected share of the top-8 showing the direction's concept value
    assert res["mean_purity"]["concept"] > res["mean_purity"]["random_set"] + 0.3
    assert res["raters"]["clip_coherence"]["interpretable_vs_random_sets"]["auroc"] > 0.8
    assert res["baseline"]["interpretable_vs_random_sets"]["auroc"] > 0.8
    # the raters ran through the registry on the written run folder
    assert (run / "ratings" / "clip_coherence.csv").exists() and (run / "examples" / "index.json").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["candidates"]) >= {"raw", "centred", "rank"} and saved["skipped"] == {}


def test_coral_classifier_directions_and_reduced_run(
    shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bench = _benchmark()
    res = bench.main(
        [
            "--n-images",
            "60",
            "--n-class",
            "10",
            "--n-random",
            "10",
            "--raters",
            "random",
            "--bootstrap",
            "50",
            "--shared",
            str(shared_dir),
            "--out",
            str(tmp_path),
        ]
    )
    last = _last_line(capsys.readouterr().out)
    assert res["counts"] == {"class": 10, "superclass": len(bench.SUPERCLASSES), "gaussian": 10, "random_set": 10}
    assert last["n_pos"] == 10 + len(bench.SUPERCLASSES) and last["n_neg"] == 10
    # the classifier weights found in the converted model reproduce its logits from the pooled Conv_1 output
    base = next(tmp_path.glob("base-coral-*"))
    ctx = RunContext.open(base)
    weights = bench.classifier_matrix(ctx.model, "Conv_1")
    acts = np.load(base / "activations" / "acts.npy", mmap_mode="r")[:5]
    with torch.no_grad():
        logits = ctx.model.tail("Conv_1")(torch.from_numpy(np.array(acts))).numpy()
    pooled = acts.mean(axis=(2, 3)).astype(np.float64)
    diff = logits - pooled @ weights.T
    assert np.ptp(diff, axis=0).max() < 1e-3  # the same per-output offset (the bias) for every image
