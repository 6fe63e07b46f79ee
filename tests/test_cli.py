"""The command line: instant --help (no heavy imports), one-line user errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from autointerp.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_help_imports_no_heavy_libraries() -> None:
    code = (
        "import sys; from autointerp.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'open_clip', 'matplotlib', 'lucent', 'scipy', 'sklearn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"--help imported heavy modules: {out.stdout}"


def test_help_lists_core_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in ("run", "demo", "activations", "models", "stages"):
        assert cmd in result.output


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autointerp", *args], capture_output=True, text=True, cwd=REPO)


def test_user_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    res = _cli("activations", str(tmp_path / "nowhere"))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "not a run folder (no config.yaml)" in res.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("importance:\n  method: magic\n")
    res = _cli("run", str(bad), "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "'importance.method' = 'magic' is not allowed" in res.stderr
    assert "Traceback" not in res.stderr

    res = _cli(
        "run",
        str(REPO / "configs/inceptionv1_mixed5a.yaml"),
        "--out",
        str(tmp_path / "r2"),
        "--set",
        "dataset.path=/definitely/missing.npz",
        "--set",
        "model.pretrained=false",
    )
    assert res.returncode == 2 and "/definitely/missing.npz: dataset file not found" in res.stderr


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _cli("run", str(REPO / "configs/inceptionv1_mixed5a.yaml"), "--out", str(blocker / "run"))
    assert res.returncode == 2 and "cannot create output folder" in res.stderr


def test_models_and_stages_listing() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "inceptionv1" in res.output
    described = dict(line.split(None, 1) for line in res.output.strip().splitlines())  # name, one sentence
    assert described["open_clip"].startswith("An open_clip image tower") and "``" not in res.output
    assert all(text and "\n" not in text for text in described.values())
    res = runner.invoke(app, ["stages"])
    names = [line.split("\t")[0] for line in res.output.strip().splitlines()]
    assert names == ["activations", "importance", "examples", "visualize", "rate", "report"]


def test_a_failed_stage_leaves_the_run_config_as_it_was(tmp_path: Path) -> None:
    from autointerp.cli.core import DEMO_CONFIG
    from autointerp.config import load_config
    from autointerp.runfolder import RunContext

    ctx = RunContext.create(load_config(DEMO_CONFIG), tmp_path / "run")
    before = ctx.paths.config.read_bytes()
    # the activations are missing, so the stage fails: its override must not be recorded
    res = _cli("importance", str(ctx.root), "--set", "importance.batch_size=7")
    assert res.returncode == 2, res.stderr
    assert ctx.paths.config.read_bytes() == before
    assert load_config(ctx.paths.config).importance.batch_size != 7
