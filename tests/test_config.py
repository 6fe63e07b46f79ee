"""Config loading, validation errors and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from autointerp.config import apply_overrides, dump_config, load_config
from autointerp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


SHIPPED = sorted((REPO / "configs").glob("*.yaml")) + [REPO / "autointerp/default_configs/demo.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.layer
    assert load_config(None, []).model_dump() != {} and dump_config(cfg).startswith("name:")


def test_overrides_parse_yaml_values_and_nested_keys() -> None:
    cfg = load_config(
        None,
        [
            "importance.k=5",
            "model.options={arch: resnet50}",
            "rate.raters=[random,fid]",
            "visualize.lr=0.01",
            "model.weights=/x/y.pth",
        ],
    )
    assert cfg.importance.k == 5
    assert cfg.model.options == {"arch": "resnet50"}
    assert cfg.rate.raters == ["random", "fid"]
    assert cfg.visualize.lr == pytest.approx(0.01)
    assert cfg.model.weights == "/x/y.pth"
    assert cfg.importance.fast_path.name == "auto" and cfg.importance.fast_path.options == {}
    fast = load_config(None, ["importance.fast_path.options.int8=false"]).importance.fast_path
    assert fast.options == {"int8": False}  # validated by the chosen path, not here


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("importance.kk=5", "unknown config key 'importance.kk'; allowed keys here: enabled, method, k"),
        ("importance.method=magic", "'importance.method' = 'magic' is not allowed; expected one of 'exact'"),
        ("activations.top_k=0", "'activations.top_k'"),
        ("bogus=1", "allowed keys here: name, output_dir"),
        ("noequals", "expected KEY=VALUE"),
        (
            "importance.fast_path.nmae=x",
            "unknown config key 'importance.fast_path.nmae'; allowed keys here: name, options",
        ),
    ],
)
def test_bad_keys_and_values_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_bad_yaml_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(lst)


def test_apply_overrides_refuses_to_descend_into_scalars() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"layer": "mixed5a"}, ["layer.x=1"])


@pytest.mark.parametrize("key", ["int8", "compile", "sparse", "lowrank"])
def test_old_fast_path_keys_say_where_they_moved(tmp_path: Path, key: str) -> None:
    """InceptionV1-only keys of the importance section moved into the fast path's options: one line says where,
    from a file and from an override."""
    old = tmp_path / "old.yaml"
    old.write_text(f"importance:\n  k: 5\n  {key}: true\n")
    expected = f"{old}: importance.{key} moved to importance.fast_path.options.{key}"
    with pytest.raises(ConfigError) as info:
        load_config(old)
    assert str(info.value) == expected
    with pytest.raises(ConfigError, match=f"^overrides: importance.{key} moved to importance.fast_path.options.{key}$"):
        load_config(None, [f"importance.{key}=true"])
    # where it moved, it loads
    assert load_config(None, [f"importance.fast_path.options.{key}=true"]).importance.fast_path.options == {key: True}


def test_removed_folded_key_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["importance.folded=auto"])
    assert "importance.folded: the folded tier was removed" in str(info.value) and "\n" not in str(info.value)


def test_importance_config_has_no_model_specific_keys() -> None:
    from autointerp.config import ImportanceConfig

    assert not {"int8", "compile", "sparse", "lowrank", "folded"} & set(ImportanceConfig.model_fields)
