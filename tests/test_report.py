"""The report stage and CLI on a synthetic run folder and on bare files."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from autointerp.errors import UserError
from autointerp.stages.report import run_report
from tests.report_fixtures import N_FEATURES, build_run


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img" and a.get("src"):
            self.srcs.append(a["src"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    ctx = build_run(tmp_path_factory.mktemp("run") / "run")
    run_report(ctx)
    return ctx


def test_report_files_and_summary_schema(run) -> None:
    out = run.paths.report
    s = json.loads((out / "summary.json").read_text())
    assert s["n_features"] == N_FEATURES
    imp = np.loadtxt(run.paths.importance_csv, delimiter=",", skiprows=1, usecols=3)
    assert s["importance"]["mean"] == pytest.approx(imp.mean()) and s["importance"]["median"] == np.median(imp)
    for g in ("top", "middle"):
        assert s["groups"][g]["n"] == 8 and isinstance(s["groups"][g]["importance_mean"], float)
        assert set(s["groups"][g]["I_mean"]) == {"good", "noise", "human"}
    top_imp = np.sort(imp)[-8:].mean()
    assert s["groups"]["top"]["importance_mean"] == pytest.approx(top_imp)
    for rater in ("good", "noise", "human"):
        c = s["correlations"][rater]
        assert isinstance(c["spearman"], float) and len(c["ci95"]) == 2 and 0 < c["p"] <= 1
    assert s["correlations"]["good"]["spearman"] > 0.8 and s["correlations"]["good"]["p"] < 0.01
    assert s["correlations"]["good"]["ci95"][0] > s["correlations"]["noise"]["ci95"][0]
    agree = s["agreement"]
    assert set(agree) == {"good", "noise"} and set(agree["good"]) == {"human"}
    assert agree["good"]["human"]["spearman"] > agree["noise"]["human"]["spearman"]
    # neither rater is calibrated to the human 1..5 answer scale: rank agreement only
    assert agree["good"]["human"]["krippendorff_alpha"] is None and agree["good"]["human"]["mae"] is None
    assert agree["good"]["human"]["alpha_reason"] == "n/a (uncalibrated scale)"
    assert {"q1", "q3", "q4", "I"} <= set(agree["good"]["human"])
    ceiling = s["noise_ceiling"]["human"]
    assert ceiling["available"] and ceiling["I"]["n_participants"] == 2 and ceiling["I"]["individual_lower"] > 0.5
    assert 0.5 < ceiling["I"]["split_half"] <= 1 and ceiling["I"]["ceiling"] == pytest.approx(
        np.sqrt(ceiling["I"]["split_half"])
    )
    # every rater scored all 48 features: layer-wide; the survey covers every other feature: a subset
    assert [h["rater"] for h in s["headline"]] == ["good", "noise", "human"]
    assert s["correlations"]["good"]["scope"] == "layer-wide" and s["correlations"]["good"]["n"] == N_FEATURES
    assert s["raters"]["good"]["scope_label"] == f"layer-wide: scored {N_FEATURES} of {N_FEATURES}"
    assert s["correlations"]["human"]["scope"] == "subset" and s["correlations"]["human"]["n"] == N_FEATURES // 2
    assert s["importance_measures"]["reliability"]["available"] is False
    assert "importance_reliability" in s["empty_reasons"]
    names = s["rater_correlations"]["names"]
    assert names[0] == "importance" and len(s["rater_correlations"]["matrix"]) == len(names)
    for fig in s["figures"]:
        assert (out / fig["png"]).stat().st_size > 1000 and (out / fig["svg"]).read_text().lstrip().startswith("<")
    figure_names = {f["name"] for f in s["figures"]}
    assert {
        "importance_hist",
        "group_hist",
        "scatter_importance_good",
        "agreement_good_vs_human",
        "rater_correlations",
        "ablation_curve",
    } <= figure_names
    md = (out / "summary.md").read_text()
    assert "| good |" in md and "Top vs middle" in md


def test_page_references_resolve(run) -> None:
    out = run.paths.report
    page = (out / "index.html").read_text()
    refs = _Refs()
    refs.feed(page)
    assert len(refs.srcs) >= N_FEATURES  # figures + one card per feature
    for src in refs.srcs + [h for h in refs.hrefs if not h.startswith("#")]:
        assert not re.match(r"^[a-z]+://", src), src  # nothing from the network
        assert (out / src).exists(), src
    media = json.loads(re.search(r'<script type="application/json" id="media">(.*?)</script>', page, re.S).group(1))
    assert media["5"]["card"] == "../visualizations/0005/card.png"
    assert (out / media["5"]["examples"][0]).exists()
    assert "visualisation weaker than examples" in page  # feature 3's quality flag is shown


def test_stage_skips_then_overwrites(run) -> None:
    index = run.paths.report / "index.html"
    before = index.stat().st_mtime_ns
    run_report(run)
    assert index.stat().st_mtime_ns == before
    run_report(run, overwrite=True)
    assert index.stat().st_mtime_ns != before


def _app() -> typer.Typer:
    from autointerp.cli.report import register

    app = typer.Typer()
    register(app)

    @app.command()
    def noop() -> None:  # a second command so typer keeps `report` as a subcommand
        pass

    return app


def test_cli_bare_files_and_errors(tmp_path: Path) -> None:
    imp = tmp_path / "imp.csv"
    imp.write_text("model,layer,feature_ind,importance\n" + "".join(f"M,L,{f},{(f * 7) % 23}\n" for f in range(30)))
    survey = tmp_path / "s.csv"
    survey.write_text(
        "model,layer,neuron,question1,text_question,question3,question4,question5,question6\n"
        + "".join(f"M,L,{f},{1 + f % 5},x,{1 + f % 5},{1 + f % 5},3,3\n" for f in range(0, 30, 3))
    )
    runner = CliRunner()
    res = runner.invoke(
        _app(),
        [
            "report",
            "--importance",
            str(imp),
            "--human",
            str(survey),
            "--out",
            str(tmp_path / "rep"),
            "--top-n",
            "5",
            "--middle-n",
            "5",
            "--bootstrap",
            "100",
            "--permutations",
            "100",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "30 features" in res.output and "human:" in res.output
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["groups"]["top"]["n"] == 5 and s["correlations"]["human"]["n"] == 10
    again = runner.invoke(_app(), ["report", "--importance", str(imp), "--out", str(tmp_path / "rep")])
    assert isinstance(again.exception, UserError) and "--overwrite" in str(again.exception)
    ok = runner.invoke(
        _app(),
        [
            "report",
            "--importance",
            str(imp),
            "--out",
            str(tmp_path / "rep"),
            "--overwrite",
            "--bootstrap",
            "0",
            "--permutations",
            "0",
        ],
    )
    assert ok.exit_code == 0, ok.output
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["raters"] == {} and s["correlations"] == {}
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    refused = runner.invoke(
        _app(), ["report", "--importance", str(imp), "--out", str(tmp_path / "precious"), "--overwrite"]
    )
    assert isinstance(refused.exception, UserError) and (tmp_path / "precious" / "thesis.tex").exists()
    for args, message in (
        (["report"], "either a run folder"),
        (["report", "--importance", str(imp)], "--out"),
        (["report", "--importance", str(imp), "--out", "x", "--human-invalid", "skip"], "--human-invalid 'skip'"),
    ):
        bad = runner.invoke(_app(), args)
        assert isinstance(bad.exception, UserError) and message in str(bad.exception), args


def test_bad_run_inputs_are_reported_not_fatal(tmp_path: Path) -> None:
    ctx = build_run(tmp_path / "run", with_media=True)
    imp = ctx.paths.importance_csv
    imp.write_text(imp.read_text() + "demo,mixed5a,2,999\ndemo,mixed5a,7,nan\n")  # conflicting dup + NaN dup
    (ctx.paths.ratings / "flat.csv").write_text("feature_ind,I\n" + "".join(f"{f},0.5\n" for f in range(60)))
    out = tmp_path / "elsewhere"  # the CLI on a run folder, writing outside it
    res = CliRunner().invoke(
        _app(), ["report", str(ctx.root), "--out", str(out), "--bootstrap", "50", "--permutations", "50"]
    )
    assert res.exit_code == 0, res.output
    assert not (ctx.root / "report").exists()
    s = json.loads((out / "summary.json").read_text())
    assert s["correlations"]["flat"]["spearman"] is None and "constant" in s["correlations"]["flat"]["reason"]
    conflict = [i for i in s["issues"] if i["kind"] == "duplicate_conflict"]
    assert conflict and set(conflict[0]["features"]) == {2, 7}
    missing = [i for i in s["issues"] if i["kind"] == "missing_feature" and "no importance" in i["message"]]
    assert missing and missing[0]["features"] == list(range(N_FEATURES, 60))
    assert s["n_features_total"] == 60
    page = (out / "index.html").read_text()
    assert "conflicting duplicate" in page and page.count('data-group="') == 60
    assert "../run/visualizations/0000/card.png" in page


def test_page_labels_scales_alpha_policy_and_grouped_notes(tmp_path: Path) -> None:
    """The page says what each number is: scale kinds, α only for the out-of-fold calibrated rater,
    'n/a (uncalibrated scale)' elsewhere, scopes, the noise ceiling, and one data note per cause."""
    from autointerp.report.sources import report_from_run

    ctx = build_run(tmp_path / "run", with_media=False)
    ctx.config.report.bootstrap = ctx.config.report.permutations = 50
    ratings = ctx.paths.ratings
    meta = json.loads((ratings / "good.json").read_text())
    meta["scale"] = {"kind": "null_percentile", "calibrated_to_human": False}
    (ratings / "good.json").write_text(json.dumps(meta))
    # two calibrated raters that scored only the surveyed (even) features, with out-of-fold predictions
    good = np.loadtxt(ratings / "good.csv", delimiter=",", skiprows=1, usecols=1)
    for name in ("fitted", "fitted_b"):
        rows = ["feature_ind,I,I_oof"] + [
            f"{f},{good[f]:.4f},{min(1.0, good[f] * 0.9 + 0.05):.4f}" if f % 2 == 0 else f"{f},,"
            for f in range(N_FEATURES)
        ]
        (ratings / f"{name}.csv").write_text("\n".join(rows) + "\n")
        (ratings / f"{name}.json").write_text(
            json.dumps(
                {"rater": name, "calibrated": True, "scale": {"kind": "fitted_to_human", "calibrated_to_human": True}}
            )
        )
    page = report_from_run(ctx.root, tmp_path / "rep", config=ctx.config).read_text()
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert isinstance(s["agreement"]["fitted"]["human"]["krippendorff_alpha"], float)
    assert s["agreement"]["good"]["human"]["alpha_reason"] == "n/a (uncalibrated scale)"
    assert s["correlations"]["fitted"]["scope"] == "subset" and s["correlations"]["good"]["scope"] == "layer-wide"
    coverage = [i for i in s["issues"] if i["kind"] == "coverage"]
    assert len(coverage) == 1 and coverage[0]["subjects"] == ["fitted", "fitted_b", "human"]
    assert page.count("<li>") == len(s["issues"])  # one line per note
    for text in (
        "n/a (uncalibrated scale)",
        "null_percentile",
        "fitted_to_human (calibrated to human)",
        "not stated",
        "layer-wide",
        "subset",
        "scored 24 of 48",
        "reliability of the mean",
        "noise ceiling ρ",
        "Nili",
        "within top ρ",
        "one line per cause",
        "importance reliability unavailable",
    ):
        assert text in page, text
    alpha = s["agreement"]["fitted"]["human"]["krippendorff_alpha"]
    assert f"{alpha:.3f}" in page
