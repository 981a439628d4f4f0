"""The auxiliary FCN head trained on backbone stage 3 (loss weight 0.4)."""

from __future__ import annotations

import torch
from torch import nn

from .classifier import PlainClassifier
from .layers import ConvBNReLU, select_features


class FCNHead(nn.Module):
    """``num_convs`` 3x3 convs on one backbone map, then a plain 1x1 classifier.

    As released: one conv to 256 channels on stage 3 (``in_index=2``), no
    concatenation of the input, ``Dropout2d(0.1)`` and ``conv_seg``. The
    auxiliary head is always plain, also in the conditional models.

    ``forward(features)`` returns ``(logits, None)`` at that map's resolution.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 256,
        num_convs: int = 1,
        in_index: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 1:
            raise ValueError(f"num_convs must be a positive int; got {num_convs!r}")
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.in_index = in_index
        self.convs = nn.Sequential(
            *(
                ConvBNReLU(in_channels if i == 0 else channels, channels, 3)
                for i in range(num_convs)
            )
        )
        self.classifier = PlainClassifier(channels, num_classes, dropout=dropout)

    def forward(self, features: list[torch.Tensor]):
        x = select_features(features, self.in_index, self.in_channels, type(self).__name__)
        return self.classifier(self.convs(x)), None
