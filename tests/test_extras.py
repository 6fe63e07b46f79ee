"""The lean install: optional packages are extras, a missing one is reported in one line naming its extra,
a broken in-tree module fails with its real error (never "unknown model"), and the core imports no extra.

A package is "uninstalled" for a test by ``sys.modules[name] = None`` (monkeypatched), which makes every
import of it raise ``ModuleNotFoundError`` exactly as when it is absent.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from autointerp.embedders import EMBEDDERS, create_embedder
from autointerp.extras import EXTRAS, MissingExtraError, extra_imports, installed, require
from autointerp.models import MODELS, create_model

REPO = Path(__file__).resolve().parents[1]

#: every optional package (and the alternative TFLite interpreters the tflite embedder would fall back to)
OPTIONAL = (
    "open_clip",
    "timm",
    "tflite",
    "ai_edge_litert",
    "tensorflow",
    "tflite_runtime",
    "fastapi",
    "uvicorn",
    "starlette",
    "dreamsim",
)


def _uninstall(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make ``names`` (and their already-imported submodules) unimportable for this test."""
    for name in names:
        for key in [k for k in sys.modules if k.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, key)
        monkeypatch.setitem(sys.modules, name, None)


def _message(what: str, extra: str, missing: str) -> str:
    return f"{what} needs the [{extra}] extra: pip install 'autointerp[{extra}]' ({missing} is not installed)"


# -- the survey -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn"])
def test_survey_serve_without_its_extra_is_one_line(monkeypatch, capsys, tmp_path, missing) -> None:
    from autointerp.cli import main

    _uninstall(monkeypatch, missing)
    _forget(monkeypatch, "autointerp.survey.app")  # imported afresh, without fastapi
    monkeypatch.setattr(sys, "argv", ["autointerp", "survey", "serve", str(tmp_path)])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"autointerp: error: {_message('the survey', 'survey', missing)}\n"


def test_survey_app_module_without_fastapi_names_the_extra(monkeypatch) -> None:
    _uninstall(monkeypatch, "fastapi")
    _forget(monkeypatch, "autointerp.survey.app")
    with pytest.raises(MissingExtraError, match=r"^the survey needs the \[survey\] extra") as info:
        importlib.import_module("autointerp.survey.app")
    assert info.value.extra == "survey" and info.value.missing == "fastapi"


def test_survey_export_needs_no_extra(monkeypatch, tmp_path) -> None:
    """Exporting answers is plain SQLite/CSV: with fastapi and uvicorn gone it still reaches its own checks."""
    from autointerp.errors import UserError
    from autointerp.survey.export import export_answers

    _uninstall(monkeypatch, "fastapi", "uvicorn", "starlette")
    with pytest.raises(UserError) as info:
        export_answers(tmp_path / "no_run", tmp_path / "out.csv")
    assert not isinstance(info.value, MissingExtraError)


# -- embedders and model adapters -------------------------------------------------------------------------


def test_open_clip_embedder_without_open_clip(monkeypatch) -> None:
    _uninstall(monkeypatch, "open_clip")
    with pytest.raises(MissingExtraError) as info:
        create_embedder({"type": "open_clip", "model": "ViT-B-32", "pretrained": None, "device": "cpu"})
    assert str(info.value) == _message("the open_clip embedder", "clip", "open_clip")


def test_timm_adapter_and_embedder_without_timm(monkeypatch) -> None:
    _uninstall(monkeypatch, "timm")
    with pytest.raises(MissingExtraError) as info:
        create_model("timm", pretrained=False, arch="resnet18")
    assert str(info.value) == _message("the timm model adapter", "timm", "timm")
    with pytest.raises(MissingExtraError) as info:
        create_embedder({"type": "timm", "model": "resnet18", "device": "cpu"})
    assert str(info.value) == _message("the timm embedder", "timm", "timm")


def test_tflite_adapter_without_tflite(monkeypatch, tmp_path) -> None:
    _uninstall(monkeypatch, "tflite")
    with pytest.raises(MissingExtraError) as info:
        create_model("tflite", weights=str(tmp_path / "model.tflite"))
    assert str(info.value) == _message("the tflite model adapter", "tflite", "tflite")


def test_tflite_embedder_without_any_interpreter(monkeypatch, tmp_path) -> None:
    model = tmp_path / "embedder.tflite"
    model.write_bytes(b"\0" * 16)  # exists; the interpreter is looked for before the file is read
    _uninstall(monkeypatch, "ai_edge_litert", "tensorflow", "tflite_runtime")
    with pytest.raises(MissingExtraError) as info:
        create_embedder({"type": "tflite", "path": str(model)})
    assert str(info.value) == _message("the tflite embedder", "tflite", "ai_edge_litert")


def test_dreamsim_embedder_without_dreamsim(monkeypatch, tmp_path) -> None:
    _uninstall(monkeypatch, "dreamsim")
    with pytest.raises(MissingExtraError) as info:
        create_embedder({"type": "dreamsim", "weights": str(tmp_path)})
    assert str(info.value) == _message("the dreamsim embedder", "dreamsim", "dreamsim")


# -- the helper itself ------------------------------------------------------------------------------------


class _PlantedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``target`` first and runs ``body`` as its code (e.g. a failing import, a syntax error)."""

    def __init__(self, target: str, body: str) -> None:
        self.target, self.body = target, body

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.target else None

    def create_module(self, spec):
        return None

    def exec_module(self, module: ModuleType) -> None:
        exec(compile(self.body, f"<planted {self.target}>", "exec"), module.__dict__)


def _forget(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Unimport ``module`` for this test, so that the next import runs it again."""
    monkeypatch.delitem(sys.modules, module, raising=False)
    parent, _, child = module.rpartition(".")
    if parent in sys.modules:  # else ``from parent import child`` reuses the attribute without importing
        monkeypatch.delattr(sys.modules[parent], child, raising=False)


def _plant(monkeypatch: pytest.MonkeyPatch, target: str, body: str) -> None:
    """Replace module ``target`` by ``body`` for this test, as if it were imported for the first time."""
    _forget(monkeypatch, target)
    monkeypatch.setattr(sys, "meta_path", [_PlantedModule(target, body), *sys.meta_path])


def test_require_names_a_missing_dependency_of_the_package(monkeypatch) -> None:
    """An installed package whose own dependency is missing: the extra (which pulls it) is named."""
    _plant(monkeypatch, "_autointerp_fake_extra_pkg", "import _autointerp_no_such_dependency\n")
    with pytest.raises(MissingExtraError) as info:
        require("_autointerp_fake_extra_pkg", "clip", "the thing")
    assert str(info.value) == _message("the thing", "clip", "_autointerp_no_such_dependency")


def test_require_does_not_hide_other_errors(monkeypatch) -> None:
    _plant(monkeypatch, "_autointerp_fake_broken_pkg", "raise RuntimeError('planted: incompatible version')\n")
    with pytest.raises(RuntimeError, match="planted: incompatible version"):
        require("_autointerp_fake_broken_pkg", "clip", "the thing")
    with pytest.raises(ModuleNotFoundError, match="autointerp.no_such_module"):  # in-tree: never an extra
        with extra_imports("survey", "the survey"):
            import autointerp.no_such_module  # noqa: F401
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        require("os", "nope", "the thing")


def test_require_returns_the_module_and_installed_sees_uninstall(monkeypatch) -> None:
    assert require("json", "clip", "the thing") is sys.modules["json"]
    assert installed("json")
    _uninstall(monkeypatch, "json")
    assert not installed("json") and not installed("json.decoder")


# -- in-tree modules fail loudly --------------------------------------------------------------------------

BROKEN_BODIES = {
    # a top-level import of a package that is not installed: the case that used to become "unknown model"
    "missing_dependency": (
        "import _autointerp_planted_missing_dep\n",
        ModuleNotFoundError,
        "_autointerp_planted_missing_dep",
    ),
    "syntax_error": ("def broken(:\n", SyntaxError, "planted"),
    "bad_in_tree_import": ("from autointerp.models.base import no_such_name\n", ImportError, "no_such_name"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_BODIES))
def test_broken_model_adapter_module_fails_loudly_not_unknown_model(monkeypatch, case) -> None:
    from autointerp.models.base import _load_builtin_models

    body, exc_type, text = BROKEN_BODIES[case]
    MODELS.names()  # everything registered, as in a real session before the module broke
    monkeypatch.setattr(MODELS, "_items", {k: v for k, v in MODELS._items.items() if k != "tflite"})
    monkeypatch.setattr(MODELS, "_loaders", [_load_builtin_models])
    _forget(monkeypatch, "autointerp.models.builtin")
    _plant(monkeypatch, "autointerp.models.tflite", body)
    for name in ("tflite", "demo_cnn", "tflite"):  # every lookup, not only the first, shows the real error
        with pytest.raises(exc_type) as info:
            create_model(name, weights="x.tflite") if name == "tflite" else create_model(name, pretrained=False)
        assert text in str(info.value) or text in (getattr(info.value, "filename", "") or "")
        assert "unknown model" not in str(info.value)


def test_broken_embedder_module_fails_loudly_on_every_lookup(monkeypatch) -> None:
    from autointerp.embedders import _load_builtins

    EMBEDDERS.names()
    monkeypatch.setattr(EMBEDDERS, "_items", {k: v for k, v in EMBEDDERS._items.items() if k != "open_clip"})
    monkeypatch.setattr(EMBEDDERS, "_loaders", [_load_builtins])
    _plant(monkeypatch, "autointerp.embedders.open_clip_embedder", "import _autointerp_planted_missing_dep\n")
    for spec in ("open_clip", "handcrafted"):
        with pytest.raises(ModuleNotFoundError, match="_autointerp_planted_missing_dep"):
            create_embedder(spec)


# -- the core imports no extra ----------------------------------------------------------------------------

LEAN_SCRIPT = """
import sys
for name in {optional!r}:
    sys.modules[name] = None  # any import of an optional package now raises
from typer.testing import CliRunner
from autointerp.cli import app
runner = CliRunner()
for args in (["--help"], ["survey", "--help"], ["models"], ["models", "demo_cnn"], ["stages"]):
    r = runner.invoke(app, args)
    assert r.exit_code == 0, (args, r.output, r.exception)
    if args == ["models"]:
        assert {{"demo_cnn", "inceptionv1", "timm", "tflite", "torchvision"}} <= set(r.output.split()), r.output
import numpy as np
from autointerp.embedders import create_embedder, list_embedders
from autointerp.models import create_model
from autointerp.pipeline import STAGES
from autointerp.rating import list_raters
assert {{"handcrafted", "open_clip", "timm", "tflite", "dreamsim"}} <= set(list_embedders())
create_model("demo_cnn", pretrained=False)
create_embedder({{"type": "handcrafted"}}).embed(np.zeros((2, 32, 32, 3), np.uint8))
assert "clip_coherence" in list_raters()
for stage in STAGES:
    stage.function()
import autointerp.report, autointerp.survey.export, autointerp.survey.loader
print("lean ok")
"""


def test_core_commands_and_registrations_import_no_optional_package() -> None:
    code = textwrap.dedent(LEAN_SCRIPT.format(optional=OPTIONAL))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("lean ok"), res.stdout + res.stderr


# -- pyproject.toml ---------------------------------------------------------------------------------------


def _expand(extras: dict[str, list[str]], name: str) -> set[str]:
    """Distribution names (canonical) an extra installs, following ``autointerp[a,b]`` self-references."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out: set[str] = set()
    for spec in extras[name]:
        req = Requirement(spec)
        if canonicalize_name(req.name) == "autointerp":
            for sub in req.extras:
                out |= _expand(extras, sub)
        else:
            out.add(canonicalize_name(req.name))
    return out


def test_pyproject_extras_dev_contains_every_other_extra() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(extras) == set(EXTRAS) | {"all", "dev"}
    dev, everything = _expand(extras, "dev"), _expand(extras, "all")
    for name in EXTRAS:
        assert _expand(extras, name) <= everything, name
        assert _expand(extras, name) <= dev, name
    assert {"pytest", "ruff", "httpx", "playwright"} <= dev
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert {"torch", "torchvision", "numpy", "torch-lucent"} <= core
    assert not core & everything, f"optional packages in the core dependencies: {core & everything}"
    for r in project["dependencies"]:
        if canonicalize_name(Requirement(r).name) in ("torch", "torchvision"):
            assert not Requirement(r).specifier, f"torch/torchvision must not be pinned: {r}"
    # extras.EXTRAS (import names) and pyproject (distribution names) describe the same packages
    dists = importlib.metadata.packages_distributions()
    for name, modules in EXTRAS.items():
        for module in modules:
            if module in dists:  # installed here
                assert {canonicalize_name(d) for d in dists[module]} & _expand(extras, name), (name, module)
