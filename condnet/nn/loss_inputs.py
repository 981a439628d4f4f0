"""What every CondNet loss checks and converts first: a label of class indices and
logits (B, K, h, w), each named in its error, computed in float32.

Labels are int64 class indices (B, H, W), or (B, 1, H, W), with ``ignore_index``
(255) marking pixels that count nowhere. Losses compute in float32 (float64 stays
float64), also under autocast or with bfloat16 logits: a softmax or a sum over
512x512 pixels in bfloat16 is too coarse for a loss. Shared by the guidance loss
(:mod:`condnet.nn.guidance`) and the segmentation losses (:mod:`condnet.models.losses`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "as_label",
    "check_label_values",
    "check_logits",
    "checked_logits_and_label",
    "resize_label",
    "to_loss_dtype",
]


def as_label(label: object, name: str = "label") -> torch.Tensor:
    """(B, H, W) or (B, 1, H, W) integer class indices -> (B, H, W) int64."""
    if not isinstance(label, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(label).__name__}")
    if label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices (int64); got dtype {label.dtype}")
    if label.dim() == 4 and label.shape[1] == 1:
        label = label.squeeze(1)
    if label.dim() != 3:
        shape = tuple(label.shape)
        raise ValueError(f"{name} must have shape (B, H, W) or (B, 1, H, W); got {shape}")
    return label.long()


def check_logits(logits: object, name: str, batch: int) -> torch.Tensor:
    """``logits`` if it is a floating (B, K, h, w) tensor with K >= 1 and B = ``batch``."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point; got dtype {logits.dtype}")
    if logits.dim() != 4 or logits.shape[1] == 0:
        shape = tuple(logits.shape)
        raise ValueError(f"{name} must have shape (B, K, h, w) with K >= 1; got {shape}")
    if logits.shape[0] != batch:
        raise ValueError(f"{name} has batch size {logits.shape[0]}; the label has {batch}")
    return logits


def check_label_values(label: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise unless every value of ``label`` is in [0, num_classes) or ``ignore_index``."""
    # One reduction and one host sync; without it an out-of-range label is a
    # device-side assert on CUDA (or a silently wrong one-hot in the Dice loss).
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_index)
    if bool(bad.any()):
        example = int(label[bad][0])
        raise ValueError(
            f"label holds values outside [0, K) = [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}, e.g. {example}"
        )


def checked_logits_and_label(
    logits: object, label: object, ignore_index: int, name: str = "logits"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, label)`` after every check above, the label as (B, H, W) int64."""
    label = as_label(label)
    logits = check_logits(logits, name, label.shape[0])
    check_label_values(label, logits.shape[1], ignore_index)
    return logits, label


def to_loss_dtype(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or as it is when already float32 or float64."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def resize_label(label: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest resize of a (B, H, W) label, through float as the released code
    does (exact for class indices below 2**24)."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    resized = F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")
    return resized[:, 0].long()
