"""Backbone checkpoints: reading them, renaming their keys to this package's
(timm's) names, and loading them strictly.

Key names of the backbones in :mod:`condnet.models.backbones`:

- ResNet-V1c: timm's ``resnet50c`` / ``resnet101c`` names without the
  classifier: ``conv1.{0,1,3,4,6}.*`` (deep stem), ``bn1.*``,
  ``layerX.Y.{conv1,bn1,conv2,bn2,conv3,bn3}.*``, ``layerX.0.downsample.{0,1}.*``.
- Swin: timm's ``SwinTransformer`` names for ``patch_embed.*`` and
  ``layers.*`` (a stage's patch merging at its start, ``layers.{i}.downsample``,
  i = 1..3), plus ``out_norms.{i}.*``: the LayerNorm on each stage's output
  that mmseg's Swin adds (its ``norm0`` .. ``norm3``).

Formats read (detected from the keys):

- timm state dicts;
- mmseg/mmcv ResNet-V1c (``open-mmlab://resnet50_v1c`` and the backbone of an
  mmseg segmentor): ``stem.{0,1,3,4,6,7}.*``, ``layerX.Y.*``;
- mmseg Swin (the backbone of an mmseg segmentor): ``patch_embed.projection.*``,
  ``stages.{i}.blocks.{j}.attn.w_msa.*``, ``...ffn.layers.{0.0,1}.*``,
  ``stages.{i}.downsample.{norm,reduction}.*`` (unfold channel order),
  ``norm{i}.*``;
- the official Swin ImageNet release (``swin_base_patch4_window12_384.pth``,
  ``swin_tiny_patch4_window7_224.pth``):
  ``layers.{i}.downsample.*`` at the end of stage i, under ``"model"``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from condnet.checkpoint_files import load_tensors, read_state_dict, state_dict_of

ARCHS = ("resnet", "swin")

# Classifier (and the pre-classifier norm of Swin) of ImageNet checkpoints.
_RESNET_CLASSIFIER = re.compile(r"^fc\.")
_SWIN_CLASSIFIER = re.compile(r"^(head|norm)\.")
# Buffers that are recomputed, never loaded.
_SWIN_BUFFERS = re.compile(r"\.(relative_position_index|attn_mask)$")
# Wrappers around the tensors: mmcv's, and the official Swin release's.
_WRAPPERS = ("state_dict", "model")
_MMSEG_STEM = {"0": "conv1.0", "1": "conv1.1", "3": "conv1.3", "4": "conv1.4", "6": "conv1.6"}


def _drop(state_dict: Mapping[str, torch.Tensor], pattern: re.Pattern) -> dict:
    return {k: v for k, v in state_dict.items() if not pattern.search(k)}


def mmseg_resnet_to_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg/mmcv ResNet-V1c keys -> timm ``resnet*c`` keys.

    ``stem.{0,3,6}`` (convs) and ``stem.{1,4}`` (BNs) become ``conv1.*``,
    ``stem.7`` (the last BN) becomes ``bn1``; ``layerX.*`` keep their names.
    The ImageNet classifier ``fc.*`` is dropped silently. Other keys pass
    through unchanged (a strict load then reports them). Give the keys
    without a ``backbone.`` prefix (see :func:`unwrap_state_dict`).
    """
    out = {}
    for key, value in _drop(state_dict, _RESNET_CLASSIFIER).items():
        match = re.match(r"stem\.(\d+)\.(.+)$", key)
        if match and match[1] == "7":
            key = f"bn1.{match[2]}"
        elif match and match[1] in _MMSEG_STEM:
            key = f"{_MMSEG_STEM[match[1]]}.{match[2]}"
        out[key] = value
    return out


def _unfold_to_timm(value: torch.Tensor) -> torch.Tensor:
    """Patch merging's 4C channels from mmseg's order to timm's.

    mmseg's ``nn.Unfold(2, stride=2)`` puts channel c of pixel (dh, dw) of each
    2x2 patch at c*4 + dh*2 + dw; timm (and the official Swin) at
    dw*2C + dh*C + c. Works on the reduction weight (out, 4C) and on the
    norm's weight and bias (4C,).
    """
    lead = value.shape[:-1]
    c = value.shape[-1] // 4
    grid = value.reshape(*lead, c, 2, 2)  # (..., c, dh, dw)
    return grid.movedim(-3, -1).transpose(-3, -2).reshape(*lead, 4 * c)  # (..., dw, dh, c)


def mmseg_swin_to_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg ``SwinTransformer`` keys -> this package's Swin keys.

    ``stages.{i}.downsample`` moves to ``layers.{i+1}.downsample`` with its
    channels reordered from unfold order (see :func:`_unfold_to_timm`);
    ``attn.w_msa.`` -> ``attn.``, ``ffn.layers.0.0.`` -> ``mlp.fc1.``,
    ``ffn.layers.1.`` -> ``mlp.fc2.``, ``patch_embed.projection.`` ->
    ``patch_embed.proj.``, ``norm{i}.`` -> ``out_norms.{i}.``. The buffers
    ``relative_position_index`` are dropped (rebuilt by the model; mmseg's
    index equals timm's). ImageNet leftovers ``head.*`` and ``norm.*`` are
    dropped silently. Give the keys without a ``backbone.`` prefix.
    """
    out = {}
    state_dict = _drop(_drop(state_dict, _SWIN_CLASSIFIER), _SWIN_BUFFERS)
    for key, value in state_dict.items():
        if match := re.match(r"norm(\d+)\.(.+)$", key):
            key = f"out_norms.{match[1]}.{match[2]}"
        elif key.startswith("patch_embed.projection."):
            key = "patch_embed.proj." + key[len("patch_embed.projection.") :]
        elif match := re.match(r"stages\.(\d+)\.downsample\.(.+)$", key):
            key = f"layers.{int(match[1]) + 1}.downsample.{match[2]}"
            value = _unfold_to_timm(value)
        elif match := re.match(r"stages\.(\d+)\.(.+)$", key):
            rest = match[2].replace(".attn.w_msa.", ".attn.").replace(".ffn.layers.1.", ".mlp.fc2.")
            rest = rest.replace(".ffn.layers.0.0.", ".mlp.fc1.")
            key = f"layers.{match[1]}.{rest}"
        out[key] = value
    return out


def official_swin_to_timm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Swin release keys -> this package's Swin keys.

    The official code merges patches at the end of a stage
    (``layers.{i}.downsample``), timm at the start of the next
    (``layers.{i+1}.downsample``); the channel order is the same. Buffers
    (``relative_position_index``, ``attn_mask``) and the ImageNet ``head.*``
    and final ``norm.*`` are dropped silently.
    """
    out = {}
    state_dict = _drop(_drop(state_dict, _SWIN_CLASSIFIER), _SWIN_BUFFERS)
    for key, value in state_dict.items():
        if match := re.match(r"layers\.(\d+)\.downsample\.(.+)$", key):
            key = f"layers.{int(match[1]) + 1}.downsample.{match[2]}"
        out[key] = value
    return out


def checkpoint_format(state_dict: Mapping[str, torch.Tensor], arch: str) -> str:
    """The checkpoint's naming, told apart by its keys: "timm", "mmseg" or,
    for Swin only, "official"."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}; got {arch!r}")
    keys = list(state_dict)
    if arch == "resnet":
        return "mmseg" if any(k.startswith("stem.") for k in keys) else "timm"
    if any(k.startswith(("stages.", "patch_embed.projection.")) for k in keys):
        return "mmseg"
    # timm has no patch merging in stage 0; the official code has one there.
    return "official" if any(k.startswith("layers.0.downsample.") for k in keys) else "timm"


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], arch: str
) -> dict[str, torch.Tensor]:
    """Any supported format (see the module docstring) -> this package's keys.

    ImageNet classifier keys (``fc.*`` for ResNet; ``head.*`` and the final
    ``norm.*`` for Swin) and recomputed buffers are dropped silently.
    """
    fmt = checkpoint_format(state_dict, arch)
    if fmt == "mmseg":
        return (mmseg_resnet_to_timm if arch == "resnet" else mmseg_swin_to_timm)(state_dict)
    if fmt == "official":
        return official_swin_to_timm(state_dict)
    if arch == "resnet":
        return _drop(state_dict, _RESNET_CLASSIFIER)
    return _drop(_drop(state_dict, _SWIN_CLASSIFIER), _SWIN_BUFFERS)


def unwrap_state_dict(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a loaded checkpoint object.

    Looks inside ``"state_dict"`` (mmcv) and ``"model"`` (official Swin),
    strips a ``module.`` prefix (DataParallel) and, when some keys start with
    ``backbone.`` (a whole segmentor), keeps only those, without the prefix
    (see :func:`condnet.checkpoint_files.state_dict_of`).
    """
    return _backbone_part(state_dict_of(checkpoint, wrappers=_WRAPPERS))


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)``, unwrapped
    with :func:`unwrap_state_dict`."""
    return _backbone_part(read_state_dict(path, what="pretrained checkpoint", wrappers=_WRAPPERS))


def _backbone_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def _optional_keys(model_keys: set[str], given: set[str], arch: str) -> set[str]:
    """Model keys a checkpoint may lack besides BN batch counters: for Swin
    ImageNet checkpoints, all of the output norms at once (they keep their fresh
    initialisation, as in mmseg)."""
    out_norms = {k for k in model_keys if k.startswith("out_norms.")}
    return out_norms if arch == "swin" and not out_norms & given else set()


def load_backbone_weights(
    backbone: nn.Module, source: str | os.PathLike | Mapping, arch: str
) -> None:
    """Loads a checkpoint file or state dict into ``backbone``, strictly.

    Args:
        backbone: a ResNet-V1c or Swin backbone of :mod:`condnet.models.backbones`.
        source: a path (read with ``weights_only=True``) or an already loaded
            checkpoint / state dict, in any supported format.
        arch: "resnet" or "swin".

    Raises:
        ValueError: listing the missing keys, the unexpected keys and the
            keys whose shapes differ, if there are any.
    """
    if isinstance(source, Mapping):
        state = unwrap_state_dict(source)
    elif isinstance(source, (str, os.PathLike)):
        state = read_checkpoint(source)
    else:
        raise TypeError(f"source must be a path or a state dict; got {type(source).__name__}")
    state = convert_state_dict(state, arch)
    optional = _optional_keys(set(backbone.state_dict()), set(state), arch)
    target = f"the {type(backbone).__name__} backbone"
    load_tensors(backbone, state, optional=optional, target=target)
