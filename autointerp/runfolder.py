"""The run folder: where every stage reads its inputs and writes its outputs.

See docs/ARCHITECTURE.md for the layout. :class:`RunContext` gives stages lazy access to the
resolved config, the model adapter and the dataset.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autointerp.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from autointerp.config import RunConfig
    from autointerp.data.base import ImageDataset
    from autointerp.models.base import ModelAdapter


# -- file names ------------------------------------------------------------------------------------
# Every artifact's name inside a run folder, in one place (docs/ARCHITECTURE.md, "Run folder layout").
# Other modules build paths through :class:`RunPaths` (or these constants) and read/write the files through
# :mod:`autointerp.runfiles`; tests/test_runfiles.py checks that no other module spells a name out.
CONFIG_YAML = "config.yaml"
ACTIVATIONS_DIR = "activations"
META_JSON = "meta.json"  # the activation cache's metadata, and each feature folder's entry
ACTS_NPY = "acts.npy"
SCORES_NPY = "scores.npy"
MEAN_NPY = "mean.npy"
MEAN_POSITION_NPY = "mean_position.npy"
TOPK_NPZ = "topk.npz"
LABELS_NPY = "labels.npy"
DATASET_INDEX_NPY = "dataset_index.npy"
IMPORTANCE_DIR = "importance"
IMPORTANCE_CSV = "importance.csv"
SUMMARY_JSON = "summary.json"  # the importance stage's summary, and the report's
RELIABILITY_JSON = "reliability.json"
BOOTSTRAP_CSV = "bootstrap.csv"
CUMULATIVE_ABLATION_CSV = "cumulative_ablation.csv"
CHUNKS_DIR = "chunks"
EXAMPLES_DIR = "examples"
INDEX_JSON = "index.json"  # examples/ and visualizations/
VISUALIZATIONS_DIR = "visualizations"
CARD_PNG = "card.png"
CONTACT_SHEET_PNG = "contact_sheet.png"
QUALITY_CSV = "quality.csv"
RATINGS_DIR = "ratings"
CACHE_DIR = "cache"
REPORT_DIR = "report"
INDEX_HTML = "index.html"
SUMMARY_MD = "summary.md"
SURVEY_DIR = "survey"
ANSWERS_SQLITE = "answers.sqlite"

#: the activation cache's files that importance reads (and whose sizes/mtimes key its saved chunks)
IMPORTANCE_INPUTS = (ACTS_NPY, LABELS_NPY, MEAN_NPY, MEAN_POSITION_NPY, META_JSON)


def feature_dirname(feature: int) -> str:
    """Zero-padded folder name of a feature (``12`` → ``'0012'``)."""
    return f"{feature:04d}"


def importance_method_csv_name(method: str) -> str:
    """``importance_<method>.csv``: one method's importance table."""
    return f"importance_{method}.csv"


def feature_relpath(folder: str, feature: int, name: str) -> str:
    """Run-relative path of a file in a feature folder, as the indexes store it
    (``feature_relpath(VISUALIZATIONS_DIR, 12, CARD_PNG)`` → ``'visualizations/0012/card.png'``)."""
    return f"{folder}/{feature_dirname(feature)}/{name}"


@dataclass(frozen=True)
class RunPaths:
    """Paths inside a run folder (names: the constants above)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / CONFIG_YAML

    # -- activations ----------------------------------------------------------------------------
    @property
    def activations(self) -> Path:
        return self.root / ACTIVATIONS_DIR

    @property
    def activations_meta(self) -> Path:
        return self.activations / META_JSON

    @property
    def acts(self) -> Path:
        return self.activations / ACTS_NPY

    @property
    def scores(self) -> Path:
        return self.activations / SCORES_NPY

    @property
    def mean(self) -> Path:
        return self.activations / MEAN_NPY

    @property
    def mean_position(self) -> Path:
        return self.activations / MEAN_POSITION_NPY

    @property
    def topk(self) -> Path:
        return self.activations / TOPK_NPZ

    @property
    def labels(self) -> Path:
        return self.activations / LABELS_NPY

    @property
    def dataset_index(self) -> Path:
        return self.activations / DATASET_INDEX_NPY

    # -- importance -----------------------------------------------------------------------------
    @property
    def importance(self) -> Path:
        return self.root / IMPORTANCE_DIR

    @property
    def importance_csv(self) -> Path:
        return self.importance / IMPORTANCE_CSV

    def importance_method_csv(self, method: str) -> Path:
        """``RUN/importance/importance_<method>.csv``."""
        return self.importance / importance_method_csv_name(method)

    @property
    def importance_summary(self) -> Path:
        return self.importance / SUMMARY_JSON

    @property
    def reliability_json(self) -> Path:
        return self.importance / RELIABILITY_JSON

    @property
    def bootstrap_csv(self) -> Path:
        return self.importance / BOOTSTRAP_CSV

    @property
    def cumulative_ablation_csv(self) -> Path:
        return self.importance / CUMULATIVE_ABLATION_CSV

    def chunks(self, method: str) -> Path:
        """``RUN/importance/chunks/<method>/``: saved units of work, reused on resume."""
        return self.importance / CHUNKS_DIR / method

    # -- examples and visualisations ---------------------------------------------------------------
    @property
    def examples(self) -> Path:
        return self.root / EXAMPLES_DIR

    @property
    def examples_index(self) -> Path:
        return self.examples / INDEX_JSON

    @property
    def visualizations(self) -> Path:
        return self.root / VISUALIZATIONS_DIR

    @property
    def visualizations_index(self) -> Path:
        return self.visualizations / INDEX_JSON

    @property
    def quality_csv(self) -> Path:
        return self.visualizations / QUALITY_CSV

    @property
    def contact_sheet(self) -> Path:
        return self.visualizations / CONTACT_SHEET_PNG

    # -- ratings, report, survey -------------------------------------------------------------------
    @property
    def ratings(self) -> Path:
        return self.root / RATINGS_DIR

    def rating_csv(self, rater: str) -> Path:
        """``RUN/ratings/<rater>.csv``."""
        return self.ratings / f"{rater}.csv"

    def rating_json(self, rater: str) -> Path:
        """``RUN/ratings/<rater>.json``."""
        return self.ratings / f"{rater}.json"

    @property
    def ratings_cache(self) -> Path:
        return self.ratings / CACHE_DIR

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def survey(self) -> Path:
        return self.root / SURVEY_DIR

    @property
    def survey_db(self) -> Path:
        return self.survey / ANSWERS_SQLITE


def report_paths(folder: Path) -> tuple[Path, Path, Path]:
    """(``index.html``, ``summary.json``, ``summary.md``) of a report folder (``RUN/report`` or elsewhere)."""
    return folder / INDEX_HTML, folder / SUMMARY_JSON, folder / SUMMARY_MD


class RunContext:
    """Everything a stage needs: run folder paths, resolved config, lazily built model and data."""

    def __init__(self, root: str | Path, config: RunConfig) -> None:
        self.root = Path(root)
        self.config = config
        self.paths = RunPaths(self.root)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, config: RunConfig, root: str | Path | None = None) -> RunContext:
        """Start (or continue) a run in ``root`` (default ``config.output_dir``), writing config.yaml."""
        from autointerp.atomic import write_text
        from autointerp.config import dump_config, load_config

        root = Path(root if root is not None else config.output_dir)
        ctx = cls(root, config)
        if ctx.paths.config.exists():
            check_same_pipeline(load_config(ctx.paths.config), config, ctx.paths.config)
        write_text(ctx.paths.config, dump_config(config))
        return ctx

    @classmethod
    def open(cls, root: str | Path, overrides: list[str] | None = None) -> RunContext:
        """Open an existing run folder (reads RUN/config.yaml)."""
        root = Path(root)
        cfg_path = RunPaths(root).config
        if not cfg_path.exists():
            raise UserError(f"{root}: not a run folder (no config.yaml); start one with `autointerp run CONFIG`")
        from autointerp.config import load_config

        return cls(root, load_config(cfg_path, overrides))

    # -- lazy resources -----------------------------------------------------------------------
    @functools.cached_property
    def device(self) -> torch.device:
        """The torch device from ``config.device`` ('auto' = cuda when available)."""
        import torch

        want = self.config.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise UserError("config key 'device' = 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
        return torch.device(want)

    @functools.cached_property
    def unchecked_model(self) -> ModelAdapter:
        """The model adapter (eval mode, on :attr:`device`), not compared with the activation cache.

        Random initialisation (``model.pretrained: false``) is seeded from the config's ``seed``, so every
        process (a resumed stage, a worker) builds the same network; the global RNG is left as it was.
        """
        import torch

        from autointerp.models.base import create_model

        if "model" in self.__dict__:  # an adapter set on the context directly (tests, notebooks) is the model
            return self.__dict__["model"]
        mc = self.config.model
        # the CPU generator only (the network is built on the CPU): torch.manual_seed would also reseed every
        # CUDA generator, which fork_rng(devices=[]) does not restore
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.config.seed)
            adapter = create_model(mc.name, weights=mc.weights, pretrained=mc.pretrained, **mc.options)
        adapter.check_layer(self.config.layer)
        return adapter.to(self.device)

    @functools.cached_property
    def model_fingerprint(self) -> str:
        """:func:`~autointerp.models.fingerprint.weights_fingerprint` of the model's weights."""
        from autointerp.models.fingerprint import weights_fingerprint

        return weights_fingerprint(self.unchecked_model.module, self.unchecked_model.fingerprint_extra)

    @functools.cached_property
    def model(self) -> ModelAdapter:
        """The model adapter, checked against the activation cache: a cache recorded with other weights
        (``model_fingerprint`` in ``RUN/activations/meta.json``) is a one-line error, never silently mixed."""
        from autointerp.runfiles import read_activation_meta

        adapter = self.unchecked_model
        meta_path = self.paths.activations_meta
        if meta_path.exists():
            recorded = read_activation_meta(self.paths).get("model_fingerprint")
            if recorded is not None and recorded != self.model_fingerprint:
                raise UserError(
                    f"{meta_path}: the activation cache was made with other model weights (fingerprint {recorded}, "
                    f"this model {self.model_fingerprint}); rerun `autointerp activations {self.root} --overwrite` "
                    "or use the weights it was made with"
                )
        return adapter

    @functools.cached_property
    def dataset(self) -> ImageDataset:
        """The dataset named in the config (subset applied)."""
        from autointerp.data import load_dataset

        return load_dataset(self.config.dataset)

    def image_size(self) -> int:
        """Size images are resized to before the model (config, else the model's input size)."""
        return self.config.dataset.image_size or self.model.input_size


def check_same_pipeline(old: RunConfig, new: RunConfig, where: Path) -> None:
    """Refuse to reuse a run folder for another model/layer/dataset: stages are skipped when their
    output exists, so mixing would silently combine results of different runs."""
    if _pipeline_key(old) != _pipeline_key(new):
        raise UserError(
            f"{where}: this run folder was made with a different model/layer/dataset/label mapping; "
            "use a new output folder, or delete the old one"
        )


def _pipeline_key(config: RunConfig) -> Any:
    return (
        config.model.model_dump(mode="json"),
        config.layer,
        config.dataset.model_dump(mode="json"),
        config.label_mapping.model_dump(mode="json"),
    )
