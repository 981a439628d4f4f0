"""UPerNet's decode head: a pyramid pooling module on the last map plus an
FPN over all four (the head of the released CondNet Swin model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .classifier import build_classifier, classify
from .layers import ConvBNReLU, resize, select_features


class UPerHead(nn.Module):
    """UPerNet head.

    PPM: the last map average-pooled to each of ``pool_scales`` (``psp_modules``,
    each a pool and a 1x1 conv), upsampled, concatenated with the map and fused
    by a 3x3 ``bottleneck``. FPN: 1x1 ``lateral_convs`` on the other maps, a
    top-down path adding each upsampled coarser level, 3x3 ``fpn_convs``, then
    all levels upsampled to the finest, concatenated and fused by the 3x3
    ``fpn_bottleneck``, then the classifier.

    Args:
        in_channels: channels of the four backbone maps, finest first
            ((128, 256, 512, 1024) for Swin-B).
        num_classes: K.
        channels: head width (512 as released).
        pool_scales: PPM output sizes, (1, 2, 3, 6) as released.
        classifier, layout, dropout, released: as in
            :class:`~condnet.models.heads.ASPPHead` (``classifier="cac"`` is
            the released CAC head, ``UPerHeadCAC``).

    ``forward(features, label=None)`` returns ``(logits, extra)`` as
    :class:`~condnet.models.heads.ASPPHead` does, at the finest map's
    resolution. In training the scale-1 pooling runs BatchNorm on one
    value per image, so a batch needs at least 2 images.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        *,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        classifier: str = "conditional",
        layout: str = "grouped_conv",
        dropout: float = 0.1,
        released: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, Sequence) or len(in_channels) < 2:
            raise ValueError(
                f"in_channels must list the channels of at least 2 maps; got {in_channels!r}"
            )
        if (
            not isinstance(pool_scales, Sequence)
            or not pool_scales
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in pool_scales)
        ):
            raise ValueError(
                f"pool_scales must be a non-empty sequence of positive ints; got {pool_scales!r}"
            )
        self.in_channels = tuple(in_channels)
        self.channels, self.num_classes = channels, num_classes
        self.pool_scales = tuple(pool_scales)
        top = self.in_channels[-1]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNReLU(top, channels, 1))
            for s in self.pool_scales
        )
        self.bottleneck = ConvBNReLU(top + len(self.pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(
            ConvBNReLU(c, channels, 1) for c in self.in_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            ConvBNReLU(channels, channels, 3) for _ in self.in_channels[:-1]
        )
        self.fpn_bottleneck = ConvBNReLU(len(self.in_channels) * channels, channels, 3)
        self.classifier = build_classifier(
            classifier, channels, num_classes, layout=layout, dropout=dropout, released=released
        )

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        outs.extend(resize(module(x), x.shape[-2:]) for module in self.psp_modules)
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, features: list[torch.Tensor], label: torch.Tensor | None = None):
        name = type(self).__name__
        n = len(self.in_channels)
        if not isinstance(features, (list, tuple)) or len(features) != n:
            got = len(features) if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"{name}: features must be a list of {n} maps; got {got}")
        inputs = [select_features(features, i, c, name) for i, c in enumerate(self.in_channels)]
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(inputs[-1]))
        for i in range(n - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n - 1)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        out = self.fpn_bottleneck(torch.cat([resize(o, size) for o in outs], dim=1))
        return classify(self.classifier, out, label)
