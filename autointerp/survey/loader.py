"""Open a survey on a run folder: pick the features, check (and pin) their images, open the answers database."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autointerp.errors import DataError, UserError
from autointerp.runfolder import RunPaths
from autointerp.survey.access import load_secret
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

MAX_CONSENT_CHARS = 20_000


@dataclass
class Survey:
    """A survey ready to serve: the run, its surveyed features (by index), the answers store, the
    survey's secret (tokens, handles) and the consent text (None = no consent page)."""

    run: Path
    features: dict[int, SurveyFeature]
    store: SurveyStore
    secret: bytes = b""
    consent_text: str | None = None
    changed_images: list[int] = field(default_factory=list)  # re-pinned with --accept-changed-images
    image_sha256: dict[Path, str] = field(default_factory=dict)  # what each image held when serving started

    @property
    def db_path(self) -> Path:
        return self.store.path


def file_digests(features: Sequence[SurveyFeature]) -> dict[Path, str]:
    """SHA-256 of every image of ``features`` (visualisations and dataset examples)."""
    out: dict[Path, str] = {}
    for feat in features:
        for path in (*feat.vis, *feat.examples):
            try:
                out[path] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise DataError(f"{path}: cannot read survey image ({exc.strerror})") from None
    return out


def image_digests(features: Sequence[SurveyFeature], files: dict[Path, str] | None = None) -> dict[int, str]:
    """Per feature, a SHA-256 over the contents of its visualisations and dataset examples, in order."""
    files = files if files is not None else file_digests(features)
    out = {}
    for feat in features:
        h = hashlib.sha256()
        for path in (*feat.vis, *feat.examples):
            h.update(bytes.fromhex(files[path]))
        out[feat.feature] = h.hexdigest()
    return out


def pin_images(
    store: SurveyStore,
    features: Sequence[SurveyFeature],
    accept_changed: bool = False,
    files: dict[Path, str] | None = None,
) -> list[int]:
    """Pin the images' hashes when the study starts; refuse (naming the features) when they changed since.

    Before the first participant registers the pin simply follows the run. ``accept_changed`` re-pins
    and returns the changed features (the caller says so); otherwise a change is a :class:`UserError`.
    """
    digests = image_digests(features, files)
    value = json.dumps({str(f): d for f, d in sorted(digests.items())})
    pinned = store.meta().get("image_sha256")
    n_people = store.n_participants()
    if pinned is None or n_people == 0:
        store.set_meta("image_sha256", value)
        return []
    old = json.loads(pinned)
    changed = sorted(f for f, d in digests.items() if old.get(str(f)) != d)
    if not changed:
        return []
    if not accept_changed:
        listed = ", ".join(map(str, changed[:20])) + (" ..." if len(changed) > 20 else "")
        raise UserError(
            f"{store.path}: the images of {len(changed)} feature(s) changed since the study started "
            f"({n_people} participant(s) saw the old ones): {listed}; restore them, or serve with "
            "--accept-changed-images to continue with the new images"
        )
    store.set_meta("image_sha256", value)
    return changed


def read_consent(path: str | Path) -> tuple[str, str]:
    """The consent text of a UTF-8 text file and its SHA-256 (stored with each acceptance)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the consent text ({exc})") from None
    if not text:
        raise UserError(f"{path}: the consent text is empty")
    if len(text) > MAX_CONSENT_CHARS:
        raise UserError(f"{path}: the consent text has {len(text)} characters; at most {MAX_CONSENT_CHARS}")
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    per_participant: int | None = None,
    attention_checks: bool = False,
    consent: str | Path | None = None,
    accept_changed_images: bool = False,
) -> Survey:
    """Check the run's images for the chosen features, open (or create) the answers database, pin the
    images' hashes (see :func:`pin_images`) and load (or create) the survey's secret next to the database."""
    run = Path(run)
    feats, labels = choose_features(run, features, groups, group_size)
    loaded = load_survey_features(run, feats, labels, n_vis=n_vis, n_examples=n_examples)
    consent_text, consent_sha = read_consent(consent) if consent is not None else (None, None)
    db_path = Path(db) if db is not None else default_db_path(run)
    store = SurveyStore(
        db_path,
        feats,
        seed=seed,
        groups=labels,
        per_participant=per_participant,
        attention_checks=attention_checks,
        consent_sha256=consent_sha,
    )
    files = file_digests(loaded)
    survey = Survey(run, {f.feature: f for f in loaded}, store, load_secret(db_path.parent), consent_text)
    survey.changed_images = pin_images(store, loaded, accept_changed_images, files)
    survey.image_sha256 = files
    return survey
