"""Reproduce the seed study's published numbers from its own data through `autointerp report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner


def test_reproduces_published_numbers(shared_dir: Path, tmp_path: Path) -> None:
    from autointerp.cli.report import register

    app = typer.Typer()
    register(app)
    app.command()(lambda: None)  # keep `report` as a subcommand
    study = shared_dir / "reference" / "seed_study"
    out = tmp_path / "study"
    res = CliRunner().invoke(
        app,
        [
            "report",
            "--importance",
            str(study / "importance.csv"),
            "--human",
            str(study / "survey_results.csv"),
            "--human-invalid",
            "keep",
            "--out",
            str(out),
            "--bootstrap",
            "300",
            "--permutations",
            "300",
        ],
    )
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["n_features"] == 832
    assert round(s["importance"]["mean"], 2) == 16.05  # published 16.0
    top, mid = s["groups"]["top"], s["groups"]["middle"]
    assert top["n"] == mid["n"] == 40
    assert round(top["importance_mean"], 2) == 86.75  # published 86.8
    assert round(mid["importance_mean"], 2) == 13.03  # published 13.0
    assert round(top["I_mean"]["human"], 3) == 0.558  # published 0.56
    assert round(mid["I_mean"]["human"], 3) == 0.240  # published 0.24
    assert top["n_rated"]["human"] == mid["n_rated"]["human"] == 40  # exactly the surveyed features
    assert s["groups"]["comparison"]["human"]["p"] < 0.001
    for fig in ("importance_hist", "group_hist"):  # the study's Figures 1 and 2
        assert (out / f"{fig}.png").stat().st_size > 5000 and (out / f"{fig}.svg").exists()
    kept = [i for i in s["issues"] if i["kind"] == "human_answers"]
    assert kept and "kept 3 answer(s)" in kept[0]["message"]
    # the survey covers the 80 extreme-group features only: its correlation is labelled so, with the
    # within-group correlations beside it (values checked against scipy in test_analysis_headline.py)
    human = s["correlations"]["human"]
    assert human["scope"] == "extreme groups" and (human["n_scored"], human["n_with_importance"]) == (80, 832)
    assert round(human["spearman"], 2) == 0.50
    assert round(human["extreme_groups"]["within"]["top"]["spearman"], 2) == 0.29
    assert round(human["extreme_groups"]["within"]["middle"]["spearman"], 2) == -0.02
    assert s["noise_ceiling"]["human"]["reason"] == "no noise ceiling: only one rater"
    assert "extreme groups (top 40 + middle 40): scored 80 of 832" in res.output
    assert "no noise ceiling: only one rater" in res.output


def test_study_answers_rejected_by_default(shared_dir: Path, tmp_path: Path) -> None:
    from autointerp.errors import DataError
    from autointerp.report import report_from_files

    study = shared_dir / "reference" / "seed_study"
    with pytest.raises(DataError, match="3 answers outside 1..5"):
        report_from_files(study / "importance.csv", tmp_path / "r", [study / "survey_results.csv"])
    assert not (tmp_path / "r").exists()  # nothing half-written
