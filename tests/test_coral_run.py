"""The real pretrained Coral MobileNetV2 (TFLite → torch) through the whole pipeline on real ImageNet
images, at reduced size: every stage runs from configs/mobilenetv2_coral.yaml and the report is produced."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autointerp.config import load_config
from autointerp.pipeline import run_pipeline
from autointerp.runfolder import RunContext

REPO = Path(__file__).resolve().parents[1]


def test_reduced_real_run_produces_a_report(shared_dir: Path, tmp_path: Path) -> None:
    coral = shared_dir / "models/coral"
    cfg = load_config(
        REPO / "configs/mobilenetv2_coral.yaml",
        [
            f"model.weights={coral / 'mobilenet_v2_1.0_224_quant.tflite'}",
            f"dataset.path={shared_dir / 'data/imagenet_sample_64.npz'}",
            f"label_mapping.map_clsloc={shared_dir / 'reference/imagenet/map_clsloc.txt'}",
            f"rate.embedder.path={coral / 'mobilenet_v1_1.0_224_quant_embedding_extractor.tflite'}",
            "dataset.max_images=40",
            "importance.features=[0,1,2,3,4,5,6,7,8,9,10,11]",
            "visualize.steps=3",
            "visualize.size=64",
            "report.top_n=2",
            "report.middle_n=2",
            "rate.raters=[clip_coherence,random]",
            "report.bootstrap=50",
            "report.permutations=50",
        ],
    )
    ctx = RunContext.create(cfg, tmp_path / "run")
    done = run_pipeline(ctx)
    assert done == ["activations", "importance", "examples", "visualize", "rate", "report"]
    meta = json.loads((ctx.paths.activations / "meta.json").read_text())
    assert meta["channels"] == 1280 and meta["accuracy"]["top10"] > 0.3  # a real classifier, not random
    with ctx.paths.importance_csv.open() as fh:
        assert [int(r["feature_ind"]) for r in csv.DictReader(fh)] == list(range(12))
    summary = json.loads((ctx.paths.report / "summary.json").read_text())
    assert summary["n_features"] == 12 and {"clip_coherence", "random"} <= set(summary["correlations"])
    vis = json.loads((ctx.paths.visualizations / "index.json").read_text())["features"]
    assert len(vis) == 4  # the report's two groups of 2 (visualize.features: groups)
    # examples for every channel, so the example-based rater scores the whole layer, not the visualised subset
    examples = json.loads((ctx.paths.examples / "index.json").read_text())["features"]
    assert len(examples) == 1280
    coherence = json.loads((ctx.paths.ratings / "clip_coherence.json").read_text())
    assert coherence["n_scored"] == 1280
    assert (ctx.paths.report / "index.html").stat().st_size > 1000
