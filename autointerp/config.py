"""Run configuration: YAML files in ``configs/``, validated, overridable from the command line.

Every section is a pydantic model that forbids unknown keys, so a typo is reported with the key
and the allowed keys; ``Literal`` fields report the allowed values. Errors are one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autointerp.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which classifier to study. ``name`` is a registered adapter (``autointerp models``)."""

    name: str = "inceptionv1"
    weights: str | None = None  # local weights file; None = the adapter's default (published URL)
    pretrained: bool = True  # False = random init (tests, benchmarks)
    options: dict[str, Any] = Field(default_factory=dict)  # adapter-specific keyword arguments


class DatasetConfig(_Section):
    """Images to run through the model."""

    type: Literal["npz", "imagefolder", "synthetic"] = "npz"
    path: str | None = None
    max_images: int | None = Field(default=None, ge=1)
    per_class: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=8)  # resize target; default = model input size
    options: dict[str, Any] = Field(default_factory=dict)  # e.g. synthetic: n_images, seed


class LabelMappingConfig(_Section):
    """How dataset labels map to model outputs."""

    type: Literal["identity", "devkit", "sorted_wnid", "file"] = "identity"
    map_clsloc: str | None = None  # ILSVRC devkit map_clsloc.txt (wnid id name)
    offset: int = 0  # model output index of the first class
    path: str | None = None  # type=file: CSV with columns dataset_label,model_output


class ActivationsConfig(_Section):
    """The streaming activation pass."""

    batch_size: int = Field(default=32, ge=1)
    top_k: int = Field(default=8, ge=1)
    bottom_k: int = Field(default=0, ge=0)
    reduce: Literal["max", "mean"] = "max"
    dtype: Literal["float16", "float32"] = "float32"
    accuracy_k: list[int] = Field(default_factory=lambda: [1, 5, 10])
    # images per resumable unit (a checkpoint after each; with executor: ray, one Ray task each)
    shard_images: int = Field(default=2048, ge=1)
    # executor local: worker processes for this stage's units, sharing the CPUs' threads (1: this process)
    workers: int = Field(default=1, ge=1)


class FastPathConfig(_Section):
    """A model-specific fast path of the exact method (:mod:`autointerp.importance.fastpaths`)."""

    # "auto": the first registered path that supports the model and layer; "none": the generic engine; or a name
    name: str = "auto"
    options: dict[str, Any] = Field(default_factory=dict)  # validated by the chosen path's own options model


class ImportanceConfig(_Section):
    """Mean-ablation importance."""

    enabled: bool = True
    method: Literal["exact", "attribution", "naive"] = "exact"
    k: int = Field(default=10, ge=1)
    mean_scope: Literal["channel", "position"] = "channel"
    features: list[int] | None = None
    # features per resumable chunk (exact: per-image work is repeated per chunk, so larger is faster)
    chunk_size: int = Field(default=32, ge=1)
    # method "exact": each chunk works through the images in resumable segments of this many
    segment_images: int = Field(default=2048, ge=1)
    batch_size: int = Field(default=256, ge=1)
    # method "exact": the model-specific fast path, if any, and its options
    fast_path: FastPathConfig = Field(default_factory=FastPathConfig)
    # method "exact" on a fast path: processes (one PyTorch thread each) for its units; "auto": one per CPU
    workers: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # method "exact": bootstrap resamples over images for bootstrap.csv (seeded by the run's seed)
    reliability_boot: int = Field(default=1000, ge=2)


class VisualizeConfig(_Section):
    """Feature visualisations and dataset examples."""

    enabled: bool = True
    # None = every feature; a list of indices; or "groups" = the report's top and middle groups by importance
    features: list[int] | Literal["groups"] | None = None
    n_images: int = Field(default=4, ge=1)
    steps: int = Field(default=512, ge=1)
    size: int = Field(default=128, ge=16)
    lr: float = Field(default=0.05, gt=0)
    diversity: float = Field(default=1e2, ge=0)
    batch_features: int = Field(default=4, ge=1)  # 4 x 4 images per batch: fastest on 2 CPU cores (sweep)
    negative: bool = False
    n_examples: int = Field(default=8, ge=1)
    # Dataset examples are cheap (the activation cache ranks every feature), so by default every feature gets
    # them and example-based raters score the whole layer: "all", "visualized" (= visualize.features), "groups",
    # or a list of indices
    example_features: list[int] | Literal["all", "visualized", "groups"] = "all"
    bottom_examples: bool = False
    crop_examples: bool = False
    # executor local: worker processes for this stage's units, sharing the CPUs' threads (1: this process)
    workers: int = Field(default=1, ge=1)


class RateConfig(_Section):
    """Raters to run and the embedder they share."""

    enabled: bool = True
    raters: list[str] = Field(default_factory=lambda: ["random"])
    embedder: dict[str, Any] = Field(default_factory=lambda: {"type": "handcrafted"})
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-rater options
    human: list[str] = Field(default_factory=list)  # survey CSV files for the `human` rater
    human_invalid: Literal["error", "drop", "clip", "keep"] = "error"
    rater_paths: list[str] = Field(default_factory=list)  # local .py files defining raters
    # executor local: worker processes for this stage's units, sharing the CPUs' threads (1: this process)
    workers: int = Field(default=1, ge=1)


class ReportConfig(_Section):
    """Analysis and report."""

    enabled: bool = True
    top_n: int = Field(default=40, ge=1)
    middle_n: int = Field(default=40, ge=1)
    bootstrap: int = Field(default=2000, ge=0)
    permutations: int = Field(default=2000, ge=0)


class RunConfig(_Section):
    """A whole run: model, layer, data and every stage's settings."""

    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # where stages run their units of work (autointerp.executor, docs/scale.md): "local" processes, or
    # "ray" tasks on the Ray cluster at ray_address ("auto", "HOST:PORT"; unset: one started on this machine)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    layer: str = "mixed5a"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    label_mapping: LabelMappingConfig = Field(default_factory=LabelMappingConfig)
    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    importance: ImportanceConfig = Field(default_factory=ImportanceConfig)
    visualize: VisualizeConfig = Field(default_factory=VisualizeConfig)
    rate: RateConfig = Field(default_factory=RateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


def _format_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        section: type[BaseModel] = RunConfig
        for part in err["loc"][:-1]:
            field = section.model_fields.get(str(part))
            ann = getattr(field, "annotation", None) if field else None
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                section = ann
        allowed = ", ".join(section.model_fields)
        return f"{source}: unknown config key {key!r}; allowed keys here: {allowed}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"{source}: config key {key!r} = {err.get('input')!r} is not allowed; expected one of {expected}"
    return f"{source}: config key {key!r}: {err['msg']} (got {err.get('input')!r})"


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. importance.k=5")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


#: ``importance`` keys that moved into a fast path's options, and keys that were removed
MOVED_IMPORTANCE_KEYS = ("compile", "int8", "sparse", "lowrank")
REMOVED_IMPORTANCE_KEYS = {"folded": "the folded tier was removed (no default setting reached it)"}


def _check_moved_keys(data: dict[str, Any], source: str) -> None:
    section = data.get("importance")
    if not isinstance(section, dict):
        return
    for key in section:
        if key in MOVED_IMPORTANCE_KEYS:
            raise ConfigError(f"{source}: importance.{key} moved to importance.fast_path.options.{key}")
        if key in REMOVED_IMPORTANCE_KEYS:
            raise ConfigError(f"{source}: importance.{key}: {REMOVED_IMPORTANCE_KEYS[key]}; delete the key")


def config_from_dict(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a plain dict into a :class:`RunConfig` (one-line error naming the bad key, or where an old
    key moved)."""
    _check_moved_keys(data, source)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or defaults when ``path`` is None) and apply CLI overrides."""
    import yaml

    data: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
        data = loaded
    apply_overrides(data, overrides or [])
    return config_from_dict(data, source)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML text."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
