"""Model weights for ``--load-from`` and the tools: a checkpoint of this package, a
bare state dict, or a released mmseg CondNet checkpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping

from torch import nn

from condnet.checkpoint_files import load_tensors, read_state_dict
from condnet.models import convert_released

# Key prefixes only an mmseg EncoderDecoder state dict has (released CondNet models).
_MMSEG_PREFIXES = (
    "backbone.stem.",
    "backbone.stages.",
    "backbone.patch_embed.projection.",
    "decode_head.conv_seg.",
    "decode_head.guidance_project.conv.",
    "decode_head.filter_project.conv.",
    "auxiliary_head.conv_seg.",
)


def _is_mmseg(state: Mapping) -> bool:
    return any(str(k).startswith(_MMSEG_PREFIXES) for k in state)


def load_weights(model: nn.Module, path_or_state, strict: bool = True) -> None:
    """Loads model weights only (``--load-from``).

    ``path_or_state`` is a path (read with ``weights_only=True``) or a loaded
    object: a checkpoint of this package (``{"state_dict": ...}``), a bare
    state dict, or a released mmseg CondNet checkpoint (``{"state_dict": ...,
    "meta": ...}`` with mmseg key names, converted by
    :func:`condnet.models.convert_released`). A DDP ``module.`` prefix is
    stripped. BatchNorm ``num_batches_tracked`` may be missing.

    Raises:
        ValueError: listing missing and unexpected keys (``strict`` only) and
            shape mismatches (always).
    """
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if isinstance(path_or_state, (str, os.PathLike)):
        source = repr(os.fspath(path_or_state))
    elif isinstance(path_or_state, Mapping):
        source = "state dict"
    else:
        raise TypeError(
            f"path_or_state must be a path or a state dict; got {type(path_or_state).__name__}"
        )
    state = read_state_dict(path_or_state)
    if _is_mmseg(state):
        state = convert_released(state)
    try:
        load_tensors(model, state, strict=strict)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc
