"""Modules built on :mod:`condnet.ops`."""

from .conditional_classifier import LAYOUTS, ConditionalClassifier
from .op_backend import set_backend

__all__ = ["LAYOUTS", "ConditionalClassifier", "set_backend"]
