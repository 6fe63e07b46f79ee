"""What a survey shows: the surveyed features, their images, and each participant's blinded order.

Everything is read from the run folder (see docs/ARCHITECTURE.md):
``visualizations/index.json`` (4 visualisations per feature), ``examples/index.json`` (the most
activating dataset images), ``importance/importance.csv`` (for ``--groups``), ``config.yaml`` and
``activations/meta.json`` (model and layer names for the export).
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autointerp.errors import DataError, UserError
from autointerp.runfiles import read_activation_meta, read_index
from autointerp.runfiles import read_importance as read_importance_table
from autointerp.runfolder import RunPaths

GROUPS = ("top", "middle")
DEFAULT_GROUP_SIZE = 40
N_VIS = 4
N_EXAMPLES = 8
MISSING = "run the stage that writes it first (see docs/ARCHITECTURE.md)"


@dataclass(frozen=True)
class SurveyFeature:
    """One surveyed feature: absolute, checked paths of its visualisations and dataset examples.

    ``group`` ('top' / 'middle' / None) is kept for the researcher and never sent to the browser.
    """

    feature: int
    vis: tuple[Path, ...]
    examples: tuple[Path, ...]
    group: str | None = None


def _run_file(run: Path, rel: Any, where: str) -> Path:
    """Resolve a path stored in an index file; it must be an existing file inside the run folder."""
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{where}: expected a path relative to the run folder, got {rel!r}")
    root = run.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{where}: path {rel!r} points outside the run folder {run}")
    if not path.is_file():
        raise DataError(f"{where}: image {rel!r} does not exist in {run}")
    return path


def available_features(run: str | Path) -> list[int]:
    """Features that have both visualisations and dataset examples in the run, sorted."""
    paths = RunPaths(Path(run))
    vis = read_index(paths.visualizations_index, required=MISSING)
    ex = read_index(paths.examples_index, required=MISSING)
    return sorted(set(vis) & set(ex))


def load_survey_features(
    run: str | Path,
    features: Sequence[int],
    groups: dict[int, str] | None = None,
    n_vis: int = N_VIS,
    n_examples: int = N_EXAMPLES,
) -> list[SurveyFeature]:
    """Load and check the images of ``features`` (the first ``n_vis`` visualisations, ``n_examples`` examples)."""
    run = Path(run)
    vis_index, ex_index = RunPaths(run).visualizations_index, RunPaths(run).examples_index
    vis_table = read_index(vis_index, required=MISSING)
    ex_table = read_index(ex_index, required=MISSING)
    groups = groups or {}
    out = []
    for f in features:
        key = int(f)
        if key not in vis_table:
            raise DataError(f"{vis_index}: no visualisations for feature {f}; run `autointerp visualize` for it")
        if key not in ex_table:
            raise DataError(f"{ex_index}: no dataset examples for feature {f}; run `autointerp examples` first")
        vis_entry, ex_entry = vis_table[key], ex_table[key]
        vis_paths = vis_entry.get("vis") if isinstance(vis_entry, dict) else None
        top = ex_entry.get("top") if isinstance(ex_entry, dict) else None
        if not isinstance(vis_paths, list) or not vis_paths:
            raise DataError(f"{vis_index}: feature {f}: expected a non-empty list 'vis'")
        if not isinstance(top, list) or not top:
            raise DataError(f"{ex_index}: feature {f}: expected a non-empty list 'top'")
        vis = tuple(
            _run_file(run, rel, f"{vis_index}: feature {f} vis[{i}]") for i, rel in enumerate(vis_paths[:n_vis])
        )
        examples = tuple(
            _run_file(run, e.get("path") if isinstance(e, dict) else e, f"{ex_index}: feature {f} top[{i}]")
            for i, e in enumerate(top[:n_examples])
        )
        out.append(SurveyFeature(int(f), vis, examples, groups.get(int(f))))
    return out


def read_feature_list(path: str | Path) -> list[int]:
    """Feature indices from a file: integers separated by commas/whitespace/newlines (``#`` starts a comment),
    or a CSV with a ``feature_ind`` (or ``neuron``) column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read feature list ({exc.strerror})") from None
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise UserError(f"{path}: feature list is empty")
    header = [h.strip() for h in lines[0].split(",")]
    if any(not re.fullmatch(r"-?\d+", tok) for tok in re.split(r"[,\s]+", lines[0]) if tok):
        col = next((c for c in ("feature_ind", "neuron", "feature") if c in header), None)
        if col is None:
            raise UserError(f"{path}: line 1: expected integers or a CSV header with a 'feature_ind' column")
        rows = csv.DictReader(lines)
        values = [(i + 2, (row.get(col) or "").strip()) for i, row in enumerate(rows)]
    else:
        values = []
        for lineno, line in enumerate(lines, 1):
            values += [(lineno, tok) for tok in re.split(r"[,\s]+", line) if tok]
    out: list[int] = []
    for lineno, tok in values:
        if not re.fullmatch(r"\d+", tok):
            raise UserError(f"{path}: line {lineno}: expected a non-negative feature index, got {tok!r}")
        if int(tok) not in out:
            out.append(int(tok))
    return out


def read_importance(run: str | Path) -> dict[int, float]:
    """``feature_ind -> importance`` (finite values only) from ``RUN/importance/importance.csv``."""
    path = RunPaths(Path(run)).importance_csv
    table = read_importance_table(path, missing="--groups needs importances (run `autointerp importance`)")
    out = table.check().values(finite=True)
    if not out:
        raise DataError(f"{path}: no feature has a finite importance")
    return out


def select_groups(importance: dict[int, float], groups: Iterable[str], size: int) -> dict[int, str]:
    """The study's groups, chosen exactly as the report chooses them (:mod:`autointerp.analysis.groups`):
    ``top`` = the ``size`` most important features, ``middle`` = the ``size`` features at the sorted
    positions centred on the median. Too few features for disjoint groups is an error, not a silent shrink."""
    import numpy as np

    from autointerp.analysis.groups import select_groups as study_groups

    groups = list(dict.fromkeys(groups))
    if not groups:
        raise UserError(f"--groups: name at least one group ({', '.join(GROUPS)})")
    for g in groups:
        if g not in GROUPS:
            raise UserError(f"--groups: unknown group {g!r}; valid groups: {', '.join(GROUPS)}")
    if size < 1:
        raise UserError(f"--group-size: expected at least 1, got {size}")
    feats = np.array(sorted(importance), dtype=np.int64)
    chosen = study_groups(feats, np.array([importance[int(f)] for f in feats]), top_n=size, middle_n=size)
    if chosen.top_n != size or chosen.middle_n != size:
        raise UserError(
            f"--group-size: {size} features per group do not fit {len(feats)} features with an importance "
            f"(top and median groups must not overlap); use at most {len(feats) // 3}"
        )
    out: dict[int, str] = {}
    if "middle" in groups:
        out.update({int(f): "middle" for f in chosen.middle})
    if "top" in groups:
        out.update({int(f): "top" for f in chosen.top})
    return out


def participant_order(features: Sequence[int], participant: str, seed: int = 0) -> list[int]:
    """The blinded order in which ``participant`` sees ``features``: a shuffle seeded by (seed, participant),
    so groups are mixed, every participant gets a different order, and a returning participant the same one."""
    digest = hashlib.sha256(f"{seed}\x00{participant}".encode()).digest()
    order = sorted(features)
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def run_model_layer(run: str | Path) -> tuple[str, str]:
    """(model, layer) names for the export: ``activations/meta.json`` when present, else ``config.yaml``."""
    import yaml

    run = Path(run)
    model = layer = None
    paths = RunPaths(run)
    if paths.activations_meta.exists():
        meta = read_activation_meta(paths)
        model, layer = meta.get("model"), meta.get("layer")
    if model is None or layer is None:
        cfg_path = paths.config
        if not cfg_path.exists():
            raise UserError(f"{run}: not a run folder (no {cfg_path.name})")
        try:
            cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise DataError(f"{cfg_path}: not readable YAML ({exc})") from None
        model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
        if model is None and isinstance(model_cfg, dict):
            model = model_cfg.get("name")
        if layer is None and isinstance(cfg, dict):
            layer = cfg.get("layer")
    if not model or not layer:
        raise DataError(f"{run}: cannot find the model and layer names ({paths.activations_meta} or {paths.config})")
    return str(model), str(layer)
