"""``visualize.features: groups`` resolves to the report's top and middle groups by importance."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autointerp.config import config_from_dict
from autointerp.errors import UserError
from autointerp.runfolder import RunPaths
from autointerp.vis.selection import configured_example_features, configured_features


def _ctx(tmp: Path, features: object, example_features: object = "all") -> SimpleNamespace:
    cfg = config_from_dict(
        {
            "visualize": {"features": features, "example_features": example_features},
            "report": {"top_n": 3, "middle_n": 2},
        }
    )
    return SimpleNamespace(config=cfg, paths=RunPaths(tmp))


def test_groups_are_top_and_median_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.permutation(20)  # distinct importances 0..19
    (tmp_path / "importance").mkdir()
    lines = ["model,layer,feature_ind,importance"] + [f"m,l,{i},{v}" for i, v in enumerate(values)]
    (tmp_path / "importance/importance.csv").write_text("\n".join(lines) + "\n")
    chosen = configured_features(_ctx(tmp_path, "groups"))
    by_value = {int(v): i for i, v in enumerate(values)}
    top = {by_value[v] for v in (17, 18, 19)}
    middle = {by_value[v] for v in (9, 10)}  # sorted positions 9..10 centred on the median of 20
    assert chosen == sorted(top | middle)


def test_lists_pass_through_and_missing_importance_is_an_error(tmp_path: Path) -> None:
    assert configured_features(_ctx(tmp_path, [3, 1])) == [3, 1]
    assert configured_features(_ctx(tmp_path, None)) is None
    with pytest.raises(UserError, match="needs .*importance.csv: run the importance stage first"):
        configured_features(_ctx(tmp_path, "groups"))


def test_examples_cover_every_feature_unless_told_otherwise(tmp_path: Path) -> None:
    # visualisations of a subset must not restrict the examples: example-based raters score the whole layer
    assert configured_example_features(_ctx(tmp_path, [3, 1])) is None
    assert configured_example_features(_ctx(tmp_path, [3, 1], "visualized")) == [3, 1]
    assert configured_example_features(_ctx(tmp_path, None, [5, 2])) == [5, 2]
    with pytest.raises(UserError, match="needs .*importance.csv"):
        configured_example_features(_ctx(tmp_path, None, "groups"))
