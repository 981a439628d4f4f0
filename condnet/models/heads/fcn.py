"""The FCN head: the auxiliary head trained on backbone stage 3 (loss weight
0.4), and, with ``classifier="cac"``, CAC's FCN decode head (``FCNHeadCAC``)."""

from __future__ import annotations

import torch
from torch import nn

from .classifier import build_classifier, classify
from .layers import ConvBNReLU, select_features


class FCNHead(nn.Module):
    """``num_convs`` 3x3 convs on one backbone map (optionally fused with the
    map itself by ``conv_cat``), then the classifier.

    As the auxiliary head: one conv to 256 channels on stage 3
    (``in_index=2``), no concatenation of the input, ``Dropout2d(0.1)`` and a
    plain ``conv_seg``; the auxiliary head is always plain, also in the
    conditional and CAC models. As a decode head, mmseg's FCN defaults are
    ``num_convs=2, concat_input=True``.

    Args:
        in_channels: channels of the map it reads.
        num_classes: K.
        channels: width of the convs.
        num_convs: how many 3x3 convs (>= 1).
        concat_input: concatenate the map with the convs' output and fuse them
            with a 3x3 ``conv_cat`` (mmseg's ``concat_input``).
        in_index: which backbone map it reads.
        dropout: ``Dropout2d`` before the classifier.
        classifier, layout, released: as in
            :class:`~condnet.models.heads.ASPPHead` (default ``"plain"``).

    ``forward(features, label=None)`` returns ``(logits, extra)`` at that
    map's resolution, ``extra`` as for :class:`~condnet.models.heads.ASPPHead`
    (None for the plain classifier).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 256,
        num_convs: int = 1,
        concat_input: bool = False,
        in_index: int = 2,
        dropout: float = 0.1,
        classifier: str = "plain",
        layout: str = "grouped_conv",
        released: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_convs, bool) or not isinstance(num_convs, int) or num_convs < 1:
            raise ValueError(f"num_convs must be a positive int; got {num_convs!r}")
        if not isinstance(concat_input, bool):
            raise ValueError(f"concat_input must be a bool; got {concat_input!r}")
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.in_index = in_index
        self.convs = nn.Sequential(
            *(
                ConvBNReLU(in_channels if i == 0 else channels, channels, 3)
                for i in range(num_convs)
            )
        )
        self.conv_cat = ConvBNReLU(in_channels + channels, channels, 3) if concat_input else None
        self.classifier = build_classifier(
            classifier, channels, num_classes, layout=layout, dropout=dropout, released=released
        )

    def forward(self, features: list[torch.Tensor], label: torch.Tensor | None = None):
        x = select_features(features, self.in_index, self.in_channels, type(self).__name__)
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return classify(self.classifier, out, label)
