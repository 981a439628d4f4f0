"""Conv building blocks of the decode heads.

Child names follow mmcv's ``ConvModule`` (``conv``, ``bn``, ``activate``) and
``DepthwiseSeparableConvModule`` (``depthwise_conv``, ``pointwise_conv``), so
the released checkpoints' decode-head keys map onto these modules one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from condnet.models.norm import norm2d


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=False``, as every released head uses."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def select_features(features, index: int, channels: int, head: str) -> torch.Tensor:
    """``features[index]``, checked to be a 4-D map with ``channels`` channels."""
    if not isinstance(features, (list, tuple)):
        raise ValueError(
            f"{head}: features must be a list of (B, C, H, W) maps; got {type(features).__name__}"
        )
    if not -len(features) <= index < len(features):
        raise ValueError(f"{head}: needs feature map {index}; got a list of {len(features)} maps")
    x = features[index]
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{head}: feature map {index} must be (B, {channels}, H, W); got {shape}")
    return x


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm (SyncBN when distributed) -> ReLU.

    The conv is Kaiming-normal initialised (fan_out, ReLU gain) and the norm
    to identity, as mmcv does for ``ConvModule``. ``padding=None`` keeps the
    spatial size: ``dilation * (kernel_size // 2)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        groups: int = 1,
        inplace: bool = True,
    ) -> None:
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("kernel_size", kernel_size),
            ("dilation", dilation),
            ("groups", groups),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if padding is None:
            padding = dilation * (kernel_size // 2)
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self.bn = norm2d(out_channels)
        self.activate = nn.ReLU(inplace=inplace)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise ``kernel_size`` conv then pointwise 1x1 conv, each a :class:`ConvBNReLU`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        dilation: int = 1,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNReLU(
            in_channels,
            in_channels,
            kernel_size,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
        )
        self.pointwise_conv = ConvBNReLU(in_channels, out_channels, 1)
