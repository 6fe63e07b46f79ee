"""The run folder: where every stage reads its inputs and writes its outputs.

See docs/ARCHITECTURE.md for the layout. :class:`RunContext` gives stages lazy access to the
resolved config, the model adapter and the dataset.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autointerp.config import RunConfig, dump_config, load_config
from autointerp.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from autointerp.data.base import ImageDataset
    from autointerp.models.base import ModelAdapter


def feature_dirname(feature: int) -> str:
    """Zero-padded folder name of a feature (``12`` → ``'0012'``)."""
    return f"{feature:04d}"


@dataclass(frozen=True)
class RunPaths:
    """Paths inside a run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def importance(self) -> Path:
        return self.root / "importance"

    @property
    def importance_csv(self) -> Path:
        return self.root / "importance" / "importance.csv"

    @property
    def examples(self) -> Path:
        return self.root / "examples"

    @property
    def visualizations(self) -> Path:
        return self.root / "visualizations"

    @property
    def ratings(self) -> Path:
        return self.root / "ratings"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def survey(self) -> Path:
        return self.root / "survey"


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
        cfg_path = root / "config.yaml"
        if not cfg_path.exists():
            raise UserError(f"{root}: not a run folder (no config.yaml); start one with `autointerp run CONFIG`")
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
        adapter = self.unchecked_model
        meta_path = self.paths.activations / "meta.json"
        if meta_path.exists():
            try:
                recorded = json.loads(meta_path.read_text(encoding="utf-8")).get("model_fingerprint")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                recorded = None  # the activation stage's own reader reports a broken file
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
