"""Model adapters: a registry of classifiers split into head and tail at a layer."""

from autointerp.models.base import MODELS, ModelAdapter, create_model, list_models, register_model

__all__ = ["MODELS", "ModelAdapter", "create_model", "list_models", "register_model"]
