"""The run folder's file names are spelled out in one module only (autointerp/runfolder.py), so a renamed or
moved artifact cannot leave a stale copy of its name behind in a stage, the analysis, the survey or the report.

The check reads the package's source as Python (``ast``): string literals and f-string parts count, docstrings
and comments do not (they document the layout). It flags (1) a literal containing an artifact's file name and
(2) a path built by dividing by a literal run-folder directory name (``root / "importance"``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from autointerp import runfolder

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(REPO / "autointerp").rglob("*.py"), *(REPO / "raters").rglob("*.py")])
OWNER = REPO / "autointerp" / "runfolder.py"

#: every file name the layout defines (constants of runfolder.py whose value has an extension)
FILE_NAMES = sorted(
    {v for k, v in vars(runfolder).items() if k.isupper() and isinstance(v, str) and re.fullmatch(r"\w+\.\w+", v)}
)
#: the run folder's directory names
DIR_NAMES = {v for k, v in vars(runfolder).items() if k.endswith("_DIR") and isinstance(v, str)}
#: (module, name) where the same name means something that is not a run-folder file, each with its reason
ALLOWED = {
    ("autointerp/survey/app.py", "index.html"),  # the survey app's own page, in its static folder
}
NAME_RE = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, FILE_NAMES)) + r"|importance_\w+\.csv)(?!\w)")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each ``{...}`` as ``X`` (``f"importance_{m}.csv"`` →
    ``importance_X.csv``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    return None


def offences(source: str, name: str = "<src>") -> list[str]:
    """Where ``source`` spells out a run-folder file name or divides by a run-folder directory literal."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # its parts are checked as the whole f-string
            skip.update(id(v) for v in node.values)
    found = []
    for node in ast.walk(tree):
        text = _text(node)
        if text is not None and id(node) not in skip:
            hit = NAME_RE.search(text)
            if hit:
                found.append(f"{name}:{node.lineno}: literal {hit.group(0)!r}")
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and isinstance(node.right, ast.Constant)
            and node.right.value in DIR_NAMES
        ):
            found.append(f"{name}:{node.lineno}: path built with / {node.right.value!r}")
    return found


def test_the_check_sees_names_in_literals_and_fstrings_but_not_docstrings() -> None:
    assert FILE_NAMES and "importance.csv" in FILE_NAMES and "meta.json" in FILE_NAMES
    assert DIR_NAMES >= {"activations", "importance", "examples", "visualizations", "ratings", "report"}
    planted = '''"""Reads RUN/importance/importance.csv."""
def f(root, m):
    """and meta.json"""
    a = root / "importance" / "importance.csv"
    b = f"{root}/examples/index.json"
    c = root / f"importance_{m}.csv"
    d = "my_index.jsonl", "summary.json5", "x.meta.json", "examples", root / "ratings_old"
    return a, b, c, d  # summary.json
'''
    assert sorted(offences(planted)) == [
        "<src>:4: literal 'importance.csv'",
        "<src>:4: path built with / 'importance'",
        "<src>:5: literal 'index.json'",
        "<src>:6: literal 'importance_X.csv'",
    ]
    assert offences('x = "scores.npy"') == ["<src>:1: literal 'scores.npy'"]


@pytest.mark.parametrize("path", [p for p in SOURCES if p != OWNER], ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_but_runfolder_spells_out_artifact_names(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    allowed = tuple(f" literal {name!r}" for module, name in ALLOWED if module == rel)
    found = [f for f in offences(path.read_text(encoding="utf-8"), rel) if not f.endswith(allowed or ("\0",))]
    assert not found, "use autointerp.runfolder's names/RunPaths and autointerp.runfiles: " + "; ".join(found)
