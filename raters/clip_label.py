"""``clip_label`` (emulates Q2/Q3 with words): name the visualisations, then check the name on the examples.

1. Vocabulary: ImageNet class names plus a concept list (``configs/concepts.txt``; option
   ``concepts`` for another file), each put into ``template`` ("a photo of {}") and embedded as text
   — phrases the embedder cannot embed (``Embedder.known_text``) are left out.
2. Zero-shot: softmax over the vocabulary of ``logit_scale`` × cosine, for every visualisation;
   the ``top_m`` phrases of the mean distribution are the feature's *label* (the study's Q2).
3. Match (Q3): how well the visualisations' phrase distribution describes each example (cosine of
   the distributions, or option ``match: label_mass`` for the mass the examples put on the label),
   calibrated against random image sets from the dataset → ``q3`` in [0, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from autointerp.errors import ConfigError, UserError
from autointerp.progress import track
from autointerp.rating import Rater, RaterOptions, RatingContext, ScoreTable, option, register_rater
from raters._similarity import (
    CalibrationOption,
    calibrate,
    l2_normalize,
    null_summary,
    random_subsets,
)

DEFAULT_CONCEPTS = Path(__file__).resolve().parents[1] / "configs" / "concepts.txt"


def read_phrases(path: str | Path) -> list[str]:
    """Phrases from a text file: one per line, '#' comments and blank lines skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"rate.options.clip_label.concepts: {path} not found") from None
    return [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names: open_clip's CLIP-friendly list (read from its constants module
    without importing all of open_clip, which takes seconds), else torchvision's."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(list(spec.submodule_search_locations)[0], "zero_shot_metadata.py")
        if os.path.exists(path):
            mspec = importlib.util.spec_from_file_location("_autointerp_open_clip_zero_shot_metadata", path)
            if mspec is not None and mspec.loader is not None:
                module = importlib.util.module_from_spec(mspec)
                mspec.loader.exec_module(module)
                names = getattr(module, "IMAGENET_CLASSNAMES", None)
                if names and len(names) == 1000:
                    return tuple(names)
    from torchvision.models import ResNet18_Weights  # pragma: no cover - open_clip is a dependency

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def build_vocabulary(sources: Sequence[str], concepts: str | Path | None) -> list[str]:
    """Unique phrases from ``sources`` ('imagenet', 'concepts'), order kept."""
    phrases: list[str] = []
    for src in sources:
        if src == "imagenet":
            phrases += list(imagenet_class_names())
        elif src == "concepts":
            phrases += read_phrases(concepts or DEFAULT_CONCEPTS)
        else:
            raise ConfigError(f"rate.options.clip_label.vocabulary: unknown source {src!r}; use imagenet, concepts")
    return list(dict.fromkeys(phrases))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def label_probabilities(img_emb: np.ndarray, text_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """(n_images, n_phrases) zero-shot probabilities."""
    return softmax(logit_scale * (l2_normalize(img_emb) @ l2_normalize(text_emb).T))


Match = Literal["distribution", "label_mass"]
MATCHES: tuple[str, ...] = get_args(Match)
VocabularySource = Literal["imagenet", "concepts"]


def label_match(
    p_vis: np.ndarray,
    p_ex: np.ndarray,
    p_pool: np.ndarray,
    subsets: np.ndarray,
    top_m: int,
    calibration: str = "percentile",
    match: str = "distribution",
) -> dict[str, object]:
    """Label of the visualisations and how well it describes the examples, against random sets.

    The label is the ``top_m`` phrases of the mean visualisation distribution p̄. ``match``:

    * ``distribution``: mean over examples of cos(p̄, p_example) — the whole description must fit;
    * ``label_mass``: mean probability mass the examples put on the label's phrases.

    The null is the same statistic for random pool sets (``subsets`` index ``p_pool``).
    """
    nan = float("nan")
    if len(p_vis) == 0 or len(p_ex) == 0:
        return {
            "q3": nan,
            "match": nan,
            "null_mean": nan,
            "null_std": nan,
            "z": nan,
            "p_value": nan,
            "label_idx": np.zeros(0, np.int64),
        }
    mean_vis = p_vis.mean(axis=0)
    top = np.argsort(-mean_vis, kind="stable")[:top_m]
    if match == "distribution":
        ref = l2_normalize(mean_vis[None, :])
        per_ex, per_pool = (l2_normalize(p_ex) @ ref.T)[:, 0], (l2_normalize(p_pool) @ ref.T)[:, 0]
    elif match == "label_mass":
        per_ex, per_pool = p_ex[:, top].sum(axis=1), p_pool[:, top].sum(axis=1)
    else:
        raise ConfigError(f"rate.options.clip_label.match = {match!r}; expected one of {', '.join(MATCHES)}")
    raw = float(per_ex.mean())
    null = per_pool[subsets].mean(axis=1)
    mean, sd, z, pval = null_summary(raw, null)
    return {
        "q3": calibrate(raw, null, calibration),
        "match": raw,
        "null_mean": mean,
        "null_std": sd,
        "z": z,
        "p_value": pval,
        "label_idx": top,
    }


@register_rater
class ClipLabel(Rater):
    """q3 from zero-shot words: the visualisations' label, checked on the examples."""

    name = "clip_label"
    description = "q3 via words: zero-shot phrases for the visualisations, then how well they describe the examples"
    needs = frozenset({"visualizations", "examples", "embedder", "dataset"})
    components = ("q3",)
    raw_statistic = "match"
    raw_direction = "higher"

    class Options(RaterOptions):
        """Options of ``clip_label`` (``rate.options.clip_label``)."""

        vocabulary: list[VocabularySource] = option(
            ["imagenet", "concepts"],
            "phrase sources: imagenet (the 1000 class names), concepts (the concepts file)",
            min_length=1,
            expected="a non-empty list of imagenet, concepts",
        )
        concepts: str | Path | None = option(
            None, "concepts file, one phrase a line (null: configs/concepts.txt)", expected="a file path or null"
        )
        template: str = option(
            "a photo of {}",
            "text prompt; {} is replaced by the phrase",
            pattern=r"\{\}",
            expected="a string containing '{}' where the phrase goes",
        )
        top_m: int = option(3, "phrases in the feature's label", ge=1)
        logit_scale: float | None = option(
            None, "softmax temperature × cosine (null: the embedder's)", gt=0, allow_inf_nan=False
        )
        n_null: int = option(500, "random example sets in each feature's null", ge=2)
        null_pool: int = option(256, "dataset images the random sets are drawn from", ge=2)
        calibration: CalibrationOption = option(
            "percentile", "raw statistic → [0, 1]: percentile (the common scale), ecdf or z"
        )
        match: Match = option(
            "distribution", "distribution (cosine of phrase distributions) or label_mass (mass on the label)"
        )

    def _text(self, ctx: RatingContext) -> tuple[list[str], np.ndarray]:
        emb = ctx.embedder.embedder
        if not emb.supports_text:
            raise UserError(
                f"rater 'clip_label' needs an embedder that embeds text; {emb.kind!r} does not "
                "(use rate.embedder.type: open_clip or handcrafted)"
            )
        phrases = build_vocabulary(self.options["vocabulary"], self.options["concepts"])
        template = str(self.options["template"])
        prompts = [template.format(p) for p in phrases]
        known = emb.known_text(prompts)
        phrases = [p for p, k in zip(phrases, known, strict=True) if k]
        if len(phrases) < 2:
            raise UserError(f"rater 'clip_label': embedder {emb.id!r} knows fewer than 2 phrases of the vocabulary")
        prompts = [template.format(p) for p in phrases]
        return phrases, ctx.embedder.embed_text(prompts)

    def score(self, ctx: RatingContext, features: Sequence[int]) -> ScoreTable:
        calibration = self.options["calibration"]  # checked by the Options model
        phrases, text = self._text(ctx)
        scale = self.options["logit_scale"] or ctx.embedder.embedder.logit_scale
        top_m = int(self.options["top_m"])
        p_pool = label_probabilities(ctx.null_embeddings(int(self.options["null_pool"])), text, scale)
        rows, labels = [], []
        subsets: dict[int, np.ndarray] = {}
        for f in track(features, "clip_label", len(features), "features"):
            vp, ep = ctx.vis_paths(f), ctx.example_paths(f)
            p_vis = label_probabilities(ctx.embed_paths(vp), text, scale) if vp else np.zeros((0, len(phrases)))
            p_ex = label_probabilities(ctx.embed_paths(ep), text, scale) if ep else np.zeros((0, len(phrases)))
            k = len(p_ex)
            if k and k not in subsets:
                subsets[k] = random_subsets(
                    len(p_pool), k, int(self.options["n_null"]), np.random.default_rng([self.seed, k, 0x6C62])
                )
            res = label_match(
                p_vis,
                p_ex,
                p_pool,
                subsets.get(k, np.zeros((0, 0), np.int64)),
                top_m,
                calibration,
                self.options["match"],
            )
            labels.append("; ".join(phrases[i] for i in res.pop("label_idx")))  # type: ignore[union-attr]
            rows.append(res)
        keys = ("q3", "match", "null_mean", "null_std", "z", "p_value")
        cols = {key: np.array([r[key] for r in rows], dtype=np.float64) for key in keys}
        q3 = cols.pop("q3")
        return self.table(
            features,
            I=q3,
            components={"q3": q3},
            extras={**cols, "label": np.array(labels, dtype=object)},
            meta={"vocabulary_size": len(phrases)},
        )
