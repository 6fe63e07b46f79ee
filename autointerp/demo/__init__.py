"""The embedded offline demo world: a procedurally generated image set with known concepts
(:mod:`~autointerp.demo.synthetic`), a small CNN trained on it (:mod:`~autointerp.demo.model`,
registered as ``demo_cnn``) and ground-truth concept purity, the demo's answer key for validating
raters (:mod:`~autointerp.demo.purity`).

``autointerp.demo.purity`` is the module; its function ``purity`` is exported here as
``concept_purity`` so the two never shadow each other. The model module imports torch; it is
loaded on first access of its names, so ``import autointerp.demo`` stays light.
"""

from __future__ import annotations

from typing import Any

from autointerp.demo.purity import (
    best_concept,
    concept_scores,
    planted_coherent_indices,
    planted_coherent_set,
    purity_table,
    random_indices,
)
from autointerp.demo.purity import purity as concept_purity
from autointerp.demo.synthetic import (
    CONCEPT_VALUES,
    N_CLASSES,
    SyntheticDataset,
    build_synthetic_dataset,
    class_keys,
    generate,
)

_MODEL_NAMES = {
    "DEFAULT_LAYER",
    "DemoCNN",
    "DemoCNNAdapter",
    "TrainSettings",
    "build_demo_cnn",
    "create_demo_cnn",
    "load_or_train",
    "train_demo_cnn",
}

__all__ = [
    "CONCEPT_VALUES",
    "N_CLASSES",
    "SyntheticDataset",
    "build_synthetic_dataset",
    "class_keys",
    "generate",
    "best_concept",
    "concept_purity",
    "concept_scores",
    "planted_coherent_indices",
    "planted_coherent_set",
    "purity_table",
    "random_indices",
    *sorted(_MODEL_NAMES),
]


def __getattr__(name: str) -> Any:
    if name in _MODEL_NAMES:
        from autointerp.demo import model

        return getattr(model, name)
    raise AttributeError(f"module 'autointerp.demo' has no attribute {name!r}")
