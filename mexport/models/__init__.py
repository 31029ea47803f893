"""Model architectures (registered by name), the float pipeline, and weights handling."""

from .pipeline import MattingModel, MattingPipeline, resize
from .registry import DEFAULT_MODEL, MODELS, ModelFactory, load_model, register_model

# Registering architectures: one import per model file.
from . import u2netp_refine  # noqa: F401,E402

__all__ = ["DEFAULT_MODEL", "MODELS", "MattingModel", "MattingPipeline", "ModelFactory", "load_model", "register_model", "resize"]
