"""The last layer of a decode head: CondNet's conditional classifier or its
plain 1x1-conv twin (the baseline it replaces)."""

from __future__ import annotations

import torch
from torch import nn

from condnet.nn import ConditionalClassifier
from condnet.ops.layouts import check_layout

CLASSIFIERS = ("conditional", "plain")


class PlainClassifier(nn.Module):
    """``Dropout2d`` then a 1x1 conv: mmseg's ``conv_seg`` of the baseline heads.

    The conv is initialised normal(std=0.01) with zero bias, as mmseg does. It
    runs no condnet op, so no backend applies to it: :func:`condnet.nn.set_backend`
    refuses a model whose classifiers are all plain.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv_seg = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        assert self.conv_seg.bias is not None  # Conv2d's default bias=True
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)


def build_classifier(
    kind: str,
    in_channels: int,
    num_classes: int,
    *,
    layout: str = "grouped_conv",
    dropout: float = 0.1,
) -> nn.Module:
    """``"conditional"`` -> :class:`~condnet.nn.ConditionalClassifier`;
    ``"plain"`` -> :class:`PlainClassifier` (``layout`` unused).

    The conditional classifier's op backend is chosen after building
    (:func:`condnet.nn.set_backend`, :func:`condnet.ops.use_backend`)."""
    if kind == "conditional":
        return ConditionalClassifier(in_channels, num_classes, layout=layout, dropout=dropout)
    if kind == "plain":
        layout = check_layout(layout)
        return PlainClassifier(in_channels, num_classes, dropout=dropout)
    raise ValueError(f"classifier must be one of {CLASSIFIERS}; got {kind!r}")


def classify(classifier: nn.Module, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits and guide logits (None for the plain classifier) from one call."""
    if isinstance(classifier, ConditionalClassifier):
        return classifier(feat, return_guide=True)
    return classifier(feat), None
