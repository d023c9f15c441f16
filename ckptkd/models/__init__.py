"""Models: a registry of classifiers that all expose their penultimate features F."""
from . import mobilenetv2, resnet, shufflenetv2, small, wrn  # noqa: F401  (each registers its models)
from .base import Classifier, penultimate
from .registry import create_model, list_models, register_model

__all__ = ["Classifier", "penultimate", "create_model", "list_models", "register_model"]
