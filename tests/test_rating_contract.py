"""The rater plug-in contract: score tables, options, registry, entry points, local files, the README example."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rater_harness import check_rater, make_world
from scipy import stats

from autointerp.errors import ConfigError, DataError, UserError
from autointerp.rating import (
    RATERS,
    Rater,
    ScoreTable,
    _load_entry_point_raters,
    create_rater,
    list_raters,
    load_rater_file,
    register_rater,
)

REPO = Path(__file__).resolve().parents[1]
BUILTINS = {"human", "clip_coherence", "clip_vis_match", "clip_label", "fid", "mis", "auto_I", "random"}


@pytest.fixture
def forget_raters():
    """Unregister raters a test adds (the registry is process-wide)."""
    before = set(RATERS.names())
    yield
    for name in set(RATERS.names()) - before:
        RATERS.unregister(name)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), n_features=6)


def readme_example() -> str:
    """The custom-rater code shown in README.md under '## Writing your own rater'."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## Writing your own rater\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert m, "README.md has no section '## Writing your own rater'"
    block = re.search(r"```python\n(.*?)```", m.group(1), flags=re.S)
    assert block, "README section 'Writing your own rater' has no ```python block"
    return block.group(1)


# ------------------------------------------------------------------------------------- score tables
def test_score_table_csv_round_trip_writes_nan_as_empty(tmp_path):
    t = ScoreTable([3, 1], [0.5, np.nan], {"q4": [0.25, 1.0]}, {"label": ["red; dots", "x,y"], "z": [np.nan, 2.0]})
    path = tmp_path / "r.csv"
    t.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "feature_ind,I,q4,label,z"
    assert lines[2].startswith("1,,1.0,")  # NaN → empty cell
    back = ScoreTable.read_csv(path, components=["q4"])
    assert list(back.feature_ind) == [3, 1]
    assert np.isnan(back.I[1]) and back.I[0] == 0.5
    assert list(back.extras["label"]) == ["red; dots", "x,y"]
    assert np.isnan(back.extras["z"][0]) and back.extras["z"][1] == 2.0


def test_score_table_rejects_bad_shapes_and_duplicate_columns():
    with pytest.raises(ValueError, match="has 1 values for 2 features"):
        ScoreTable([0, 1], [0.1])
    with pytest.raises(ValueError, match="unique"):
        ScoreTable([0], [0.1], {"q4": [1.0]}, {"q4": [2.0]})


def test_score_table_select_and_missing_rows():
    t = ScoreTable([0, 1, 2], [0.0, 0.1, 0.2], {"q4": [1, 2, 3]})
    s = t.select([2, 0])
    assert list(s.feature_ind) == [2, 0] and list(s.components["q4"]) == [3.0, 1.0]
    with pytest.raises(UserError, match=r"no rows for features \[7\]"):
        t.select([7])


def test_read_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("feature,score\n1,2\n")
    with pytest.raises(DataError, match="bad.csv: expected a header"):
        ScoreTable.read_csv(bad)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("feature_ind,I,q4\n1,2\n")
    with pytest.raises(DataError, match="row 2 has 2 cells, expected 3"):
        ScoreTable.read_csv(ragged)
    with pytest.raises(DataError, match="not found"):
        ScoreTable.read_csv(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------- raters
def test_every_builtin_is_registered_with_a_one_line_description():
    listed = list_raters()
    assert BUILTINS <= set(listed)
    for name in BUILTINS:
        assert listed[name] and "\n" not in listed[name]


def test_unknown_rater_and_unknown_option_are_one_line_errors():
    with pytest.raises(UserError, match=r"unknown rater 'nope'; valid: .*clip_coherence"):
        create_rater("nope")
    with pytest.raises(ConfigError, match=r"rate.options.fid: unknown option 'shrink'; allowed options: .*normalize"):
        create_rater("fid", shrink=0.1)


def test_declared_components_must_be_returned(forget_raters):
    @register_rater
    class Forgetful(Rater):
        name = "forgetful_test"
        description = "forgets q4"
        components = ("q4",)

        def score(self, ctx, features):
            return self.table(features, I=np.zeros(len(features)))

    with pytest.raises(ValueError, match=r"did not return its declared components \['q4'\]"):
        Forgetful().score(None, [0, 1])


def test_register_rejects_clashes_and_bad_needs(forget_raters):
    with pytest.raises(UserError, match="rater 'random' is already registered"):

        @register_rater
        class Random2(Rater):
            name = "random"

    with pytest.raises(TypeError, match="unknown entries"):

        @register_rater
        class Greedy(Rater):
            name = "greedy_test"
            needs = frozenset({"mind_reading"})

    @register_rater("renamed_test")
    class Named(Rater):
        description = "registered under an explicit name"

    assert RATERS.get("renamed_test") is Named and Named.name == "renamed_test"


# ------------------------------------------------------------------------------------- plug-ins
def test_entry_point_plugins_are_imported_and_broken_ones_warn(tmp_path, monkeypatch, forget_raters):
    pkg = tmp_path / "ep_raters_pkg.py"
    pkg.write_text(
        textwrap.dedent("""
        from autointerp.rating import Rater, register_rater

        @register_rater
        class FromEntryPoint(Rater):
            name = "from_entry_point_test"
            description = "registered through the autointerp.raters entry-point group"

            def score(self, ctx, features):
                return self.table(features, I=[1.0] * len(features))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        importlib.metadata.EntryPoint("good", "ep_raters_pkg", "autointerp.raters"),
        importlib.metadata.EntryPoint("broken", "no_such_module_xyz", "autointerp.raters"),
    ]

    def fake_entry_points(group=None, **kw):
        assert group == "autointerp.raters"
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with pytest.warns(UserWarning, match="rater plug-in 'broken'"):
        _load_entry_point_raters()
    assert "from_entry_point_test" in RATERS.names()
    sys.modules.pop("ep_raters_pkg", None)


def test_load_rater_file_errors(tmp_path, forget_raters):
    with pytest.raises(UserError, match="rater file not found"):
        load_rater_file(tmp_path / "missing.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(UserError, match="defines no rater"):
        load_rater_file(empty)
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    with pytest.raises(UserError, match="failed to import rater file .*SyntaxError"):
        load_rater_file(broken)


def test_readme_custom_rater_example_runs_and_passes_the_harness(tmp_path, world, forget_raters):
    code = readme_example()
    assert 12 <= len(code.strip().splitlines()) <= 30, "the README example should stay about 20 lines"
    path = tmp_path / "my_rater.py"
    path.write_text(code)
    names = load_rater_file(path)
    assert names == ["brightness"]
    assert load_rater_file(path) == names  # loading again is a no-op
    table = check_rater("brightness", world)
    # reference: mean brightness of each feature's top example PNGs, computed independently
    from PIL import Image

    ctx = world.context()
    expected = [
        np.mean([np.asarray(Image.open(p).convert("RGB")).mean() / 255 for p in ctx.example_paths(f)])
        for f in world.features
    ]
    np.testing.assert_allclose(table.extras["brightness"], expected, rtol=1e-12)
    # I is the raw value's percentile among random sets: in (0, 1) and in the raw value's order
    assert np.all((table.I > 0) & (table.I < 1))
    assert stats.spearmanr(table.I, expected).statistic == pytest.approx(1.0)
