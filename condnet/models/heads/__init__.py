"""Decode heads (DeepLabV3, DeepLabV3+, UPerNet, FCN) with a conditional,
context-aware (CAC) or plain classifier, the auxiliary FCN head, and their
conv building blocks."""

from .aspp import ASPPHead
from .classifier import CLASSIFIERS, PlainClassifier, build_classifier
from .fcn import FCNHead
from .layers import ConvBNReLU, DepthwiseSeparableConv
from .sep_aspp import SepASPPHead
from .uper import UPerHead

__all__ = [
    "CLASSIFIERS",
    "ASPPHead",
    "ConvBNReLU",
    "DepthwiseSeparableConv",
    "FCNHead",
    "PlainClassifier",
    "SepASPPHead",
    "UPerHead",
    "build_classifier",
]
