"""`autointerp demo` end to end (reduced sizes): every stage's artefacts exist for every feature,
and a second run skips every finished stage."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.cli.core import DEMO_CONFIG
from autointerp.config import load_config

FAST = [
    "--set",
    "dataset.options.n_images=400",
    "--set",
    "visualize.steps=8",
    "--set",
    "report.bootstrap=100",
    "--set",
    "report.permutations=100",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_demo_writes_every_artefact_for_every_feature(demo_run: Path) -> None:
    cfg = load_config(demo_run / "config.yaml")
    meta = json.loads((demo_run / "activations/meta.json").read_text())
    n = meta["channels"]
    assert meta["n_images"] == 400 and meta["layer"] == cfg.layer
    importance = _rows(demo_run / "importance/importance.csv")
    assert [int(r["feature_ind"]) for r in importance] == list(range(n))
    assert list(importance[0])[:4] == ["model", "layer", "feature_ind", "importance"]
    vis = json.loads((demo_run / "visualizations/index.json").read_text())["features"]
    assert sorted(map(int, vis)) == list(range(n))
    for entry in vis.values():
        assert (demo_run / entry["card"]).stat().st_size > 0
        assert len(entry["vis"]) == cfg.visualize.n_images
    examples = json.loads((demo_run / "examples/index.json").read_text())["features"]
    assert all(len(e["top"]) == cfg.visualize.n_examples for e in examples.values())
    for rater in cfg.rate.raters:
        rows = _rows(demo_run / "ratings" / f"{rater}.csv")
        assert sorted(int(r["feature_ind"]) for r in rows) == list(range(n)), rater
    summary = json.loads((demo_run / "report/summary.json").read_text())
    assert summary["n_features"] == n
    assert set(cfg.rate.raters) - {"concept_purity"} <= set(summary["correlations"])
    assert (demo_run / "report/index.html").stat().st_size > 1000


def test_second_demo_run_skips_finished_stages(demo_run: Path) -> None:
    watched = [
        "activations/meta.json",
        "importance/importance.csv",
        "visualizations/index.json",
        "ratings/random.csv",
        "report/summary.json",
    ]
    stamps = {p: (demo_run / p).stat().st_mtime_ns for p in watched}
    result = CliRunner().invoke(app, ["demo", "--out", str(demo_run), *FAST])
    assert result.exit_code == 0, result.output
    assert {p: (demo_run / p).stat().st_mtime_ns for p in watched} == stamps
    # each stage's own command skips finished output too (exit 0), the report's included
    for stage in ("importance", "rate", "report"):
        result = CliRunner().invoke(app, [stage, str(demo_run)])
        assert result.exit_code == 0, (stage, result.output)
    assert {p: (demo_run / p).stat().st_mtime_ns for p in watched} == stamps


def test_demo_config_is_the_embedded_default() -> None:
    assert DEMO_CONFIG.exists() and load_config(DEMO_CONFIG).model.name == "demo_cnn"
