"""DeepLabV3's decode head: atrous spatial pyramid pooling (ASPP)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .classifier import build_classifier, classify
from .layers import ConvBNReLU, DepthwiseSeparableConv, resize, select_features


def _check_dilations(dilations) -> tuple[int, ...]:
    if (
        not isinstance(dilations, Sequence)
        or not dilations
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dilations)
    ):
        raise ValueError(
            f"dilations must be a non-empty sequence of positive ints; got {dilations!r}"
        )
    return tuple(dilations)


class ASPPHead(nn.Module):
    """ASPP head (DeepLabV3) on the last backbone map, then the classifier.

    Branches: image pooling (global average pool, 1x1 conv, upsampled) and
    one conv per dilation (1x1 for dilation 1, 3x3 dilated otherwise); their
    concatenation goes through a 3x3 ``bottleneck`` to ``channels``.

    Args:
        in_channels: channels of the last backbone map (2048 for ResNet).
        num_classes: K.
        channels: width of the head (512 as released).
        dilations: ASPP dilations; (1, 6, 12, 18) for DeepLabV3.
        classifier: ``"conditional"`` (CondNet), ``"cac"`` (CAC's context-aware
            classifier) or ``"plain"`` (1x1 conv).
        layout: the conditional classifier's parameter layout (see
            :class:`~condnet.nn.ConditionalClassifier`).
        dropout: ``Dropout2d`` before the classifier.
        released: the context-aware classifier's ``released`` numerics (see
            :class:`~condnet.nn.ContextAwareClassifier`); unused otherwise.

    ``forward(features, label=None)`` takes the backbone's list of maps and
    returns ``(logits, extra)`` at the feature resolution: ``extra`` is the
    guide logits of the conditional classifier, the
    :class:`~condnet.nn.ContextAwareOutput` of CAC in training when ``label``
    (the image-size label its oracle needs) is given, else None. In
    training, image pooling runs BatchNorm on one value per image, so a batch
    needs at least 2 images.
    """

    separable = False

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        channels: int = 512,
        dilations: Sequence[int] = (1, 6, 12, 18),
        classifier: str = "conditional",
        layout: str = "grouped_conv",
        dropout: float = 0.1,
        released: bool = False,
    ) -> None:
        super().__init__()
        dilations = _check_dilations(dilations)
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.dilations = dilations
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), ConvBNReLU(in_channels, channels, 1)
        )
        branches: list[nn.Module] = []
        for d in dilations:
            if d == 1:
                branches.append(ConvBNReLU(in_channels, channels, 1))
            elif self.separable:
                branches.append(DepthwiseSeparableConv(in_channels, channels, 3, dilation=d))
            else:
                branches.append(ConvBNReLU(in_channels, channels, 3, dilation=d))
        self.aspp_modules = nn.ModuleList(branches)
        self.bottleneck = ConvBNReLU((len(dilations) + 1) * channels, channels, 3)
        self.classifier = build_classifier(
            classifier, channels, num_classes, layout=layout, dropout=dropout, released=released
        )

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        """ASPP branches on ``x``, concatenated and fused by the bottleneck."""
        outs = [resize(self.image_pool(x), x.shape[-2:])]
        outs.extend(branch(x) for branch in self.aspp_modules)
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, features: list[torch.Tensor], label: torch.Tensor | None = None):
        x = select_features(features, -1, self.in_channels, type(self).__name__)
        return classify(self.classifier, self.pyramid(x), label)
