"""The ``concept_purity`` reference rater (the demo's ground-truth answer key) and how the report uses it.

* graded purity against hand-computed cases, and the demo helper's set purity as a reference;
* a planted perfectly coherent feature scores exactly 1 and ranks first (planted run folders);
* a clear one-line error on a dataset without concepts;
* ``"reference": true`` makes the analysis compare automatic raters with it (labelled ground truth);
* end to end on a small demo-like run (random-init demo CNN, so nothing is trained).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from rater_harness import check_rater, make_world
from scipy import stats

from autointerp.analysis import analyze
from autointerp.analysis.inputs import read_importance_csv, read_rating_csv
from autointerp.config import RunConfig, config_from_dict
from autointerp.data.base import ImageDataset
from autointerp.demo.purity import purity as helper_purity
from autointerp.demo.synthetic import sample_concepts
from autointerp.errors import ConfigError, UserError
from autointerp.rating import RatingContext, create_rater, list_raters
from autointerp.runfolder import RunContext
from raters.concept_purity import encode_concepts, graded_purity, set_purity

# --------------------------------------------------------------------------------------------- pure maths


def test_graded_purity_two_equal_values_by_hand() -> None:
    enc = encode_concepts({"c": np.array(["a", "a", "b", "b"]), "const": np.array(["x"] * 4)})
    assert list(enc) == ["c"]  # a constant concept carries no information
    # ranked a, a, b, b; p_a = 1/2. prec_r(a) = 1, 1, 2/3, 1/2 -> corrected 1, 1, 1/3, 0 -> mean 7/12
    res = graded_purity(enc, [0, 1, 2, 3])
    assert res["purity"] == pytest.approx(7 / 12)
    assert (res["concept"], res["value"], res["fraction"]) == ("c", "a", 0.5)
    # the unordered set shows a and b equally often: the helper's purity is 0, the ranking is what grades it
    assert set_purity(enc, [0, 1, 2, 3]) == pytest.approx(0.0)
    # reversed ranking: b leads instead, same score
    res = graded_purity(enc, [3, 2, 1, 0])
    assert res["purity"] == pytest.approx(7 / 12) and res["value"] == "b"


def test_graded_purity_unequal_base_rates_by_hand() -> None:
    # p_a = 1/2, p_b = 1/3, p_c = 1/6; ranked set b, a, b
    enc = encode_concepts({"k": np.array(["a", "a", "a", "b", "b", "c"])})
    res = graded_purity(enc, [3, 0, 4])
    # b: prec 1, 1/2, 2/3 -> (prec - 1/3)/(2/3) = 1, 1/4, 1/2 -> mean 7/12
    # a: prec 0, 1/2, 1/3 -> (prec - 1/2)/(1/2) = -1, 0, -1/3 -> mean -4/9
    assert res["purity"] == pytest.approx(7 / 12)
    assert res["value"] == "b" and res["fraction"] == pytest.approx(2 / 3)
    assert res["per_concept"]["k"] == pytest.approx(7 / 12)
    assert set_purity(enc, [3, 0, 4]) == pytest.approx((2 / 3 - 1 / 3) / (2 / 3))


def test_best_concept_wins_across_concepts_and_clipping_at_zero() -> None:
    enc = encode_concepts({"shape": np.array(["o", "x", "o", "x"]), "colour": np.array(["r", "r", "g", "g"])})
    res = graded_purity(enc, [0, 1])  # shapes o, x (mixed); colours r, r (pure)
    assert (res["purity"], res["concept"], res["value"]) == (1.0, "colour", "r")
    assert res["per_concept"]["shape"] == pytest.approx(0.5)  # o: corrected 1, 0
    assert graded_purity(encode_concepts({}), [0])["purity"] == 0.0  # no informative concept: 0, not an error


def test_set_purity_matches_the_demo_helper() -> None:
    concepts = sample_concepts(300, seed=4)
    enc = encode_concepts(concepts)
    rng = np.random.default_rng(0)
    for k in (3, 8, 20):
        for _ in range(10):
            idx = rng.choice(300, size=k, replace=False)
            assert set_purity(enc, idx) == pytest.approx(helper_purity(concepts, idx))


def test_graded_purity_grades_sets_the_top8_purity_ties() -> None:
    concepts = sample_concepts(640, seed=1)
    enc = encode_concepts(concepts)
    colour = np.asarray(concepts["colour"])
    red, other = np.flatnonzero(colour == "red"), np.flatnonzero(colour != "red")
    deep = np.concatenate([red[:64]])  # red all the way down
    drifting = np.concatenate([red[:8], other[:56]])  # red for 8, then anything but red
    assert set_purity(enc, deep[:8]) == set_purity(enc, drifting[:8]) == 1.0
    assert graded_purity(enc, deep)["purity"] == 1.0
    assert 0.0 < graded_purity(enc, drifting)["purity"] < 0.5


# --------------------------------------------------------------------------------------------- the rater


class ConceptTable(ImageDataset):
    """A dataset that is only a concept table (tiny grey images): enough for ``concept_purity``."""

    name = "concept_table"

    def __init__(self, concepts: dict[str, np.ndarray] | None, n: int) -> None:
        self.concepts = concepts
        self.labels = np.zeros(n, dtype=np.int64)
        self._n = n

    def __len__(self) -> int:
        return self._n

    def image(self, index: int) -> np.ndarray:
        return np.full((8, 8, 3), 128, dtype=np.uint8)


def planted_run(root, n_images: int = 640, n_features: int = 8, k: int = 64):
    """Scores whose top-``k`` are a planted share of red images: 1.0 for feature 0, decreasing after."""
    concepts = sample_concepts(n_images, seed=1)
    red = np.asarray(concepts["colour"]) == "red"
    rng = np.random.default_rng(5)
    share = np.linspace(1.0, 0.3, n_features)
    scores = rng.random((n_images, n_features)).astype(np.float32)  # background below 1
    for f in range(n_features):
        n_red = int(round(share[f] * k))
        top = np.concatenate(
            [
                rng.choice(np.flatnonzero(red), n_red, replace=False),
                rng.choice(np.flatnonzero(~red), k - n_red, replace=False),
            ]
        )
        scores[top, f] = 1.0 + rng.random(k)  # interleaved: red and non-red ranks mixed
    act = root / "activations"
    act.mkdir(parents=True)
    np.save(act / "scores.npy", scores)
    np.save(act / "dataset_index.npy", np.arange(n_images, dtype=np.int64))
    run = RunContext(root, RunConfig.model_validate({"seed": 0, "dataset": {"type": "synthetic"}}))
    return run, ConceptTable(concepts, n_images), share


def test_planted_coherent_feature_scores_one_and_ranks_first(tmp_path) -> None:
    run, ds, share = planted_run(tmp_path)
    table = create_rater("concept_purity").score(RatingContext(run, dataset=ds), list(range(len(share))))
    assert table.I[0] == 1.0 and table.I[1:].max() < 1.0
    assert int(np.argmax(table.I)) == 0
    assert table.extras["concept"][0] == "colour=red"
    assert table.extras["fraction"][0] == 1.0
    assert stats.spearmanr(table.I, share).statistic > 0.9
    # the top-8 set purity (extra column) is the helper's definition on the 8 most activating images
    scores = np.load(tmp_path / "activations" / "scores.npy")
    for f in range(len(share)):
        top8 = np.argsort(-scores[:, f], kind="stable")[:8]
        assert table.extras["purity_k8"][f] == pytest.approx(helper_purity(ds.concepts, top8))
        top64 = np.argsort(-scores[:, f], kind="stable")[:64]
        assert table.extras["purity_topk"][f] == pytest.approx(helper_purity(ds.concepts, top64))


def test_rater_contract_on_the_shared_planted_world(tmp_path) -> None:
    world = make_world(tmp_path, n_features=8)  # feature 0: its 8 examples all show its colour
    table = check_rater("concept_purity", world, options={"k": 8}, planted=0)
    # with k = 8 the ranked set is exactly the run's dataset examples
    ctx = world.context()
    for f in world.features:
        idx = ctx.example_dataset_indices(f)
        assert table.extras["purity_k8"][f] == pytest.approx(helper_purity(world.dataset.concepts, idx))
    assert stats.spearmanr(table.I, world.purity).statistic > 0.8


def test_errors_without_concepts_and_on_bad_options(tmp_path) -> None:
    run, _, _ = planted_run(tmp_path, n_images=100, n_features=2, k=8)
    with pytest.raises(
        UserError, match=r"concept_purity.*needs ground-truth concepts.*'concept_table' has none"
    ) as err:
        create_rater("concept_purity").score(RatingContext(run, dataset=ConceptTable(None, 100)), [0, 1])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="out of range"):  # concept table shorter than the cached images
        create_rater("concept_purity").score(
            RatingContext(run, dataset=ConceptTable(sample_concepts(50, seed=1), 50)), [0]
        )
    for bad in (0, -3, 2.5, "64", True):
        with pytest.raises(ConfigError, match="concept_purity.k"):
            create_rater("concept_purity", k=bad)


def test_listed_with_the_builtins() -> None:
    names = set(list_raters())
    assert {
        "human",
        "clip_coherence",
        "clip_vis_match",
        "clip_label",
        "fid",
        "mis",
        "auto_I",
        "random",
        "concept_purity",
    } <= names


# --------------------------------------------------------------------------------------------- analysis/report


def test_reference_json_makes_a_ground_truth_rater_in_the_analysis(tmp_path) -> None:
    world = make_world(tmp_path, n_features=10)
    ctx = world.context()
    feats = world.features
    for name, opts in (("concept_purity", {"k": 8}), ("clip_coherence", {}), ("random", {})):
        rater = create_rater(name, **opts)
        rater.score(ctx, feats).to_csv(tmp_path / "ratings" / f"{name}.csv")
        (tmp_path / "ratings" / f"{name}.json").write_text(json.dumps(rater.metadata()))
    ref = read_rating_csv(tmp_path / "ratings" / "concept_purity.csv")
    assert ref.is_reference and ref.is_target and not ref.is_human
    auto = read_rating_csv(tmp_path / "ratings" / "clip_coherence.csv")
    assert not auto.is_reference and not auto.is_target
    analysis = analyze(
        read_importance_csv(tmp_path / "importance" / "importance.csv"),
        [ref, auto, read_rating_csv(tmp_path / "ratings" / "random.csv")],
    )
    s = analysis.summary
    assert set(s["agreement"]) == {"clip_coherence", "random"}
    assert set(s["agreement"]["clip_coherence"]) == {"concept_purity"}
    expected = stats.spearmanr(auto.I, ref.I).statistic
    assert s["agreement"]["clip_coherence"]["concept_purity"]["spearman"] == pytest.approx(expected)
    assert s["raters"]["concept_purity"]["reference"] is True and s["raters"]["concept_purity"]["human"] is False
    assert analysis.reference_raters == ["concept_purity"] and analysis.human_raters == []


# --------------------------------------------------------------------------------------------- end to end


def test_end_to_end_on_a_small_demo_like_run(tmp_path) -> None:
    from autointerp.stages.activations import run_activations
    from autointerp.stages.examples import run_examples
    from autointerp.stages.importance import run_importance
    from autointerp.stages.rate import run_rate
    from autointerp.stages.report import run_report

    cfg = config_from_dict(
        {
            "name": "purity-e2e",
            "seed": 0,
            "device": "cpu",
            "model": {"name": "demo_cnn", "pretrained": False},  # random init: nothing to train or download
            "layer": "conv3",
            "dataset": {"type": "synthetic", "options": {"n_images": 192, "seed": 1}},
            "label_mapping": {"type": "identity"},
            "activations": {"batch_size": 64, "top_k": 8, "bottom_k": 8},
            "importance": {"method": "exact", "k": 1, "batch_size": 64},
            "visualize": {"n_examples": 8, "bottom_examples": True},
            "rate": {
                "raters": ["clip_coherence", "random", "concept_purity"],
                "embedder": {"type": "handcrafted"},
                "options": {"concept_purity": {"k": 32}},
            },
            "report": {"top_n": 6, "middle_n": 6, "bootstrap": 100, "permutations": 100},
        }
    )
    ctx = RunContext.create(cfg, tmp_path / "run")
    run_activations(ctx)
    run_importance(ctx)
    run_examples(ctx)
    run_rate(ctx)
    run_report(ctx)
    meta = json.loads((ctx.paths.ratings / "concept_purity.json").read_text())
    assert meta["reference"] is True and meta["options"] == {"k": 32}
    ref = read_rating_csv(ctx.paths.ratings / "concept_purity.csv")
    assert len(ref.feature_ind) == 32 and np.all((ref.I >= 0) & (ref.I <= 1)) and np.ptp(ref.I) > 0
    s = json.loads((ctx.paths.report / "summary.json").read_text())
    assert set(s["agreement"]) == {"clip_coherence", "random"}
    for auto in ("clip_coherence", "random"):
        res = s["agreement"][auto]["concept_purity"]
        assert res["I"]["n"] == 32 and isinstance(res["spearman"], float)
    html = (ctx.paths.report / "index.html").read_text()
    assert "concept_purity (ground truth)" in html
    assert "| clip_coherence | concept_purity (ground truth) | 32 |" in (ctx.paths.report / "summary.md").read_text()
    assert (ctx.paths.report / "agreement_clip_coherence_vs_concept_purity.png").exists()
