"""The released CondNet models' backbones, built from timm.

- ``resnet50_v1c`` / ``resnet101_v1c``: ResNet-V1c (deep 3x3 stem, mmseg's
  ``ResNetV1c``) dilated to output stride 8: stages 3 and 4 keep stride 1 with
  dilations 2 and 4, the first block of each at the previous dilation (mmseg's
  ``contract_dilation=True``). Maps of 256, 512, 1024, 2048 channels at
  strides 4, 8, 8, 8.
- ``resnet18_v1c`` / ``resnet34_v1c``: the same with basic blocks (maps of 64,
  128, 256, 512 channels); small networks for quick runs such as the demo.
  timm has no ImageNet weights for them (``pretrained=True`` is refused); a
  local checkpoint loads as for the others.
- ``swin_base_w12``: Swin-B, window 12 (``swin_base_patch4_window12_384``),
  stochastic depth 0.3, a LayerNorm on each stage's output as in mmseg's Swin.
  Maps of 128, 256, 512, 1024 channels at strides 4, 8, 16, 32; any input size.
- ``swin_tiny_w7``: Swin-T, window 7 (``swin_tiny_patch4_window7_224``: embed
  96, depths 2-2-6-2, heads 3-6-12-24), stochastic depth 0.3, the same output
  norms (the backbone of CAC's UPerNet Swin-T). Maps of 96, 192, 384, 768
  channels at strides 4, 8, 16, 32.

Every backbone maps an image batch (B, 3, H, W) to a list of four NCHW maps and
has ``out_channels`` and ``strides`` attributes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse
from torch import nn

from .backbone_weights import load_backbone_weights

BACKBONES = (
    "resnet18_v1c",
    "resnet34_v1c",
    "resnet50_v1c",
    "resnet101_v1c",
    "swin_base_w12",
    "swin_tiny_w7",
)
# The timm Swin each Swin backbone name is built from.
_SWIN_VARIANTS = {
    "swin_base_w12": "swin_base_patch4_window12_384",
    "swin_tiny_w7": "swin_tiny_patch4_window7_224",
}
# timm builds V1c basic-block ResNets from its plain ones with the deep stem.
_BASIC_V1C = dict(stem_type="deep", stem_width=32)
_LOCAL_HINT = (
    "pass pretrained='/path/to/checkpoint.pth' instead: a timm state dict, an mmseg/mmcv "
    "ImageNet checkpoint (open-mmlab://resnet50_v1c style) or mmseg Swin checkpoint, or the "
    "official Swin release"
)


# Any: the parts taken from timm's networks (conv1, layers, feature_info, ...) are
# attributes that nn.Module's typing does not know.
def _create_timm(variant: str, pretrained: bool, **kwargs) -> Any:
    if not pretrained:
        return timm.create_model(variant, pretrained=False, **kwargs)
    try:
        return timm.create_model(variant, pretrained=True, **kwargs)
    except Exception as exc:  # network, cache and hub errors come in many types
        raise RuntimeError(
            f"could not load timm's pretrained weights for {variant!r} "
            f"({type(exc).__name__}: {exc}); timm fetches them from the Hugging Face Hub "
            f"or its local cache. Without either, {_LOCAL_HINT}"
        ) from exc


def _check_pretrained(pretrained: object, device: str | torch.device | None) -> None:
    if not isinstance(pretrained, (bool, str, os.PathLike, Mapping)):
        raise TypeError(
            "pretrained must be False, True, a checkpoint path or a state dict; "
            f"got {type(pretrained).__name__}"
        )
    if pretrained is not False and device is not None and torch.device(device).type == "meta":
        raise ValueError("pretrained weights cannot be loaded into a backbone on device='meta'")


def _check_image(img: object, in_chans: int) -> None:
    if not isinstance(img, torch.Tensor) or img.dim() != 4 or img.shape[1] != in_chans:
        got = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"img must be a (B, {in_chans}, H, W) tensor; got {got}")


class ResNetV1c(nn.Module):
    """Dilated ResNet-V1c (output stride 8), timm's ``resnet{depth}c``.

    ``forward(img)`` returns the outputs of stages 1-4: channels
    ``out_channels = [256, 512, 1024, 2048]`` (depth 18/34: ``[64, 128, 256,
    512]``) at ``strides = [4, 8, 8, 8]``.
    Submodule and state-dict names are timm's (``conv1``, ``bn1``,
    ``layer1`` .. ``layer4``), without the classifier.

    Args:
        depth: 18, 34, 50 or 101.
        pretrained: False; True for timm's ImageNet weights (downloaded or
            cached by timm); or a checkpoint path / state dict in any format of
            :mod:`condnet.models.backbone_weights`, loaded strictly.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``,
            or ``device="meta"`` to build without memory or initialisation).
    """

    arch = "resnet"

    def __init__(self, depth: int = 50, pretrained=False, **timm_kwargs) -> None:
        super().__init__()
        if depth not in (18, 34, 50, 101):
            raise ValueError(f"depth must be 18, 34, 50 or 101; got {depth!r}")
        _check_pretrained(pretrained, timm_kwargs.get("device"))
        if depth in (18, 34):
            if pretrained is True:
                raise ValueError(
                    f"timm has no ImageNet weights for resnet{depth}_v1c; {_LOCAL_HINT}"
                )
            self.variant = f"resnet{depth}"
            timm_kwargs = {**_BASIC_V1C, **timm_kwargs}
        else:
            self.variant = f"resnet{depth}c"
        net = _create_timm(
            self.variant,
            pretrained is True,
            features_only=True,
            output_stride=8,
            out_indices=(1, 2, 3, 4),
            **timm_kwargs,
        )
        # Re-registered here so state-dict keys are timm's resnet names.
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.out_channels: list[int] = list(net.feature_info.channels())
        self.strides: list[int] = list(net.feature_info.reduction())
        if not isinstance(pretrained, bool):
            load_backbone_weights(self, pretrained, self.arch)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        _check_image(img, self.conv1[0].in_channels)
        x = self.maxpool(self.act1(self.bn1(self.conv1(img))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def _window_attention(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """(Shifted) window attention of a timm Swin block, in mmseg's order.

    mmseg pads the map to a multiple of the window and then shifts it; timm
    shifts first and pads after. The two differ whenever a stage's size is not
    a multiple of the window (every stage of Swin-B at 512x512 with window
    12), so this follows mmseg to reproduce the released model.
    """
    B, H, W, C = x.shape
    (wh, ww), (sh, sw) = block.window_size, block.shift_size
    x = F.pad(x, (0, 0, 0, (-W) % ww, 0, (-H) % wh))
    Hp, Wp = x.shape[1], x.shape[2]
    shifted = sh > 0 or sw > 0
    if shifted:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    # timm's mask builder slices the padded map exactly as mmseg does.
    mask = block.get_attn_mask(x) if shifted else None
    windows = window_partition(x, (wh, ww)).view(-1, wh * ww, C)
    windows = block.attn(windows, mask=mask).view(-1, wh, ww, C)
    x = window_reverse(windows, (wh, ww), Hp, Wp)
    if shifted:
        x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
    return x[:, :H, :W].contiguous()


class SwinBackbone(nn.Module):
    """Swin Transformer from timm with mmseg's per-stage output norms.

    ``forward(img)`` returns each stage's output, layer-normalised
    (``out_norms``) and in NCHW: channels ``out_channels`` (128, 256, 512,
    1024 for Swin-B; 96, 192, 384, 768 for Swin-T) at ``strides = [4, 8, 16,
    32]``. Any input size works: the image is zero-padded on the right and
    bottom to a multiple of 4 and each stage to a multiple of the window, as
    in mmseg.

    The blocks are timm's modules; their attention runs through
    :func:`_window_attention` (mmseg's pad-then-shift order), every block uses
    the full window and shift (mmseg's behaviour, timm's
    ``always_partition=True``) whatever the input size.

    Args:
        variant: a timm Swin model name.
        pretrained: as for :class:`ResNetV1c`. ImageNet checkpoints carry no
            output norms; those keep their initialisation (ones, zeros).
        **timm_kwargs: override the timm constructor arguments; defaults are
            ``img_size=512, drop_path_rate=0.3`` (the released config),
            ``strict_img_size=False, always_partition=True``.
    """

    arch = "swin"

    def __init__(
        self, variant: str = "swin_base_patch4_window12_384", pretrained=False, **timm_kwargs
    ) -> None:
        super().__init__()
        _check_pretrained(pretrained, timm_kwargs.get("device"))
        kwargs = dict(img_size=512, drop_path_rate=0.3, strict_img_size=False)
        kwargs.update(timm_kwargs, always_partition=True, num_classes=0)
        self.variant = variant
        net = _create_timm(variant, pretrained is True, **kwargs)
        self.patch_embed, self.layers = net.patch_embed, net.layers
        self.out_channels: list[int] = [info["num_chs"] for info in net.feature_info]
        self.strides: list[int] = [info["reduction"] for info in net.feature_info]
        device = timm_kwargs.get("device")
        self.out_norms = nn.ModuleList(nn.LayerNorm(c, device=device) for c in self.out_channels)
        if not isinstance(pretrained, bool):
            load_backbone_weights(self, pretrained, self.arch)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        _check_image(img, self.patch_embed.proj.in_channels)
        ph, pw = self.patch_embed.patch_size
        x = self.patch_embed(F.pad(img, (0, (-img.shape[3]) % pw, 0, (-img.shape[2]) % ph)))
        feats = []
        for stage, out_norm in zip(self.layers, self.out_norms, strict=True):
            x = stage.downsample(x)
            for block in stage.blocks:
                x = x + block.drop_path1(_window_attention(block, block.norm1(x)))
                x = x + block.drop_path2(block.mlp(block.norm2(x)))
            feats.append(out_norm(x).permute(0, 3, 1, 2).contiguous())
        return feats


def build_backbone(name: str, pretrained=False, **kwargs) -> ResNetV1c | SwinBackbone:
    """Builds a backbone by name.

    Args:
        name: one of :data:`BACKBONES`: ``"resnet18_v1c"``, ``"resnet34_v1c"``,
            ``"resnet50_v1c"``, ``"resnet101_v1c"``, ``"swin_base_w12"``,
            ``"swin_tiny_w7"``.
        pretrained: False (random initialisation); True (timm's ImageNet
            weights, fetched by timm); or the path of a local checkpoint (or a
            loaded state dict): timm, mmseg/mmcv or official Swin format,
            loaded strictly (see :func:`condnet.models.backbone_weights.load_backbone_weights`).
        **kwargs: passed on to timm's constructor, e.g. ``drop_path_rate`` or
            ``device="meta"`` (shapes only: no memory, no initialisation); for
            Swin also ``embed_dim``, ``depths``, ``num_heads``, ``window_size``,
            ``img_size``.

    Returns:
        An ``nn.Module`` whose ``forward(img)`` gives a list of four NCHW maps,
        with ``out_channels`` and ``strides`` (lists of four ints).
    """
    if name not in BACKBONES:
        raise ValueError(f"name must be one of {BACKBONES}; got {name!r}")
    if name.startswith("resnet"):
        return ResNetV1c(int(name[len("resnet") : -len("_v1c")]), pretrained=pretrained, **kwargs)
    return SwinBackbone(_SWIN_VARIANTS[name], pretrained=pretrained, **kwargs)
