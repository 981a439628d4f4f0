"""The last layer of a decode head: CondNet's conditional classifier, CAC's
context-aware classifier, or the plain 1x1-conv twin both replace."""

from __future__ import annotations

import torch
from torch import nn

from condnet.nn import ConditionalClassifier, ContextAwareClassifier, ContextAwareOutput
from condnet.ops.layouts import check_layout

CLASSIFIERS = ("conditional", "plain", "cac")


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
    released: bool = False,
) -> nn.Module:
    """``"conditional"`` -> :class:`~condnet.nn.ConditionalClassifier`;
    ``"cac"`` -> :class:`~condnet.nn.ContextAwareClassifier` (scale 15, its
    ``released`` numerics when ``released``); ``"plain"`` ->
    :class:`PlainClassifier`. ``layout`` is the conditional classifier's and
    ``released`` CAC's; the other kinds check and ignore them.

    The op backend is chosen after building (:func:`condnet.nn.set_backend`,
    :func:`condnet.ops.use_backend`)."""
    if not isinstance(released, bool):
        raise ValueError(f"released must be a bool; got {released!r}")
    if kind == "conditional":
        return ConditionalClassifier(in_channels, num_classes, layout=layout, dropout=dropout)
    layout = check_layout(layout)
    if kind == "cac":
        return ContextAwareClassifier(in_channels, num_classes, dropout=dropout, released=released)
    if kind == "plain":
        return PlainClassifier(in_channels, num_classes, dropout=dropout)
    raise ValueError(f"classifier must be one of {CLASSIFIERS}; got {kind!r}")


def classify(
    classifier: nn.Module, feat: torch.Tensor, label: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | ContextAwareOutput | None]:
    """The logits and what the head's loss needs besides, from one call.

    The second item is the guide logits of the conditional classifier; the
    :class:`~condnet.nn.ContextAwareOutput` of the context-aware one, in
    training with a ``label`` (its oracle needs the label; eval mode and a
    missing label give None); None for the plain classifier. ``label`` is
    ignored by the other classifiers.
    """
    if isinstance(classifier, ConditionalClassifier):
        return classifier(feat, return_guide=True)
    if isinstance(classifier, ContextAwareClassifier):
        if classifier.training and label is not None:
            out = classifier(feat, label=label)
            return out.logits, out
        return classifier(feat), None
    return classifier(feat), None
