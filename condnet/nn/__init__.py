"""Modules built on :mod:`condnet.ops`, and CondNet's classifier in other networks."""

from .cac_losses import cac_losses
from .conditional_classifier import LAYOUTS, ConditionalClassifier
from .context_aware_classifier import ContextAwareClassifier, ContextAwareOutput
from .convert import VARIANTS, conditional_classifiers, make_conditional
from .discovery import find_classifiers
from .drop_in import INITS, DropInConditionalClassifier
from .drop_in_context_aware import (
    DropInContextAwareClassifier,
    cac_auxiliary_loss,
    context_aware_classifiers,
)
from .guidance import dice_guidance_loss, guidance_loss
from .op_backend import set_backend
from .warm_start import warm_start_, warm_start_tensors

__all__ = [
    "INITS",
    "LAYOUTS",
    "VARIANTS",
    "ConditionalClassifier",
    "ContextAwareClassifier",
    "ContextAwareOutput",
    "DropInConditionalClassifier",
    "DropInContextAwareClassifier",
    "cac_auxiliary_loss",
    "cac_losses",
    "conditional_classifiers",
    "context_aware_classifiers",
    "dice_guidance_loss",
    "find_classifiers",
    "guidance_loss",
    "make_conditional",
    "set_backend",
    "warm_start_",
    "warm_start_tensors",
]
