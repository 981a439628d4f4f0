"""The conditional classifier as it sits inside a host network, in place of
the ``nn.Conv2d`` that :func:`condnet.nn.make_conditional` replaced.

The host calls it like the conv (``logits = module(features)``), so the guide
logits that the guidance loss needs cannot travel through the host's return
value; the module keeps those of its last training forward instead, until
:func:`condnet.nn.guidance_loss` takes them.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from .conditional_classifier import ConditionalClassifier, check_features
from .warm_start import warm_start_

__all__ = [
    "INITS",
    "DropInConditionalClassifier",
    "check_replaceable",
    "conv_geometry",
    "unfold_patches",
]

INITS = ("from_classifier", "random")


def _size(value: object, name: str, minimum: int) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair
    ):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them; got {value!r}")
    return (int(pair[0]), int(pair[1]))


Pair = tuple[int, int]


def conv_geometry(
    kernel_size: object, stride: object, padding: object, dilation: object
) -> tuple[Pair, Pair, Pair, Pair]:
    """A conv's kernel size, stride, padding and dilation, each checked and as a pair."""
    return (
        _size(kernel_size, "kernel_size", 1),
        _size(stride, "stride", 1),
        _size(padding, "padding", 0),
        _size(dilation, "dilation", 1),
    )


def check_replaceable(conv: object, init: str, becomes: str) -> None:
    """``conv`` is an nn.Conv2d a drop-in classifier can stand in for, and
    ``init`` one of :data:`INITS`; the errors say what it ``becomes``."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be an nn.Conv2d; got {type(conv).__name__}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(
            "only an nn.Conv2d with groups=1, numeric padding and padding_mode='zeros' "
            f"can become {becomes}; got {conv}"
        )


def unfold_patches(
    feat: torch.Tensor, kernel_size: Pair, stride: Pair, padding: Pair, dilation: Pair
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*kh*kw, h, w): each output pixel's k x k patch, laid
    out channel-major as a conv's weight is, on the conv's output grid."""
    B, _, H, W = feat.shape
    (kh, kw), (sh, sw) = kernel_size, stride
    (ph, pw), (dh, dw) = padding, dilation
    h = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = F.unfold(feat, kernel_size, dilation, padding, stride)
    return cols.reshape(B, -1, h, w)


class DropInConditionalClassifier(ConditionalClassifier):
    """A :class:`ConditionalClassifier` with the interface of ``nn.Conv2d(C, K, k)``.

    ``module(features)`` returns the logits, as the conv did. In training mode
    with gradients enabled it also keeps that forward's guide logits (with
    their graph) in :attr:`guide_logits`, until :func:`condnet.nn.guidance_loss`
    takes them, the next training forward replaces them, or ``eval()`` drops
    them. ``module(features, return_guide=True)`` returns both, as the base
    class does.

    A k x k conv (k > 1; segmentation_models_pytorch's ``Unet`` ends in a 3x3
    one) becomes a conditional classifier over k x k patches: the features are
    unfolded to C*k*k channels (``F.unfold`` with the conv's stride, padding and
    dilation), so a k x k kernel is generated per image and a warm start from
    the conv stays exact. The projection then grows with (C*k*k)**2 per class.

    Args:
        in_channels: C, the channels of the features (before unfolding).
        num_classes: K.
        layout: ``"grouped_conv"`` or ``"per_class"``, as in :class:`ConditionalClassifier`.
        dropout: ``Dropout2d`` probability on the features (before unfolding);
            0 by default, since the host network keeps its own dropout.
        kernel_size, stride, padding, dilation: those of the conv replaced.

    The base class's ``in_channels`` is C*k*k (what its ops see);
    :attr:`feature_channels` is C.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        layout: str = "grouped_conv",
        dropout: float = 0.0,
        *,
        kernel_size: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int; got {in_channels!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        kernel_size, stride, padding, dilation = conv_geometry(
            kernel_size, stride, padding, dilation
        )
        # Dropout is applied here, before unfolding, so that it drops feature
        # channels as the host's Dropout2d would, not single patch entries.
        super().__init__(in_channels * kernel_size[0] * kernel_size[1], num_classes, layout, 0.0)
        self.feature_channels = in_channels
        self.kernel_size, self.stride, self.padding, self.dilation = (
            kernel_size,
            stride,
            padding,
            dilation,
        )
        self.patches = (kernel_size, stride, padding) != ((1, 1), (1, 1), (0, 0))
        self.input_dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self._guide_logits: torch.Tensor | None = None

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        layout: str = "grouped_conv",
        init: str = "from_classifier",
        dropout: float = 0.0,
    ) -> DropInConditionalClassifier:
        """The conditional classifier to put in place of ``conv``, on its device
        and dtype. ``init="from_classifier"`` warm-starts it from the conv's
        weight and bias (see :func:`condnet.nn.warm_start_`); ``"random"``
        keeps the released initialisation."""
        check_replaceable(conv, init, "a conditional classifier")
        # An nn.Conv2d holds each of these as a pair; torch types them tuple[int, ...].
        with torch.device(conv.weight.device):
            module = cls(
                conv.in_channels,
                conv.out_channels,
                layout,
                dropout,
                kernel_size=cast(tuple[int, int], conv.kernel_size),
                stride=cast(tuple[int, int], conv.stride),
                padding=cast(tuple[int, int], conv.padding),
                dilation=cast(tuple[int, int], conv.dilation),
            )
        module = module.to(conv.weight.dtype)
        if init == "from_classifier":
            weight = conv.weight.detach().reshape(conv.out_channels, -1)
            bias = None if conv.bias is None else conv.bias.detach()
            warm_start_(module, weight, bias)
        return module.train(conv.training)

    @property
    def guide_logits(self) -> torch.Tensor | None:
        """The guide logits (B, K, h, w) of the last training forward, or None."""
        return self._guide_logits

    def take_guide_logits(self) -> torch.Tensor | None:
        """Returns :attr:`guide_logits` and forgets them (so the module no
        longer holds their graph)."""
        guide, self._guide_logits = self._guide_logits, None
        return guide

    def train(self, mode: bool = True) -> DropInConditionalClassifier:
        if not mode:
            self._guide_logits = None
        return super().train(mode)

    def forward(
        self, feat: torch.Tensor, return_guide: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_features(feat, self.feature_channels, "this classifier replaced a conv with")
        if self.input_dropout is not None:
            feat = self.input_dropout(feat)
        if self.patches:
            feat = unfold_patches(feat, self.kernel_size, self.stride, self.padding, self.dilation)
        logits, guide = super().forward(feat, return_guide=True)
        if self.training and torch.is_grad_enabled():
            self._guide_logits = guide
        return (logits, guide) if return_guide else logits

    def extra_repr(self) -> str:
        text = f"feature_channels={self.feature_channels}, " + super().extra_repr()
        if self.patches:
            text += (
                f", kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}"
            )
        return text
