"""Importing the released CondNet and CAC checkpoints (mmseg 0.x
``EncoderDecoder`` state dicts) into :class:`~condnet.models.Segmentor`.
``tools/convert_released.py`` converts a file once::

    python tools/convert_released.py IN.pth OUT.pth [--model NAME]

Key mapping (mmseg -> condnet):

- ``backbone.*``: renamed to timm's names by
  :func:`condnet.models.backbone_weights.convert_state_dict` (ResNet-V1c or
  Swin, told apart by the keys);
- ``decode_head.guidance_project.conv.*`` -> ``decode_head.classifier.guidance_project.*``,
  ``decode_head.filter_project.conv.*`` -> ``decode_head.classifier.filter_project.*``
  (the conditional classifier, ``layout="grouped_conv"``);
- ``decode_head.conv_seg.*`` and ``auxiliary_head.conv_seg.*`` ->
  ``*.classifier.conv_seg.*`` (plain classifiers, and CAC's static classifier);
- ``decode_head.proj.*`` and ``decode_head.apd_proj.*`` ->
  ``decode_head.classifier.proj.*`` / ``.apd_proj.*`` (CAC's generators: the
  released CAC heads hold the classifier's parameters themselves);
- every other ``decode_head.*`` / ``auxiliary_head.*`` key is unchanged (the
  heads use mmcv's child names).

Without a name, the model is inferred from the checkpoint: backbone (ResNet
depth, Swin-B or Swin-T), head (DeepLabV3+ or UPerNet), classifier
(conditional, CAC or plain) and number of classes (150 ADE20K, 59 Pascal
Context, 19 Cityscapes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import nn

from condnet.checkpoint_files import load_tensors, read_state_dict
from condnet.nn import ConditionalClassifier

from .backbone_weights import convert_state_dict
from .segmentor import Segmentor
from .zoo import MODEL_CONFIGS, build_model

_HEAD_RENAMES = (
    ("decode_head.guidance_project.conv.", "decode_head.classifier.guidance_project."),
    ("decode_head.filter_project.conv.", "decode_head.classifier.filter_project."),
    ("decode_head.conv_seg.", "decode_head.classifier.conv_seg."),
    ("auxiliary_head.conv_seg.", "auxiliary_head.classifier.conv_seg."),
    ("decode_head.proj.", "decode_head.classifier.proj."),
    ("decode_head.apd_proj.", "decode_head.classifier.apd_proj."),
)
# Swin's embedding width -> backbone name.
_SWIN_WIDTHS = {128: "swin_base_w12", 96: "swin_tiny_w7"}


def read_released(source: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    """The tensors of a released checkpoint, keys as stored (mmseg names).

    ``source`` is a path, read with ``torch.load(weights_only=True)`` (a file
    that pickles anything but tensors and plain containers is refused), or an
    already loaded checkpoint. Unwraps ``"state_dict"`` (mmcv's wrapper, next
    to ``"meta"`` and maybe ``"optimizer"``) and a DataParallel ``module.``
    prefix (see :func:`condnet.checkpoint_files.read_state_dict`).
    """
    return read_state_dict(source)


def _backbone_arch(state: Mapping[str, torch.Tensor]) -> str:
    keys = [k for k in state if k.startswith("backbone.")]
    if any(k.startswith(("backbone.stages.", "backbone.patch_embed.")) for k in keys):
        return "swin"
    if any(k.startswith(("backbone.stem.", "backbone.layer1.", "backbone.conv1.")) for k in keys):
        return "resnet"
    raise ValueError(
        "cannot tell the backbone: expected ResNet keys (backbone.stem.*, backbone.layer1.*) "
        f"or Swin keys (backbone.stages.*, backbone.patch_embed.*); got {keys[:5] or 'none'}"
    )


def convert_released(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg ``EncoderDecoder`` keys -> :class:`Segmentor` keys (see the module
    docstring). Keys outside the three parts pass through unchanged, so that a
    strict load reports them."""
    state = dict(state)
    backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    out = {}
    if backbone:
        converted = convert_state_dict(backbone, _backbone_arch(state))
        out.update({f"backbone.{k}": v for k, v in converted.items()})
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        for old, new in _HEAD_RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def infer_model_name(state: Mapping[str, torch.Tensor]) -> str:
    """The :func:`~condnet.models.list_models` name a released checkpoint
    (mmseg keys, or already converted ones) belongs to."""
    state = convert_released(state)  # a no-op on keys that are already converted
    backbone: str | None
    if any(k.startswith(("backbone.layers.", "backbone.patch_embed.")) for k in state):
        embed = state.get("backbone.patch_embed.proj.weight")
        backbone = None if embed is None else _SWIN_WIDTHS.get(embed.shape[0])
    else:
        blocks = {int(m[1]) for k in state if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
        depth = {6: 50, 23: 101}.get(len(blocks))
        backbone = None if depth is None else f"resnet{depth}_v1c"
    if "decode_head.c1_bottleneck.conv.weight" in state:
        head = "sep_aspp"
    elif "decode_head.lateral_convs.0.conv.weight" in state:
        head = "uper"
    else:
        head = "aspp"
    if "decode_head.classifier.guidance_project.weight" in state:
        classifier, k_from = "conditional", "decode_head.classifier.guidance_project.weight"
    elif "decode_head.classifier.proj.0.weight" in state:
        classifier, k_from = "cac", "decode_head.classifier.conv_seg.weight"
    else:
        classifier, k_from = "plain", "decode_head.classifier.conv_seg.weight"
    num_classes = state[k_from].shape[0] if k_from in state else None
    found = [
        name
        for name, c in MODEL_CONFIGS.items()
        if (c.backbone, c.head, c.classifier, c.num_classes)
        == (backbone, head, classifier, num_classes)
    ]
    # The plain twins of a CondNet and a CAC model of the same network are the same
    # configuration under two names: either builds the network, the first is taken.
    if found and all(MODEL_CONFIGS[name] == MODEL_CONFIGS[found[0]] for name in found):
        found = found[:1]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the model from the checkpoint (backbone={backbone}, head={head}, "
            f"classifier={classifier}, num_classes={num_classes}); pass name= (one of "
            f"{', '.join(MODEL_CONFIGS)}) or model="
        )
    return found[0]


def _check_grouped_conv_layout(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raises ValueError when a conditional classifier of ``model`` has the per-class
    layout while ``state`` (converted keys) holds the released grouped-conv one."""
    for name, module in model.named_modules():
        if isinstance(module, ConditionalClassifier) and module.layout != "grouped_conv":
            if any(k.startswith(f"{name}.filter_project.") for k in state):
                raise ValueError(
                    f"{name} has layout={module.layout!r}; released checkpoints hold the "
                    "grouped_conv layout: build the model with layout='grouped_conv'"
                )


def load_released(
    source: str | os.PathLike | Mapping,
    name: str | None = None,
    model: Segmentor | None = None,
    strict: bool = True,
) -> Segmentor:
    """Loads a released CondNet or CAC checkpoint.

    Args:
        source: the checkpoint path (read with ``weights_only=True``) or its
            loaded dict / state dict.
        name: the model to build (:func:`~condnet.models.list_models`);
            None infers it from the checkpoint's keys and shapes
            (:func:`infer_model_name`).
        model: load into this model instead of building one (``name`` must
            then be None); its conditional classifiers need ``layout="grouped_conv"``.
        strict: when False, missing and unexpected keys are ignored (shape
            mismatches still raise).

    Returns:
        The model with the weights, in training mode; call ``.eval()`` to predict.

    Raises:
        ValueError: listing missing, unexpected and mismatched keys.
    """
    if name is not None and model is not None:
        raise ValueError("give name or model, not both")
    state = convert_released(read_released(source))
    if model is None:
        model = build_model(name if name is not None else infer_model_name(state))
    elif not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module; got {type(model).__name__}")
    _check_grouped_conv_layout(model, state)
    return load_tensors(model, state, strict=strict)
