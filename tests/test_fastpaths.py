"""The fast-path interface (autointerp.importance.fastpaths): registry selection, option validation, and a
generic engine that imports no fast path and changes no process settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from autointerp.errors import ConfigError
from autointerp.importance.fastpaths import FAST_PATHS, FastPath, select_fast_path
from autointerp.models.base import ModelAdapter
from autointerp.models.inceptionv1 import create_inceptionv1

REPO = Path(__file__).resolve().parents[1]
SHAPE = (832, 7, 7)


@pytest.fixture(scope="module")
def inception() -> ModelAdapter:
    torch.manual_seed(0)
    return create_inceptionv1(pretrained=False)


class _Adapter(ModelAdapter):
    """A small CNN: no fast path serves it."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                       nn.Linear(4, 3)))  # fmt: skip


def test_auto_picks_the_inceptionv1_path_for_mixed5a_only(inception):
    chosen = select_fast_path("auto", {}, inception, "mixed5a", SHAPE)
    assert chosen is not None and chosen.path.name == "inceptionv1_mixed5a"
    assert chosen.options.model_dump() == {"compile": True, "int8": "auto", "sparse": "auto", "lowrank": "auto"}
    # another layer, other map sizes, another model: the generic engine
    assert select_fast_path("auto", {}, inception, "mixed4e", SHAPE) is None
    assert select_fast_path("auto", {}, inception, "mixed5a", (832, 14, 14)) is None
    assert select_fast_path("auto", {}, _Adapter(), "0", (4, 6, 6)) is None
    # none: always the generic engine, even where a path would serve
    assert select_fast_path("none", {}, inception, "mixed5a", SHAPE) is None
    # by name
    named = select_fast_path("inceptionv1_mixed5a", {"int8": False}, inception, "mixed5a", SHAPE)
    assert named is not None and named.options.int8 is False
    assert named.key == {"name": "inceptionv1_mixed5a", "options": named.options.model_dump(mode="json")}


def test_auto_passes_over_a_cpu_path_on_a_gpu_and_a_named_one_still_runs(inception):
    """On a CUDA device ``auto`` leaves mixed5a to the generic engine (the tail on the device); naming the
    CPU path keeps it."""
    assert FAST_PATHS.get("inceptionv1_mixed5a").devices == ("cpu",)
    assert select_fast_path("auto", {}, inception, "mixed5a", SHAPE, "cuda") is None
    assert select_fast_path("auto", {}, inception, "mixed5a", SHAPE, "cpu") is not None
    named = select_fast_path("inceptionv1_mixed5a", {}, inception, "mixed5a", SHAPE, "cuda")
    assert named is not None and named.path.name == "inceptionv1_mixed5a"


def test_the_built_factory_makes_the_path_with_its_options(inception):
    chosen = select_fast_path("auto", {"compile": False, "int8": False, "sparse": True, "lowrank": False},
                              inception, "mixed5a", SHAPE)  # fmt: skip
    assert chosen is not None
    path = chosen.factory(inception, "mixed5a", SHAPE)()
    info = path.describe()
    assert info["path"] == "inception_mixed5a_rank1"
    assert (info["sparse_tier"], info["lowrank_tier"]) == ("on", "off")
    assert info["int8_tier"].startswith("off (importance.fast_path.options.int8: false)")
    assert "folded_tier" not in info


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("auto", {"int8": "sometimes"}, "config key 'importance.fast_path.options.int8'"),
        ("auto", {"folded": True}, "unknown config key 'importance.fast_path.options.folded' for fast path "
                                   "'inceptionv1_mixed5a'; allowed keys here: compile, int8, sparse, lowrank"),
        ("auto", {"compile": [1]}, "'importance.fast_path.options.compile'"),
        ("fastest", {}, "'importance.fast_path.name' = 'fastest' is not a fast path; valid: auto, none, "
                        "inceptionv1_mixed5a"),
    ],
)  # fmt: skip
def test_bad_names_and_options_are_one_line_config_errors(inception, name, options, needle):
    with pytest.raises(ConfigError) as info:
        select_fast_path(name, options, inception, "mixed5a", SHAPE)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_named_path_that_does_not_serve_the_layer_is_refused(inception):
    with pytest.raises(ConfigError, match="'inceptionv1_mixed5a' does not support layer 'mixed4e'") as info:
        select_fast_path("inceptionv1_mixed5a", {}, inception, "mixed4e", SHAPE)
    assert "\n" not in str(info.value)


def test_auto_follows_registration_order_and_unregister(inception):
    """A path registered later does not displace an earlier one; once the earlier one is gone, auto finds it."""

    class Everything(FastPath):
        name = "everything_test"

        def supports(self, model, layer, shape):
            return True

        def describe(self):
            return "serves every model (test)"

    FAST_PATHS.names()
    FAST_PATHS.register(Everything.name, Everything())
    try:
        assert select_fast_path("auto", {}, inception, "mixed5a", SHAPE).path.name == "inceptionv1_mixed5a"
        assert select_fast_path("auto", {}, _Adapter(), "0", (4, 6, 6)).path.name == "everything_test"
        with pytest.raises(ConfigError, match="unknown config key 'importance.fast_path.options.x'"):
            select_fast_path("everything_test", {"x": 1}, _Adapter(), "0", (4, 6, 6))
    finally:
        FAST_PATHS.unregister(Everything.name)
    assert select_fast_path("auto", {}, _Adapter(), "0", (4, 6, 6)) is None


# In a fresh interpreter: import the generic engine (and the stage, the workers, the interface), record every
# mallopt call and MALLOC_* variable, then ask the InceptionV1 path for its process settings explicitly.
_PROBE = r"""
import ctypes, json, os, sys

calls = []
_getattr = ctypes.CDLL.__getattr__


def spy(self, name):
    if name == "mallopt":
        calls.append(name)
    return _getattr(self, name)


ctypes.CDLL.__getattr__ = spy
env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
import autointerp.importance
import autointerp.importance.engine, autointerp.importance.paths, autointerp.importance.affine
import autointerp.importance.workers, autointerp.importance.naive, autointerp.importance.attribution
import autointerp.importance.fastpaths
import autointerp.stages.importance

loaded = sorted(m for m in sys.modules if m.startswith("autointerp.importance.fastpaths."))
after_import = list(calls)
env_after = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
from autointerp.importance.fastpaths import FAST_PATHS

FAST_PATHS.get("inceptionv1_mixed5a").prepare_process()
print(json.dumps({"loaded": loaded, "after_import": after_import, "after_prepare": calls,
                  "env_same": env == env_after}))
"""


def test_generic_engine_imports_no_fast_path_and_changes_no_allocator_setting():
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []  # the InceptionV1 subpackage is imported only when the registry is asked
    assert result["after_import"] == [] and result["env_same"]
    if sys.platform.startswith("linux"):  # the probe sees the explicit request (glibc's mallopt)
        assert result["after_prepare"] == ["mallopt"]


def _plant_flips(ctx) -> None:
    """Set ``importance.k`` to put the first image's true class at the top-k boundary, and the features to some
    whose mean ablation flips it (found with the reference tail) plus a few others."""
    import numpy as np

    from autointerp.importance.fastpaths.inceptionv1.path import reference_tail
    from autointerp.importance.topk import topk_correct

    folder = ctx.paths.activations
    acts = torch.from_numpy(np.load(folder / "acts.npy").astype(np.float32))
    mean = torch.from_numpy(np.load(folder / "mean.npy").astype(np.float32))
    labels = torch.as_tensor(np.load(folder / "labels.npy").astype(np.int64))
    valid = ctx.model.valid_outputs.bool()
    module = ctx.model.module
    with torch.no_grad():
        z = reference_tail(module, acts[:1])[0].masked_fill(~valid, float("-inf"))
        k = int((z > z[labels[0]]).sum()) + 1  # correct in the top k, by the narrowest margin
        ablated = acts[:1].repeat(832, 1, 1, 1)
        ablated[torch.arange(832), torch.arange(832)] = mean[:, None, None]
        flips = torch.nonzero(~topk_correct(reference_tail(module, ablated), labels[0].expand(832), k, valid))[:, 0]
    assert len(flips) > 0, "no channel flips the planted image: the case needs another seed"
    ctx.config.importance.k = k
    ctx.config.importance.features = sorted({*flips[:4].tolist(), 0, 411, 831})


def test_the_stage_asks_the_registry_and_none_gives_the_same_counts(tmp_path):
    """The stage on InceptionV1 mixed5a: ``auto`` runs the InceptionV1 path, ``none`` the generic tail path,
    with identical counts; options the path refuses stop the stage before any work, in one line."""
    import csv

    from test_importance_workers import _inception_run

    from autointerp.stages.importance import run_importance

    ctx = _inception_run(tmp_path / "run", workers=1)
    _plant_flips(ctx)
    run_importance(ctx)
    summary = json.loads((ctx.paths.importance / "summary.json").read_text())["exact"]
    assert summary["path"] == "inception_mixed5a_rank1" and "pairs_by_tier" in summary

    def counts():
        with ctx.paths.importance_csv.open(newline="") as fh:
            return [(r["feature_ind"], r["correct_to_wrong"], r["wrong_to_correct"]) for r in csv.DictReader(fh)]

    fast = counts()
    assert sum(int(c) + int(w) for _, c, w in fast) > 0  # something flips: the comparison says something
    ctx.config.importance.fast_path.name = "none"
    run_importance(ctx, overwrite=True)
    summary = json.loads((ctx.paths.importance / "summary.json").read_text())["exact"]
    assert summary["path"] in ("tail", "affine") and "pairs_by_tier" not in summary
    assert counts() == fast
    ctx.config.importance.fast_path.name = "auto"
    ctx.config.importance.fast_path.options = {"int8": "sometimes"}
    with pytest.raises(ConfigError, match="'importance.fast_path.options.int8'"):
        run_importance(ctx, overwrite=True)
