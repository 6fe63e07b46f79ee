"""Open a survey on a run folder: pick the features, check their images, open the answers database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import UserError
from autointerp.runfolder import RunPaths
from autointerp.survey.db import SurveyStore
from autointerp.survey.features import (
    DEFAULT_GROUP_SIZE,
    N_EXAMPLES,
    N_VIS,
    SurveyFeature,
    available_features,
    load_survey_features,
    read_feature_list,
    read_importance,
    select_groups,
)


@dataclass
class Survey:
    """A survey ready to serve: the run, its surveyed features (by index) and the answers store."""

    run: Path
    features: dict[int, SurveyFeature]
    store: SurveyStore

    @property
    def db_path(self) -> Path:
        return self.store.path


def default_db_path(run: str | Path) -> Path:
    """``RUN/survey/answers.sqlite``."""
    return RunPaths(Path(run)).survey_db


def choose_features(
    run: str | Path,
    features: str | Path | Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> tuple[list[int], dict[int, str]]:
    """The features to survey and their group labels.

    ``features`` lists them (indices, or a file read by :func:`read_feature_list`); ``groups`` (``top``,
    ``middle``) picks them by importance as the study did; neither = every feature with visualisations
    and dataset examples. Not both.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: run folder does not exist")
    if features is not None and groups:
        raise UserError("survey: give either --features or --groups, not both")
    if isinstance(features, (str, Path)):
        return read_feature_list(features), {}
    if features is not None:
        feats = list(dict.fromkeys(int(f) for f in features))
        if not feats or min(feats) < 0:
            raise UserError(f"--features: expected non-negative feature indices, got {feats}")
        return feats, {}
    if groups:
        labels = select_groups(read_importance(run), groups, group_size)
        return sorted(labels), labels
    feats = available_features(run)
    if not feats:
        raise UserError(f"{run}: no feature has both visualisations and dataset examples; run the pipeline first")
    return feats, {}


def open_survey(
    run: str | Path,
    features: str | Path | Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    group_size: int = DEFAULT_GROUP_SIZE,
    seed: int = 0,
    db: str | Path | None = None,
    n_vis: int = N_VIS,
    n_examples: int = N_EXAMPLES,
) -> Survey:
    """Check the run's images for the chosen features and open (or create) the answers database."""
    run = Path(run)
    feats, labels = choose_features(run, features, groups, group_size)
    loaded = load_survey_features(run, feats, labels, n_vis=n_vis, n_examples=n_examples)
    store = SurveyStore(db if db is not None else default_db_path(run), feats, seed=seed, groups=labels)
    return Survey(run, {f.feature: f for f in loaded}, store)
