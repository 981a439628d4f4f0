"""DeepLabV3+'s decode head: separable ASPP plus a low-level skip (the head of
the released CondNet ResNet models)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .aspp import ASPPHead
from .classifier import classify
from .layers import ConvBNReLU, DepthwiseSeparableConv, resize, select_features


class SepASPPHead(ASPPHead):
    """DeepLabV3+ head: depthwise-separable ASPP on the last backbone map, a
    1x1 ``c1_bottleneck`` on the first (stride 4) map, both concatenated at
    stride 4 and fused by two separable 3x3 convs (``sep_bottleneck``), then
    the classifier.

    Args:
        in_channels: channels of the last backbone map (2048 for ResNet).
        c1_in_channels: channels of the first backbone map (256 for ResNet).
        num_classes: K.
        channels: head width (512 as released).
        c1_channels: width of the low-level skip (48 as released).
        dilations: (1, 12, 24, 36) as released.
        classifier, layout, dropout, released: as in :class:`ASPPHead`
            (``classifier="cac"`` is the released CAC DeepLabV3+ head,
            ``DepthwiseSeparableASPPHeadCAC``).

    ``forward(features, label=None)`` returns ``(logits, extra)`` as
    :class:`ASPPHead` does, at the first map's resolution (stride 4).
    """

    separable = True

    def __init__(
        self,
        in_channels: int,
        c1_in_channels: int,
        num_classes: int,
        *,
        channels: int = 512,
        c1_channels: int = 48,
        dilations: Sequence[int] = (1, 12, 24, 36),
        classifier: str = "conditional",
        layout: str = "grouped_conv",
        dropout: float = 0.1,
        released: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            num_classes,
            channels=channels,
            dilations=dilations,
            classifier=classifier,
            layout=layout,
            dropout=dropout,
            released=released,
        )
        self.c1_in_channels = c1_in_channels
        self.c1_bottleneck = ConvBNReLU(c1_in_channels, c1_channels, 1)
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConv(channels + c1_channels, channels, 3),
            DepthwiseSeparableConv(channels, channels, 3),
        )

    def forward(self, features: list[torch.Tensor], label: torch.Tensor | None = None):
        name = type(self).__name__
        x = select_features(features, -1, self.in_channels, name)
        c1 = self.c1_bottleneck(select_features(features, 0, self.c1_in_channels, name))
        out = resize(self.pyramid(x), c1.shape[-2:])
        out = self.sep_bottleneck(torch.cat([out, c1], dim=1))
        return classify(self.classifier, out, label)
