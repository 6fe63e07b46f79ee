"""Typed rater options: each rater's options are a pydantic model checked when the rater is built.

The defaults table below was written from the built-in raters' ``defaults`` dicts as they stood before
the options became typed (``git show HEAD:raters/<file>.py``), so a changed default fails here.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.errors import ConfigError
from autointerp.rating import (
    RATERS,
    Rater,
    RaterOptions,
    build_rater,
    create_rater,
    option,
    option_rows,
    register_rater,
)

#: every built-in rater's options and defaults before the change (read from the old source)
OLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "human": {"invalid": None, "layer": None, "model": None},
    "clip_coherence": {"n_null": 500, "null_pool": 256, "calibration": "percentile", "which": "top", "center": "pool"},
    "clip_vis_match": {"n_null": 500, "null_pool": 256, "calibration": "percentile"},
    "clip_label": {
        "vocabulary": ["imagenet", "concepts"],
        "concepts": None,
        "template": "a photo of {}",
        "top_m": 3,
        "logit_scale": None,
        "n_null": 500,
        "null_pool": 256,
        "calibration": "percentile",
        "match": "distribution",
    },
    "fid": {"shrinkage": "ledoit_wolf", "normalize": True, "n_null": 200, "null_pool": 256, "kid_gamma": "auto"},
    "mis": {"n_tasks": 20, "k": 9, "quantile": 0.1, "alpha": None, "choices": None, "n_null": 200},
    "auto_I": {
        "q13_source": "clip_vis_match.q1q3",
        "q4_source": "clip_coherence.q4",
        "calibration": "isotonic",
        "folds": 5,
        "min_human": 10,
    },
    "random": {},
    "concept_purity": {"k": 64},
}


@pytest.fixture
def forget_raters():
    """Unregister raters a test adds (the registry is process-wide)."""
    before = set(RATERS.names())
    yield
    for name in set(RATERS.names()) - before:
        RATERS.unregister(name)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (so 500 vs 500.0 or True vs 1 counts as a change)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize("name", sorted(OLD_DEFAULTS))
def test_defaults_are_unchanged(name):
    cls = RATERS.get(name)
    assert issubclass(cls.Options, RaterOptions)
    assert same(cls.defaults, OLD_DEFAULTS[name]), cls.defaults
    built = create_rater(name)
    assert same(built.options, OLD_DEFAULTS[name]), built.options
    assert list(built.options) == list(OLD_DEFAULTS[name])  # option order (listings, JSON) kept too
    assert same(built.metadata()["options"], OLD_DEFAULTS[name])


def test_every_builtin_is_covered():
    from autointerp.rating import BUILTIN_RATER_MODULES

    modules = {RATERS.get(n).__module__ for n in OLD_DEFAULTS}
    assert modules == {f"raters.{m}" for m in BUILTIN_RATER_MODULES}


def test_mutable_defaults_are_not_shared():
    a = create_rater("clip_label")
    a.options["vocabulary"].append("oops")
    assert create_rater("clip_label").options["vocabulary"] == ["imagenet", "concepts"]
    assert RATERS.get("clip_label").defaults["vocabulary"] == ["imagenet", "concepts"]


# --------------------------------------------------------------------------------- bad values
BAD = [
    ("mis", "k", "nine", "an integer ≥ 1"),
    ("mis", "k", 0, "an integer ≥ 1"),
    ("mis", "k", True, "an integer ≥ 1"),
    ("mis", "n_null", 1, "an integer ≥ 2"),
    ("mis", "quantile", 0.75, "a fraction in (0, 0.5]"),
    ("mis", "quantile", "0.1", "a fraction in (0, 0.5]"),
    ("mis", "alpha", -2.0, "a number > 0"),
    ("mis", "alpha", math.inf, "a number > 0"),
    ("fid", "normalize", "yes", "true or false"),
    ("fid", "n_null", 2.5, "an integer ≥ 2"),
    ("fid", "shrinkage", 1.5, "'ledoit_wolf' or a number in [0, 1]"),
    ("fid", "kid_gamma", 0, "'auto' or a positive number"),
    ("clip_coherence", "n_null", 1, "an integer ≥ 2"),
    ("clip_coherence", "null_pool", "256", "an integer ≥ 2"),
    ("clip_coherence", "which", "middle", "one of top, bottom"),
    ("clip_coherence", "center", "mean", "one of pool, none"),
    ("clip_coherence", "calibration", "magic", "one of percentile, ecdf, z"),
    ("clip_vis_match", "null_pool", 1, "an integer ≥ 2"),
    ("clip_vis_match", "calibration", 3, "one of percentile, ecdf, z"),
    ("clip_label", "top_m", 0, "an integer ≥ 1"),
    ("clip_label", "logit_scale", -1.0, "a finite number > 0 or null"),
    ("clip_label", "vocabulary", ["imagenet", "wordnet"], "a non-empty list of imagenet, concepts"),
    ("clip_label", "vocabulary", "imagenet", "a non-empty list of imagenet, concepts"),
    ("clip_label", "template", "a photo", "a string containing '{}'"),
    ("clip_label", "match", "cosine", "one of distribution, label_mass"),
    ("auto_I", "folds", 1, "an integer ≥ 2"),
    ("auto_I", "min_human", "10", "an integer ≥ 3"),
    ("auto_I", "calibration", "spline", "one of isotonic, linear, none"),
    ("auto_I", "q4_source", 4, "a string"),
    ("concept_purity", "k", 0, "an integer ≥ 1"),
    ("concept_purity", "k", 2.5, "an integer ≥ 1"),
    ("human", "invalid", "ignore", "one of error, drop, clip, keep or null"),
    ("human", "layer", 3, "a string or null"),
]


@pytest.mark.parametrize(("rater", "key", "value", "expected"), BAD, ids=lambda v: repr(v)[:20])
def test_bad_value_is_a_one_line_error_naming_rater_key_value(rater, key, value, expected):
    with pytest.raises(ConfigError) as info:
        create_rater(rater, **{key: value})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"rate.options.{rater}.{key} = {value!r}; expected {expected}"), message


def test_bad_value_from_the_config_is_refused_by_build_rater():
    ctx = SimpleNamespace(config=SimpleNamespace(rate=SimpleNamespace(options={"mis": {"k": "nine"}})), seed=3)
    with pytest.raises(ConfigError, match=re.escape("rate.options.mis.k = 'nine'; expected an integer ≥ 1")):
        build_rater(ctx, "mis")
    ctx.config.rate.options["mis"] = {"k": 5, "seed": 11}
    rater = build_rater(ctx, "mis")
    assert rater.options["k"] == 5 and rater.seed == 11 and rater.opts.k == 5


def test_several_bad_values_name_the_first_and_list_the_rest():
    with pytest.raises(ConfigError) as info:
        create_rater("mis", k=0, quantile=0.9, n_null="x")
    message = str(info.value)
    assert message.startswith("rate.options.mis.k = 0; expected an integer ≥ 1")
    assert message.endswith("(also invalid: quantile, n_null)")


def test_good_values_pass_and_numbers_widen():
    rater = create_rater("mis", k=np.int64(4), quantile=0.5, alpha=2)  # numpy integers and int for a float
    assert rater.options["k"] == 4 and type(rater.options["k"]) is int
    assert rater.options["alpha"] == 2.0 and type(rater.options["alpha"]) is float
    assert rater.opts.quantile == 0.5
    fid = create_rater("fid", shrinkage=0, kid_gamma=0.5, normalize=False)
    assert fid.options["shrinkage"] == 0.0 and fid.gamma == 0.5
    assert create_rater("clip_label", logit_scale=None).options["logit_scale"] is None
    assert create_rater("mis", choices=Path("c.csv")).options["choices"] == Path("c.csv")


def test_removed_range_calibration_keeps_its_explanation():
    with pytest.raises(ConfigError, match=r"rate.options.clip_vis_match.calibration = 'range'; 'range' was removed"):
        create_rater("clip_vis_match", calibration="range")


def test_unknown_option_wording_is_kept():
    with pytest.raises(
        ConfigError, match=r"^rate.options.fid: unknown option 'gamma'; allowed options: kid_gamma, n_null"
    ):
        create_rater("fid", gamma=1.0)
    with pytest.raises(ConfigError, match=r"^rate.options.random: unknown option 'k'; allowed options: \(none\)$"):
        create_rater("random", k=1)


def test_cross_field_check_stays_at_scoring():
    rater = create_rater("mis", alpha=1.0, choices="c.csv")  # each value is fine alone
    with pytest.raises(ConfigError, match="set alpha or choices"):
        rater.score(None, [0])


# ------------------------------------------------------------------------ third-party raters
def test_rater_with_only_defaults_still_works_and_is_type_checked(forget_raters):
    @register_rater
    class Legacy(Rater):
        name = "legacy_defaults_test"
        description = "only sets defaults"
        scale = "uniform"
        defaults = {"n": 3, "width": 0.5, "label": "x", "flag": False, "anything": None, "sizes": [1, 2]}

        def score(self, ctx, features):
            return self.table(features, I=np.full(len(features), self.options["width"]))

    built = create_rater("legacy_defaults_test")
    assert same(built.options, Legacy.defaults)
    assert built.score(None, [1, 2]).I.tolist() == [0.5, 0.5]
    changed = create_rater("legacy_defaults_test", n=7, width=1, anything={"a": 1}, sizes=(4,))
    assert changed.options["n"] == 7 and changed.options["width"] == 1.0 and changed.options["anything"] == {"a": 1}
    assert changed.options["sizes"] == (4,)
    cases = [
        ("n", "7", "an integer"),
        ("n", 7.5, "an integer"),
        ("width", "wide", "a number"),
        ("flag", "no", "true or false"),
        ("label", 3, "a string"),
        ("sizes", 4, "a list"),
    ]
    for key, value, expected in cases:
        with pytest.raises(ConfigError) as info:
            create_rater("legacy_defaults_test", **{key: value})
        assert str(info.value) == f"rate.options.legacy_defaults_test.{key} = {value!r}; expected {expected}"
    with pytest.raises(
        ConfigError, match="unknown option 'm'; allowed options: anything, flag, label, n, sizes, width"
    ):
        create_rater("legacy_defaults_test", m=1)


def test_defaults_keys_that_are_not_identifiers_still_work(forget_raters):
    @register_rater
    class Odd(Rater):
        name = "odd_keys_test"
        scale = "uniform"
        defaults = {"top-k": 5, "json": "a"}

    built = create_rater("odd_keys_test", **{"top-k": 6})
    assert built.options == {"top-k": 6, "json": "a"}
    with pytest.raises(ConfigError, match=re.escape("rate.options.odd_keys_test.top-k = 'six'; expected an integer")):
        create_rater("odd_keys_test", **{"top-k": "six"})
    assert [r[:3] for r in option_rows(Odd)] == [("top-k", "int", "5"), ("json", "str", '"a"')]


def test_a_declared_options_model_and_an_inherited_one(forget_raters):
    @register_rater
    class Typed(Rater):
        name = "typed_options_test"
        scale = "uniform"

        class Options(RaterOptions):
            depth: int = option(4, "how deep", ge=1, le=8)
            mode: str = option("fast", "fast or slow", expected="fast or slow")

    class Child(Typed):  # inherits the options model
        name = "typed_options_child_test"

    assert Typed.defaults == {"depth": 4, "mode": "fast"} and Child.Options is Typed.Options
    assert create_rater("typed_options_test", depth=8).opts.depth == 8
    with pytest.raises(ConfigError, match=re.escape("typed_options_test.depth = 9; expected an integer in [1, 8]")):
        create_rater("typed_options_test", depth=9)
    with pytest.raises(ConfigError, match=re.escape("typed_options_child_test.depth = 0; expected an integer in")):
        Child(depth=0)
    with pytest.raises(TypeError, match="must subclass"):

        class Broken(Rater):
            class Options:
                pass


# ------------------------------------------------------------------------------------------ CLI
def test_cli_lists_options_with_types_and_defaults():
    result = CliRunner().invoke(app, ["raters", "list", "--verbose"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    blocks: dict[str, list[str]] = {}
    for name in OLD_DEFAULTS:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
        end = next((j for j in range(start + 1, len(lines)) if not lines[j].startswith(" ")), len(lines))
        blocks[name] = [line.strip() for line in lines[start + 1 : end]]
    for name, defaults in OLD_DEFAULTS.items():
        if not defaults:
            assert blocks[name] == ["(no options)"]
        else:
            assert [line.split()[0] for line in blocks[name]] == list(defaults)
    row = re.fullmatch(r"k\s+(.+?)\s+=\s+(\S+)\s+(.+)", blocks["mis"][1])
    assert row and row.groups()[:2] == ("int ≥ 1", "9") and "explanations" in row.group(3)
    row = re.fullmatch(r"quantile\s+(.+?)\s+=\s+(\S+)\s+(.+)", blocks["mis"][2])
    assert row and row.groups()[:2] == ("float in (0, 0.5]", "0.1")
    assert blocks["clip_label"][0].startswith(
        "vocabulary   list['imagenet' | 'concepts']  = [\"imagenet\", \"concepts\"]"
    )
    plain = CliRunner().invoke(app, ["raters", "list"])
    assert plain.exit_code == 0 and "int ≥ 1" not in plain.output


def test_cli_show_prints_one_rater():
    result = CliRunner().invoke(app, ["raters", "show", "fid"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("fid: ") and "rate.options.fid" in out
    assert re.search(r"^\s+n_null\s+int ≥ 2\s+= 200\s+random sets", out, re.M), out
    assert re.search(r"^\s+normalize\s+bool\s+= true\s+L2", out, re.M), out
    assert re.search(r"^\s+kid_gamma\s+'auto' \| float > 0\s+= \"auto\"", out, re.M), out
    missing = CliRunner().invoke(app, ["raters", "show", "nope"])
    assert missing.exit_code != 0 and "unknown rater 'nope'" in missing.output
