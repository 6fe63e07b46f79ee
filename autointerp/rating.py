"""The rater plug-in contract: :class:`Rater`, :class:`ScoreTable`, :class:`RatingContext`, registry.

A rater turns what earlier stages wrote (visualisations, dataset examples, activations, importance,
human answers) into a per-feature table of scores. It

* declares what it ``needs`` (a subset of :data:`NEEDS`), its ``components`` (e.g. ``q4``) and
  whether ``higher_is_better``;
* implements ``score(ctx, features) -> ScoreTable`` with one row per requested feature, in order
  (``NaN`` where it cannot say anything), and the row of a feature must not depend on which other
  features are scored with it (batch invariance);
* is deterministic given its options and seed.

Keep the maths in pure functions (numpy in, numpy out) and make the class a thin wrapper, as the
built-ins in the top-level ``raters`` package do. Register a rater with ``@register_rater``; other
packages expose a module in the entry-point group ``autointerp.raters`` (importing it registers
its raters), and a local file is loaded with ``--rater-path file.py`` (:func:`load_rater_file`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from autointerp.atomic import json_safe
from autointerp.errors import ConfigError, DataError, UserError
from autointerp.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from autointerp.data.base import ImageDataset
    from autointerp.embedders.cache import EmbeddingCache
    from autointerp.runfolder import RunContext

#: What a rater may declare in ``needs``.
NEEDS = frozenset(
    {"visualizations", "examples", "bottom_examples", "activations", "importance", "human", "dataset", "embedder"}
)

ENTRY_POINT_GROUP = "autointerp.raters"

#: What a rater's ``I`` can mean (its class attribute ``scale``):
#:
#: * ``null_percentile``: percentile of the raw statistic within random image sets (:mod:`autointerp.calibration`);
#: * ``fitted_to_human``: predictions of a model fitted to human answers (out of fold where answers exist);
#: * ``mean_of_null_percentiles``: the mean of null-percentile components (``auto_I`` without human answers): about
#:   0.5 when every component is at chance, but not itself a percentile (``mean_of_sources`` when a component is on
#:   another [0, 1] scale);
#: * ``answer_key``: a ground-truth score in [0, 1] (datasets with known concepts);
#: * ``uniform``: random numbers in [0, 1] (the baseline);
#: * ``human``: the survey's own scale, I = (q1·q3 + q4)/2 with q = (Q−1)/4 (negative under ``--human-invalid keep``).
SCALES = (
    "null_percentile",
    "fitted_to_human",
    "mean_of_null_percentiles",
    "mean_of_sources",
    "answer_key",
    "uniform",
    "human",
)
#: Scales whose ``I`` and components must lie in [0, 1] (NaN allowed), higher = more interpretable.
BOUNDED_SCALES = frozenset(SCALES) - {"human"}
_UNIT_SLACK = 1e-9  # float rounding of a value computed as 1 or 0


def check_unit_interval(rater: str, column: str, features: np.ndarray, values: np.ndarray) -> None:
    """Refuse a score outside [0, 1] (NaN allowed), naming the rater, column and first offending feature."""
    values = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero((values < -_UNIT_SLACK) | (values > 1 + _UNIT_SLACK))  # NaN compares False: allowed
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"rater {rater!r}: {column} of feature {int(features[i])} is {float(values[i])!r}, outside [0, 1] "
            f"({len(bad)} value(s) out of range); every rater scores on [0, 1], higher = more interpretable "
            "(map raw statistics with autointerp.calibration.null_percentile)"
        )


# --------------------------------------------------------------------------------------------
# Score tables
# --------------------------------------------------------------------------------------------
@dataclass
class ScoreTable:
    """Per-feature scores: ``feature_ind``, the overall score ``I``, named components and extras.

    ``components`` are the rater's scores on the study's scale (``q1``, ``q3``, ``q4``, ``q1q3``,
    ...); ``extras`` are diagnostics (raw values, null statistics, p-values, text labels).
    ``meta`` is free-form JSON-able information that goes into ``<rater>.json``.
    """

    feature_ind: np.ndarray
    I: np.ndarray  # noqa: E741 - the study's name for the interpretability score
    components: dict[str, np.ndarray] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.feature_ind = np.asarray(self.feature_ind, dtype=np.int64).reshape(-1)
        n = len(self.feature_ind)
        self.I = _float_column("I", self.I, n)
        self.components = {k: _float_column(k, v, n) for k, v in self.components.items()}
        self.extras = {k: _any_column(k, v, n) for k, v in self.extras.items()}
        clash = ({"feature_ind", "I"} | set(self.components)) & set(self.extras)
        if clash or {"feature_ind", "I"} & set(self.components):
            raise ValueError(f"score table column names must be unique; clash: {sorted(clash) or 'feature_ind/I'}")

    def __len__(self) -> int:
        return len(self.feature_ind)

    @property
    def columns(self) -> list[str]:
        """All column names in file order."""
        return ["feature_ind", "I", *self.components, *self.extras]

    def column(self, name: str) -> np.ndarray:
        """One column by name (``feature_ind``, ``I``, a component or an extra)."""
        if name == "feature_ind":
            return self.feature_ind
        if name == "I":
            return self.I
        if name in self.components:
            return self.components[name]
        if name in self.extras:
            return self.extras[name]
        raise UserError(f"score table has no column {name!r}; columns: {', '.join(self.columns)}")

    def select(self, features: Sequence[int]) -> ScoreTable:
        """Rows for ``features`` in that order (missing features raise)."""
        pos = {int(f): i for i, f in enumerate(self.feature_ind)}
        missing = [int(f) for f in features if int(f) not in pos]
        if missing:
            raise UserError(f"score table has no rows for features {missing[:10]}")
        idx = np.array([pos[int(f)] for f in features], dtype=np.int64)
        return ScoreTable(
            self.feature_ind[idx],
            self.I[idx],
            {k: v[idx] for k, v in self.components.items()},
            {k: v[idx] for k, v in self.extras.items()},
            dict(self.meta),
        )

    @staticmethod
    def concat(tables: Sequence[ScoreTable]) -> ScoreTable:
        """Stack tables with the same columns (rows in the given order)."""
        if not tables:
            raise ValueError("nothing to concatenate")
        first = tables[0]
        return ScoreTable(
            np.concatenate([t.feature_ind for t in tables]),
            np.concatenate([t.I for t in tables]),
            {k: np.concatenate([t.components[k] for t in tables]) for k in first.components},
            {k: np.concatenate([t.extras[k] for t in tables]) for k in first.extras},
            dict(first.meta),
        )

    # -- files ---------------------------------------------------------------------------
    def to_csv(self, path: str | Path) -> None:
        """Write atomically as CSV: feature_ind, I, components, extras; NaN written as an empty cell
        (:func:`autointerp.runfiles.write_ratings_csv`)."""
        from autointerp.runfiles import write_ratings_csv

        write_ratings_csv(path, self)

    @classmethod
    def read_csv(cls, path: str | Path, components: Sequence[str] | None = None) -> ScoreTable:
        """Read a table written by :meth:`to_csv`.

        ``components`` names the component columns (from ``<rater>.json``); when omitted, the
        JSON next to the CSV is used if present, else every numeric column is a component.
        """
        from autointerp.runfiles import read_ratings

        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: rating file not found")
        file = read_ratings(path).check_ragged()
        header, body = file.header, [row for _, row in file.rows]
        if header[:2] != ["feature_ind", "I"]:
            raise DataError(f"{path}: expected a header starting with 'feature_ind,I' (found {','.join(header)})")
        cols = {name: [row[j] for row in body] for j, name in enumerate(header)}
        if components is None and file.meta_path.exists():
            components = file.meta.get("components", [])
        try:
            feature_ind = np.array([int(v) for v in cols.pop("feature_ind")], dtype=np.int64)
            I = np.array([_parse_float(v) for v in cols.pop("I")], dtype=np.float64)  # noqa: E741
        except ValueError as exc:
            raise DataError(f"{path}: feature_ind/I must be numbers ({exc})") from None
        comps: dict[str, np.ndarray] = {}
        extras: dict[str, np.ndarray] = {}
        for name, values in cols.items():
            parsed = _try_floats(values)
            is_comp = name in components if components is not None else parsed is not None
            if is_comp and parsed is not None:
                comps[name] = parsed
            else:
                extras[name] = parsed if parsed is not None else np.array(values, dtype=object)
        return cls(feature_ind, I, comps, extras)


def _float_column(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"score table column {name!r} has {len(arr)} values for {n} features")
    return arr


def _any_column(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        arr = arr.astype(np.float64)
    else:
        arr = arr.astype(object)
    arr = arr.reshape(-1)
    if len(arr) != n:
        raise ValueError(f"score table column {name!r} has {len(arr)} values for {n} features")
    return arr


def _parse_float(text: str) -> float:
    return float("nan") if text.strip() == "" else float(text)


def _try_floats(values: list[str]) -> np.ndarray | None:
    try:
        return np.array([_parse_float(v) for v in values], dtype=np.float64)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Typed rater options
# --------------------------------------------------------------------------------------------
class RaterOptions(BaseModel):
    """Base of a rater's typed options (a pydantic model, validated when the rater is built).

    A rater declares its options as a nested class::

        class Options(RaterOptions):
            k: int = option(9, "explanations per side", ge=1)
            quantile: float = option(0.1, "pool fraction", gt=0, le=0.5, expected="a fraction in (0, 0.5]")

    Validation is strict (no ``"9"`` → 9, no ``true`` → 1; an integer is accepted where a number is
    expected); a bad value is a one-line :class:`ConfigError` naming ``rate.options.<rater>.<key>``,
    the value and what was expected. A rater that only sets ``defaults = {...}`` gets a model
    derived from it (:func:`options_from_defaults`).
    """

    model_config = ConfigDict(
        strict=True, extra="forbid", frozen=True, protected_namespaces=(), arbitrary_types_allowed=True
    )


def option(default: Any, description: str = "", *, expected: str | None = None, **constraints: Any) -> Any:
    """A :class:`RaterOptions` field: its default, a one-line description, pydantic constraints
    (``ge``, ``gt``, ``le``, ``lt``, ``allow_inf_nan``, ...) and, optionally, the ``expected`` phrase of
    its error message (derived from the type and constraints when omitted)."""
    extra = {"expected": expected} if expected else None
    if isinstance(default, (list, dict, set)):
        value = default
        return Field(
            default_factory=lambda: type(value)(value), description=description, json_schema_extra=extra, **constraints
        )
    return Field(default, description=description, json_schema_extra=extra, **constraints)


def _default_type(value: Any) -> Any:
    """The option type implied by a default value (``Any`` where it says nothing, e.g. ``None``)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    if isinstance(value, Path):
        return Union[str, Path]  # noqa: UP007 - a runtime type object
    if isinstance(value, (list, tuple)):
        return Union[list, tuple]  # noqa: UP007
    if isinstance(value, dict):
        return dict
    return Any


def _safe_field_name(key: str) -> bool:
    return key.isidentifier() and not key.startswith("_") and not hasattr(BaseModel, key)


def options_from_defaults(owner: str, defaults: Mapping[str, Any]) -> type[RaterOptions]:
    """A permissive :class:`RaterOptions` model for a rater that only declares ``defaults``: each option
    typed by its default's type (bool, int, float, str, list, dict; anything when the default is None)."""
    fields: dict[str, Any] = {}
    for i, (key, value) in enumerate(defaults.items()):
        kind = _default_type(value)
        if _safe_field_name(str(key)):
            fields[str(key)] = (kind, option(value))
        else:  # e.g. 'my-key' or 'json': stored under a safe name, read and written under its own
            fields[f"option_{i}"] = (kind, option(value, alias=str(key)))
    return create_model(f"{owner}Options", __base__=RaterOptions, **fields)


def option_fields(model: type[RaterOptions]) -> dict[str, Any]:
    """``{option key: pydantic FieldInfo}`` of an options model (keys as users write them)."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _bounds(metadata: Sequence[Any], integer: bool) -> str:
    lo = hi = None
    for m in metadata:
        for attr, side, closed in (("ge", "lo", True), ("gt", "lo", False), ("le", "hi", True), ("lt", "hi", False)):
            value = getattr(m, attr, None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if side == "lo":
                    lo = (value, closed)
                else:
                    hi = (value, closed)
    fmt = (lambda v: str(int(v))) if integer else (lambda v: f"{v:g}")
    if lo and hi:
        return f" in {'[' if lo[1] else '('}{fmt(lo[0])}, {fmt(hi[0])}{']' if hi[1] else ')'}"
    if lo:
        return f" {'≥' if lo[1] else '>'} {fmt(lo[0])}"
    if hi:
        return f" {'≤' if hi[1] else '<'} {fmt(hi[0])}"
    return ""


def _flat_metadata(items: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for m in items:
        sub = getattr(m, "metadata", None)  # a FieldInfo inside Annotated[...]
        out.extend(sub if isinstance(sub, list) else [m])
    return out


def describe_type(annotation: Any, metadata: Sequence[Any] = (), short: bool = False) -> str:
    """What an option annotation accepts: ``"an integer ≥ 2"`` (``short``: ``"int ≥ 2"``)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        return describe_type(base, [*metadata, *_flat_metadata(meta)], short)
    args = get_args(annotation)
    if origin is Union or type(annotation).__name__ == "UnionType":
        members = [a for a in args if a is not type(None)]
        if str in members and Path in members:  # a file name: str or Path
            members = [a for a in members if a is not str]
        meta = metadata if len(members) == 1 else ()
        parts = list(dict.fromkeys(describe_type(a, meta, short) for a in members))
        if type(None) in args:
            parts.append("null")
        return " | ".join(parts) if short else " or ".join(parts)
    if origin is Literal:
        words = [repr(a) if short or len(args) == 1 else str(a) for a in args]
        if short or len(args) == 1:
            return " | ".join(words)
        return "one of " + ", ".join(words)
    if origin in (list, tuple, set, frozenset):
        inner = describe_type(args[0], (), True) if args else ""
        if short:
            return f"list[{inner}]" if inner else "list"
        return f"a list of {inner}" if inner else "a list"
    if annotation in (list, tuple):
        return "list" if short else "a list"
    if annotation is dict or origin is dict:
        return "mapping" if short else "a mapping"
    if annotation is bool:
        return "bool" if short else "true or false"
    if annotation is int:
        return ("int" if short else "an integer") + _bounds(metadata, True)
    if annotation is float:
        finite = any(getattr(m, "allow_inf_nan", None) is False for m in metadata)
        word = ("float" if short else "a finite number") if finite else ("float" if short else "a number")
        return word + _bounds(metadata, False)
    if annotation is str:
        return "str" if short else "a string"
    if annotation is Path:
        return "path" if short else "a path"
    if annotation is Any:
        return "any" if short else "any value"
    return getattr(annotation, "__name__", str(annotation))


def option_expected(field: Any, short: bool = False) -> str:
    """The ``expected`` phrase of an option's errors (or its short type for listings)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if not short and extra.get("expected"):
        return str(extra["expected"])
    return describe_type(field.annotation, field.metadata, short)


def _plain(value: Any) -> Any:
    """numpy scalars → Python numbers (strict validation refuses them); other values unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def validate_options(rater: str, model: type[RaterOptions], options: Mapping[str, Any]) -> RaterOptions:
    """Validate ``options`` against ``model``; a one-line ConfigError naming ``rate.options.<rater>.<key>``,
    the value and what was expected (unknown keys list the allowed ones)."""
    fields = option_fields(model)
    unknown = sorted(set(options) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(f"rate.options.{rater}: unknown option {unknown[0]!r}; allowed options: {allowed}")
    values = {k: _plain(v) for k, v in options.items()}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    bad_keys = list(dict.fromkeys(str(e["loc"][0]) for e in errors if e["loc"]))
    first = errors[0]
    if not first["loc"]:  # a model-level (cross-field) check
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"rate.options.{rater}: {message}")
    key = str(first["loc"][0])
    where = f"rate.options.{rater}.{key} = {values.get(key)!r}"
    also = f" (also invalid: {', '.join(bad_keys[1:])})" if len(bad_keys) > 1 else ""
    own = [e for e in errors if e["loc"] and str(e["loc"][0]) == key and e["type"] == "value_error"]
    if own:
        raise ConfigError(f"{where}; {str(own[0]['msg']).removeprefix('Value error, ')}{also}")
    raise ConfigError(f"{where}; expected {option_expected(fields[key])}{also}")


def option_rows(cls: type[Rater]) -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` of each option of a rater class, for listings."""
    rows = []
    for key, f in option_fields(cls.Options).items():
        default = f.get_default(call_default_factory=True)
        rows.append(
            (
                key,
                option_expected(f, short=True),
                json.dumps(default, default=str, ensure_ascii=False),
                f.description or "",
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# The Rater base class
# --------------------------------------------------------------------------------------------
class Rater:
    """Base class of every rater.

    Subclasses set the class attributes and implement :meth:`score`. Options are keyword
    arguments validated against the rater's ``Options`` model (:class:`RaterOptions`; a rater that
    only sets ``defaults`` gets one typed by the default values); a bad or unknown key is a one-line
    :class:`ConfigError`.
    """

    #: registry name (``autointerp rate --raters NAME``)
    name: ClassVar[str] = ""
    #: one line shown by ``autointerp raters list``
    description: ClassVar[str] = ""
    #: inputs the rater reads, a subset of :data:`NEEDS`
    needs: ClassVar[frozenset[str]] = frozenset()
    #: names of the score components it returns besides ``I`` (e.g. ``("q4",)``)
    components: ClassVar[tuple[str, ...]] = ()
    #: whether larger ``I`` means more interpretable (always true of a rater on the common scale)
    higher_is_better: ClassVar[bool] = True
    #: what ``I``'s [0, 1] means (one of :data:`SCALES`; see :mod:`autointerp.calibration`)
    scale: ClassVar[str] = "null_percentile"
    #: the extra column holding the raw statistic behind ``I`` (None when ``I`` is not mapped from one)
    raw_statistic: ClassVar[str | None] = None
    #: whether a larger (``"higher"``) or smaller (``"lower"``) raw statistic is more interpretable
    raw_direction: ClassVar[str | None] = None
    #: typed options (a :class:`RaterOptions` subclass); derived from ``defaults`` when a rater only sets those
    Options: ClassVar[type[RaterOptions]] = RaterOptions
    #: option names with their default values (filled in from ``Options`` when a rater declares one)
    defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "Options" in own:
            if not (isinstance(cls.Options, type) and issubclass(cls.Options, RaterOptions)):
                raise TypeError(f"{cls.__name__}.Options must subclass autointerp.rating.RaterOptions")
            cls.defaults = {k: f.get_default(call_default_factory=True) for k, f in option_fields(cls.Options).items()}
        elif "defaults" in own:
            cls.Options = options_from_defaults(cls.__name__, cls.defaults)

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed = int(seed)
        #: the validated options (attribute access; ``self.options`` is the same as a dict)
        self.opts: RaterOptions = validate_options(self.name, type(self).Options, options)
        self.options: dict[str, Any] = self.opts.model_dump(by_alias=True)

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        """Scores for ``features`` (one row each, in order)."""
        raise NotImplementedError

    def table(
        self,
        features: Sequence[int],
        I: Any,  # noqa: E741
        components: Mapping[str, Any] | None = None,
        extras: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> ScoreTable:
        """Build this rater's :class:`ScoreTable`, checking the declared components are all there."""
        components = dict(components or {})
        missing = [c for c in self.components if c not in components]
        if missing:
            raise ValueError(f"rater {self.name!r} did not return its declared components {missing}")
        table = ScoreTable(np.asarray(features, dtype=np.int64), I, components, dict(extras or {}), dict(meta or {}))
        if self.scale in BOUNDED_SCALES:
            for column in ("I", *components):
                check_unit_interval(self.name, column, table.feature_ind, table.column(column))
        return table

    def metadata(self) -> dict[str, Any]:
        """What goes into ``RUN/ratings/<rater>.json``."""
        return {
            "rater": self.name,
            "description": self.description,
            "higher_is_better": bool(self.higher_is_better),
            "scale": {
                "kind": self.scale,
                "range": [0.0, 1.0] if self.scale in BOUNDED_SCALES else None,
                "calibrated_to_human": self.scale == "fitted_to_human",
                "raw_statistic": self.raw_statistic,
                "raw_direction": self.raw_direction,
            },
            "components": list(self.components),
            "needs": sorted(self.needs),
            "options": json_safe(self.options, unknown=str),
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed}, options={self.options})"


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
RATERS: Registry[type[Rater]] = Registry("rater")


def register_rater(cls_or_name: type[Rater] | str | None = None) -> Any:
    """Register a :class:`Rater` subclass under its ``name`` (``@register_rater``) or a given
    name (``@register_rater("my_name")``)."""

    def _add(cls: type[Rater], name: str | None) -> type[Rater]:
        if not (isinstance(cls, type) and issubclass(cls, Rater)):
            raise TypeError(f"@register_rater expects a Rater subclass, got {cls!r}")
        name = name or cls.name
        if not name:
            raise TypeError(f"{cls.__name__}: set the class attribute `name` before registering")
        if name != cls.name:
            cls.name = name
        bad = set(cls.needs) - NEEDS
        if bad:
            raise TypeError(f"{cls.__name__}.needs has unknown entries {sorted(bad)}; allowed: {sorted(NEEDS)}")
        if cls.scale not in SCALES:
            raise TypeError(f"{cls.__name__}.scale = {cls.scale!r}; expected one of {', '.join(SCALES)}")
        if cls.raw_direction not in (None, "higher", "lower"):
            raise TypeError(f"{cls.__name__}.raw_direction = {cls.raw_direction!r}; expected 'higher', 'lower' or None")
        if not cls.higher_is_better:
            raise TypeError(
                f"{cls.__name__}: I must be higher = more interpretable; map a lower-is-better raw "
                "statistic with autointerp.calibration.null_percentile(raw, null, 'lower')"
            )
        existing = RATERS.lookup(name)
        if existing is not None and existing is not cls:
            if _same_definition(existing, cls):
                RATERS.register(name, cls, overwrite=True)  # the same file imported again
                return cls
            raise UserError(
                f"rater {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
                "pick another name"
            )
        RATERS.register(name, cls)
        return cls

    if isinstance(cls_or_name, type):
        return _add(cls_or_name, None)
    return lambda cls: _add(cls, cls_or_name)


def _same_definition(a: type, b: type) -> bool:
    fa = getattr(sys.modules.get(a.__module__), "__file__", None)
    fb = getattr(sys.modules.get(b.__module__), "__file__", None)
    return a.__qualname__ == b.__qualname__ and fa is not None and fa == fb


BUILTIN_RATER_MODULES = (
    "human",
    "clip_coherence",
    "clip_vis_match",
    "clip_label",
    "fid",
    "mis",
    "auto_i",
    "random_rater",
    "concept_purity",
)


def _load_builtin_raters() -> None:
    # import each module explicitly: an editable install made before raters/ had an __init__.py
    # maps ``raters`` as a namespace package whose __init__ never runs
    for module in BUILTIN_RATER_MODULES:
        importlib.import_module(f"raters.{module}")


def _load_entry_point_raters() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not hide the others
            warnings.warn(f"rater plug-in {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)


RATERS.add_loader(_load_builtin_raters)
RATERS.add_loader(_load_entry_point_raters)

_LOADED_FILES: dict[Path, list[str]] = {}


def load_rater_file(path: str | Path) -> list[str]:
    """Import a local Python file that registers raters; return the names it registered.

    Loading the same file again is a no-op returning the same names.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: rater file not found (--rater-path / rate.rater_paths)")
    resolved = path.resolve()
    if resolved in _LOADED_FILES:
        return list(_LOADED_FILES[resolved])
    before = {name: RATERS.lookup(name) for name in RATERS.names()}
    import hashlib

    module_name = f"autointerp_user_raters.{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except UserError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise UserError(f"{path}: failed to import rater file ({type(exc).__name__}: {exc})") from exc
    added = sorted(n for n, cls in RATERS.items().items() if before.get(n) is not cls)
    if not added:
        raise UserError(f"{path}: defines no rater; decorate a Rater subclass with @register_rater")
    _LOADED_FILES[resolved] = added
    return list(added)


def list_raters() -> dict[str, str]:
    """Registered rater names → one-line descriptions."""
    return {
        name: RATERS.get(name).description.strip().splitlines()[0] if RATERS.get(name).description else ""
        for name in RATERS.names()
    }


def create_rater(name: str, seed: int = 0, **options: Any) -> Rater:
    """Instantiate a registered rater with options (unknown name → UserError listing valid ones)."""
    return RATERS.get(name)(seed=seed, **options)


# --------------------------------------------------------------------------------------------
# The rating context
# --------------------------------------------------------------------------------------------
class RatingContext:
    """Lazy access to everything raters read from a run folder.

    Built from a :class:`~autointerp.runfolder.RunContext`; ``embedder`` (an ``Embedder`` or a
    spec dict) and ``dataset`` override the config's. Embeddings go through a disk cache in
    ``RUN/ratings/cache/`` keyed by image content, so an image is embedded once per embedder.
    """

    def __init__(
        self,
        run: RunContext,
        *,
        embedder: Any = None,
        dataset: ImageDataset | None = None,
        seed: int | None = None,
        cache: bool = True,
    ) -> None:
        self.run = run
        self.root = Path(run.root)
        self.config = run.config
        self.paths = run.paths
        self.seed = int(run.config.seed if seed is None else seed)
        self._embedder_spec = embedder
        self._dataset_override = dataset
        self._use_disk_cache = cache
        self._path_keys: dict[Path, str] = {}
        self._dataset_keys: dict[int, str] = {}

    @classmethod
    def open(cls, root: str | Path, **kwargs: Any) -> RatingContext:
        """Open an existing run folder."""
        from autointerp.runfolder import RunContext

        return cls(RunContext.open(root), **kwargs)

    # -- indices -------------------------------------------------------------------------
    @functools.cached_property
    def visualizations_index(self) -> dict[int, dict[str, Any]]:
        """``RUN/visualizations/index.json`` features (``{}`` when absent)."""
        from autointerp.runfiles import read_index

        return read_index(self.paths.visualizations_index)

    @functools.cached_property
    def examples_index(self) -> dict[int, dict[str, Any]]:
        """``RUN/examples/index.json`` features (``{}`` when absent)."""
        from autointerp.runfiles import read_index

        return read_index(self.paths.examples_index)

    @functools.cached_property
    def features(self) -> list[int]:
        """Every feature the run knows of: visualised, with examples, or with an importance."""
        feats = set(self.visualizations_index) | set(self.examples_index)
        if self.paths.importance_csv.exists():
            feats |= set(self.importance)
        if not feats and self.paths.scores.exists():
            feats = set(range(self.scores.shape[1]))
        return sorted(feats)

    def available(self, need: str) -> bool:
        """Whether the run (or context) can provide ``need``."""
        if need == "visualizations":
            return bool(self.visualizations_index)
        if need == "examples":
            return bool(self.examples_index)
        if need == "bottom_examples":
            return any(e.get("bottom") for e in self.examples_index.values())
        if need == "activations":
            return self.paths.scores.exists()
        if need == "importance":
            return self.paths.importance_csv.exists()
        if need == "human":
            return bool(self.human_paths)
        if need == "dataset":
            return (
                self._dataset_override is not None
                or self.config.dataset.path is not None
                or (self.config.dataset.type == "synthetic")
            )
        if need == "embedder":
            return True
        raise ValueError(f"unknown need {need!r}")

    def require(self, rater: Rater | type[Rater]) -> None:
        """Raise a one-line UserError naming the first missing input of ``rater``."""
        hints = {
            "visualizations": f"{self.paths.visualizations_index} missing; run `autointerp visualize`",
            "examples": f"{self.paths.examples_index} missing; run `autointerp examples`",
            "bottom_examples": "no bottom examples; set visualize.bottom_examples: true and rerun examples",
            "activations": f"{self.paths.scores} missing; run `autointerp activations`",
            "importance": f"{self.paths.importance_csv} missing; run `autointerp importance`",
            "human": "no survey answers; set rate.human: [answers.csv, ...] in the config",
            "dataset": "no dataset configured (dataset.path)",
        }
        for need in sorted(rater.needs):
            if need != "bottom_examples" and not self.available(need):
                raise UserError(f"rater {rater.name!r} needs {need}: {hints.get(need, need)}")

    # -- images --------------------------------------------------------------------------
    def vis_paths(self, feature: int) -> list[Path]:
        """Visualisation PNGs of ``feature`` (empty when it has none)."""
        entry = self.visualizations_index.get(int(feature), {})
        return [self.root / p for p in entry.get("vis", [])]

    def example_paths(self, feature: int, which: str = "top") -> list[Path]:
        """Dataset-example PNGs of ``feature`` (``which`` = 'top' or 'bottom')."""
        return [self.root / e["path"] for e in self._example_entries(feature, which)]

    def example_dataset_indices(self, feature: int, which: str = "top") -> np.ndarray:
        """Dataset indices of the examples of ``feature``."""
        return np.array([int(e["dataset_index"]) for e in self._example_entries(feature, which)], dtype=np.int64)

    def example_activations(self, feature: int, which: str = "top") -> np.ndarray:
        """Activations of the examples of ``feature``."""
        return np.array([float(e.get("activation", np.nan)) for e in self._example_entries(feature, which)])

    def _example_entries(self, feature: int, which: str) -> list[dict[str, Any]]:
        if which not in ("top", "bottom"):
            raise ValueError(f"which must be 'top' or 'bottom', got {which!r}")
        return list(self.examples_index.get(int(feature), {}).get(which, []))

    def vis_images(self, feature: int) -> list[np.ndarray]:
        """Visualisations of ``feature`` as uint8 (H, W, 3) arrays."""
        return [self.load_image(p) for p in self.vis_paths(feature)]

    def example_images(self, feature: int, which: str = "top") -> list[np.ndarray]:
        """Dataset examples of ``feature`` as uint8 (H, W, 3) arrays."""
        return [self.load_image(p) for p in self.example_paths(feature, which)]

    def load_image(self, path: str | Path) -> np.ndarray:
        """Read an image file as uint8 (H, W, 3) RGB (one-line error when missing or unreadable)."""
        from autointerp.data.imagefile import read_rgb

        return read_rgb(path, missing="image listed in the run's examples/visualizations index is missing")

    # -- activations, importance, human answers -------------------------------------------
    @functools.cached_property
    def scores(self) -> np.ndarray:
        """(N, C) per-image channel scores (memory-mapped)."""
        from autointerp.runfiles import load_array

        return load_array(self.paths.scores, mmap=True)

    @functools.cached_property
    def dataset_index(self) -> np.ndarray:
        """(N,) dataset index of each row of :attr:`scores` (identity when the file is absent)."""
        from autointerp.runfiles import load_array

        if self.paths.dataset_index.exists():
            return load_array(self.paths.dataset_index).astype(np.int64)
        return np.arange(self.scores.shape[0], dtype=np.int64)

    @functools.cached_property
    def importance(self) -> dict[int, float]:
        """feature → importance from ``RUN/importance/importance.csv``."""
        from autointerp.runfiles import read_importance

        path = self.paths.importance_csv
        return read_importance(path, missing="run `autointerp importance` first").check().values()

    @property
    def human_paths(self) -> list[Path]:
        """Survey answer files from ``rate.human`` (relative paths: cwd first, then the run folder)."""
        out = []
        for item in self.config.rate.human:
            p = Path(item).expanduser()
            if not p.is_absolute() and not p.exists() and (self.root / p).exists():
                p = self.root / p
            out.append(p)
        return out

    # -- dataset and null distributions ----------------------------------------------------
    @functools.cached_property
    def dataset(self) -> ImageDataset:
        """The run's dataset (for null distributions and MIS queries)."""
        if self._dataset_override is not None:
            return self._dataset_override
        return self.run.dataset

    def dataset_image(self, index: int) -> np.ndarray:
        """Dataset image ``index`` as uint8 (H, W, 3)."""
        return self.dataset.image(int(index))

    def null_indices(self, size: int = 256) -> np.ndarray:
        """Dataset indices of a fixed random pool of images for null distributions.

        Drawn from the images the activation pass saw (``dataset_index.npy``) when present, else
        from the whole dataset; depends only on the seed, never on which features are scored.
        """
        if self.paths.dataset_index.exists():
            candidates = self.dataset_index
        else:
            candidates = np.arange(len(self.dataset), dtype=np.int64)
        rng = np.random.default_rng([self.seed, 0x6E756C6C])
        size = min(int(size), len(candidates))
        return np.sort(rng.choice(candidates, size=size, replace=False))

    # -- embeddings ----------------------------------------------------------------------
    @functools.cached_property
    def embedder(self) -> EmbeddingCache:
        """The shared, cached embedder (config ``rate.embedder`` unless overridden)."""
        from autointerp.embedders import Embedder, create_embedder
        from autointerp.embedders.cache import EmbeddingCache

        spec = self._embedder_spec if self._embedder_spec is not None else self.config.rate.embedder
        emb = spec if isinstance(spec, Embedder) else create_embedder(spec)
        folder = self.paths.ratings_cache if self._use_disk_cache else None
        return EmbeddingCache(emb, folder)

    def embed_paths(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Embeddings (n, D) of image files, each image embedded at most once (content-keyed cache)."""
        return self._embed_cached([Path(p) for p in paths], self._path_keys, self.load_image)

    def embed_dataset(self, indices: Sequence[int]) -> np.ndarray:
        """Embeddings (n, D) of dataset images (cached like :meth:`embed_paths`)."""
        return self._embed_cached([int(i) for i in indices], self._dataset_keys, self.dataset_image)

    def _embed_cached(self, items: list, memo: dict, load: Callable[[Any], np.ndarray]) -> np.ndarray:
        """Embed ``items`` (loaded with ``load``) through the content-keyed cache; ``memo`` remembers each
        item's content key so an image is read and hashed once per context."""
        keys, todo = self._missing(items, memo, load)
        if todo:
            self.embedder.embed([img for _, img in todo], [key for key, _ in todo])
        return self.embedder.get(keys)

    def _missing(
        self, items: list, memo: dict, load: Callable[[Any], np.ndarray], seen: set[str] | None = None
    ) -> tuple[list[str], list[tuple[str, np.ndarray]]]:
        """The content keys of ``items``, and (key, image) of those the cache lacks (each key once; ``seen``
        carries the keys already listed across calls)."""
        cache = self.embedder
        seen = set() if seen is None else seen
        keys: list[str] = []
        todo: list[tuple[str, np.ndarray]] = []
        for item in items:
            key = memo.get(item)
            if key is None:
                img = load(item)
                key = cache.key(img)
                memo[item] = key
                if not cache.has(key) and key not in seen:
                    todo.append((key, img))
                    seen.add(key)
            keys.append(key)
        return keys, todo

    def null_embeddings(self, size: int = 256) -> np.ndarray:
        """Embeddings of the :meth:`null_indices` pool; falls back to every top example of the run
        (with a warning) when no dataset can be loaded."""
        try:
            indices = self.null_indices(size)
        except UserError as exc:
            paths = sorted({p for f in self.examples_index for p in self.example_paths(f)})
            if not paths:
                raise
            warnings.warn(f"no dataset for null distributions ({exc}); using the run's examples", stacklevel=2)
            rng = np.random.default_rng([self.seed, 0x6E756C6C])
            pick = np.sort(rng.choice(len(paths), size=min(size, len(paths)), replace=False))
            return self.embed_paths([paths[i] for i in pick])
        return self.embed_dataset(indices)

    def prefetch(
        self, features: Sequence[int], what: Sequence[str] = ("vis", "top"), null_size: int = 0, batch: int = 256
    ) -> None:
        """Embed every image the raters will ask for, in batches of ``batch`` with a progress bar, and write the
        cache to disk. The driver reads and hashes each image; the batches of missing ones are units of
        :mod:`autointerp.executor` (:class:`EmbedTask`: in this process, or Ray tasks with ``executor: ray`` and
        an embedder from the config), stored in the cache in unit order, so the cache is the same either way."""
        from autointerp import executor
        from autointerp.progress import Progress

        paths: list[Path] = []
        for f in features:
            if "vis" in what:
                paths += self.vis_paths(f)
            for kind in ("top", "bottom"):
                if kind in what:
                    paths += self.example_paths(f, kind)
        seen: set[str] = set()
        todo = self._missing(list(dict.fromkeys(paths)), self._path_keys, self.load_image, seen)[1]
        if null_size:
            try:
                indices = [int(i) for i in self.null_indices(null_size)]
            except UserError:
                indices = []  # no dataset: null_embeddings falls back to the run's examples
            todo += self._missing(indices, self._dataset_keys, self.dataset_image, seen)[1]
        units = [todo[i : i + batch] for i in range(0, len(todo), batch)]
        units = [([key for key, _ in unit], [img for _, img in unit]) for unit in units]
        cache = self.embedder
        spec = self._embedder_spec if self._embedder_spec is not None else self.config.rate.embedder
        from_config = isinstance(spec, dict)
        task = EmbedTask(dict(spec) if from_config else None, self.config.device, local=cache.embedder)
        workers = 1
        if from_config and units:  # an embedder object given in Python stays in this process
            workers, task.threads = executor.stage_workers(
                self.config.rate.workers, len(units), "rate: embeddings", self.config
            )
        where = " as Ray tasks" if from_config and self.config.executor == "ray" else ""
        with Progress(f"embedding images ({cache.embedder.id}){where}", len(todo), "images") as bar:
            executor.run_units(self.config if from_config else None, task, units,
                               lambda unit, vectors: cache.add(unit[0], vectors), bar.advance, workers)  # fmt: skip
        if null_size:
            self.null_embeddings(null_size)  # cached by now, or the fallback to the examples
        cache.flush()


class EmbedTask:
    """Batches of images to embed as units of :mod:`autointerp.executor`: a unit is ``(keys, images)``, its
    result the embeddings; each worker builds the embedder from the config's ``rate.embedder`` once."""

    label = "embed"
    threads = None

    def __init__(self, spec: dict[str, Any] | None, device: str, local: Any = None) -> None:
        self.spec = spec
        self.local = local
        self.cuda = device != "cpu"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "local": None}  # a worker elsewhere builds its own embedder from the spec

    def setup(self) -> Any:
        if self.local is not None:
            return self.local
        from autointerp.embedders import create_embedder

        return create_embedder(self.spec)

    def run(self, state: Any, unit: tuple[list[str], list[np.ndarray]], progress: Callable[[int], None]) -> Any:
        vectors = np.asarray(state.embed(unit[1]), dtype=np.float32)
        progress(len(unit[0]))
        return vectors

    def weight(self, unit: tuple[list[str], list[np.ndarray]]) -> int:
        return len(unit[0])

    def describe(self, state: Any) -> dict[str, Any]:
        return {"embedder": state.id}


def rater_options(ctx: RatingContext, name: str) -> dict[str, Any]:
    """Options for rater ``name`` from ``rate.options`` in the config."""
    opts = ctx.config.rate.options.get(name, {}) or {}
    if not isinstance(opts, dict):
        raise ConfigError(f"rate.options.{name}: expected a mapping of option: value")
    return dict(opts)


def build_rater(ctx: RatingContext, name: str) -> Rater:
    """Instantiate rater ``name`` with its config options and the run's seed."""
    opts = rater_options(ctx, name)
    seed = opts.pop("seed", ctx.seed)
    return create_rater(name, seed=seed, **opts)


__all__ = [
    "BOUNDED_SCALES",
    "ENTRY_POINT_GROUP",
    "NEEDS",
    "RATERS",
    "Rater",
    "RaterOptions",
    "RatingContext",
    "SCALES",
    "ScoreTable",
    "build_rater",
    "check_unit_interval",
    "create_rater",
    "describe_type",
    "list_raters",
    "load_rater_file",
    "option",
    "option_fields",
    "option_rows",
    "options_from_defaults",
    "rater_options",
    "register_rater",
    "validate_options",
]
