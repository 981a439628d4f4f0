"""Modules built on :mod:`condnet.ops`."""

from .conditional_classifier import LAYOUTS, ConditionalClassifier

__all__ = ["LAYOUTS", "ConditionalClassifier"]
