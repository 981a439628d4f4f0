"""CondNet's training losses: cross-entropy on the logits, a Dice loss on the
guide logits, cross-entropy on an auxiliary head, and pixel accuracies.

Labels are int64 class indices (B, H, W), or (B, 1, H, W), at image size, with
``ignore_index`` (255) marking pixels that count nowhere. Logits may be at any
resolution; each function resizes as the released model does. Everything is
computed in float32 (float64 stays float64), also under autocast or with
bfloat16 logits: a softmax or a sum over 512x512 pixels in bfloat16 is too
coarse for a loss. The Dice guidance loss belongs to the classifier's layer
(:mod:`condnet.nn.guidance`) and is re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from condnet.nn.guidance import (
    DICE_IGNORE_MODES,
    dice_guidance_loss,
    dice_guidance_loss_unchecked,
)
from condnet.nn.loss_inputs import (
    as_label,
    check_label_values,
    check_logits,
    checked_logits_and_label,
    resize_label,
    to_loss_dtype,
)

# dice_guidance_loss lives with the classifier in condnet.nn; it is re-exported here,
# beside the other losses, where the released objective's users import it from.
__all__ = ["DICE_IGNORE_MODES", "CondNetLoss", "accuracy", "cross_entropy", "dice_guidance_loss"]


def _resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _cross_entropy(logits, label, ignore_index):
    logits = _resize_logits(to_loss_dtype(logits), label.shape[-2:])
    total = F.cross_entropy(logits, label, ignore_index=ignore_index, reduction="sum")
    # Dividing the sum (instead of reduction="mean") turns an all-ignored batch
    # into 0 with zero gradients rather than 0/0 = NaN.
    count = (label != ignore_index).sum().clamp(min=1)
    return total / count


def cross_entropy(
    logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255
) -> torch.Tensor:
    """Pixel-wise cross-entropy, averaged over the pixels that are not ignored.

    Args:
        logits: (B, K, h, w); bilinearly resized (align_corners=False) to the
            label's size first.
        label: int64 (B, H, W) or (B, 1, H, W); ``ignore_index`` marks pixels
            that do not count.
        ignore_index: the label value to ignore.

    Returns:
        A scalar (float32, or float64 for float64 logits). A label with no
        counted pixel gives 0, still attached to the graph, with zero gradients.

    Note: mmsegmentation releases of the CondNet era averaged over *all*
    pixels, ignored ones included (``avg_non_ignore=False``); this averages over
    the counted ones, which only rescales the loss by the counted fraction.
    """
    logits, label = checked_logits_and_label(logits, label, ignore_index)
    return _cross_entropy(logits, label, ignore_index)


@torch.no_grad()
def _accuracy(logits, label, ignore_index):
    logits = _resize_logits(to_loss_dtype(logits.detach()), label.shape[-2:])
    valid = label != ignore_index
    correct = (logits.argmax(dim=1) == label) & valid
    return 100.0 * correct.sum().float() / valid.sum().clamp(min=1)


def accuracy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Top-1 pixel accuracy in percent over the pixels that are not ignored.

    ``logits`` (B, K, h, w) are bilinearly resized to the label's size first
    when the sizes differ. Returns a detached float32 scalar; 0 when no pixel
    counts. (mmseg releases of the CondNet era counted ignored pixels as
    wrong; this does not.)
    """
    logits, label = checked_logits_and_label(logits, label, ignore_index)
    return _accuracy(logits, label, ignore_index)


class CondNetLoss(nn.Module):
    """The released model's training objective, as a dict of named terms.

    ``loss_seg``: :func:`cross_entropy` on the classifier's logits, times
    ``seg_weight`` (1.0). ``loss_guidance``: :func:`dice_guidance_loss` on the
    guide logits, times ``guidance_weight`` (0.2). ``loss_aux``: cross-entropy
    on an auxiliary head's logits, times ``aux_weight`` (0.4). Each has an
    ``acc_*`` companion (:func:`accuracy`; the guidance one against the label
    nearest-resized to the guide logits). ``loss`` is the sum of the weighted
    ``loss_*`` terms: call ``backward`` on it and log the rest.

    A term is present when its logits are given and its weight is non-zero;
    a zero weight drops the term and its accuracy entirely.

    Args:
        seg_weight, guidance_weight, aux_weight: the weights, >= 0.
        ignore_index: label value of pixels that do not count.
        dice_ignore_mode: ``"exclude"`` (default) or ``"released"``; see
            :func:`dice_guidance_loss`.
        dice_smooth: the Dice loss's ``smooth``.

    ``forward(label, logits, guide_logits=None, aux_logits=None)`` takes the
    int64 label (B, H, W) or (B, 1, H, W) and logits (B, K, h, w) at any
    resolution; all logits must share B and K.
    """

    def __init__(
        self,
        seg_weight: float = 1.0,
        guidance_weight: float = 0.2,
        aux_weight: float = 0.4,
        ignore_index: int = 255,
        dice_ignore_mode: str = "exclude",
        dice_smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        numbers = dict(seg_weight=seg_weight, guidance_weight=guidance_weight)
        numbers.update(aux_weight=aux_weight, dice_smooth=dice_smooth)
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0; got {value!r}")
        if not (seg_weight or guidance_weight or aux_weight):
            raise ValueError("at least one of seg_weight, guidance_weight, aux_weight must be > 0")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an int; got {ignore_index!r}")
        if dice_ignore_mode not in DICE_IGNORE_MODES:
            modes = DICE_IGNORE_MODES
            raise ValueError(f"dice_ignore_mode must be one of {modes}; got {dice_ignore_mode!r}")
        self.seg_weight = float(seg_weight)
        self.guidance_weight = float(guidance_weight)
        self.aux_weight = float(aux_weight)
        self.ignore_index = ignore_index
        self.dice_ignore_mode = dice_ignore_mode
        self.dice_smooth = float(dice_smooth)

    def forward(
        self,
        label: torch.Tensor,
        logits: torch.Tensor,
        guide_logits: torch.Tensor | None = None,
        aux_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        label = as_label(label)
        B = label.shape[0]
        logits = check_logits(logits, "logits", B)
        K = logits.shape[1]
        for name, other in (("guide_logits", guide_logits), ("aux_logits", aux_logits)):
            if other is not None and check_logits(other, name, B).shape[1] != K:
                raise ValueError(f"{name} has {other.shape[1]} classes; logits have K={K}")
        # Checked once here; the private functions below skip the checks.
        check_label_values(label, K, self.ignore_index)
        ignore = self.ignore_index
        out: dict[str, torch.Tensor] = {}
        if self.seg_weight > 0:
            out["loss_seg"] = self.seg_weight * _cross_entropy(logits, label, ignore)
            out["acc_seg"] = _accuracy(logits, label, ignore)
        if guide_logits is not None and self.guidance_weight > 0:
            dice = dice_guidance_loss_unchecked(
                guide_logits, label, ignore, self.dice_smooth, 2, self.dice_ignore_mode
            )
            out["loss_guidance"] = self.guidance_weight * dice
            small_label = resize_label(label, (guide_logits.shape[-2], guide_logits.shape[-1]))
            out["acc_guidance"] = _accuracy(guide_logits, small_label, ignore)
        if aux_logits is not None and self.aux_weight > 0:
            out["loss_aux"] = self.aux_weight * _cross_entropy(aux_logits, label, ignore)
            out["acc_aux"] = _accuracy(aux_logits, label, ignore)
        terms = [value for key, value in out.items() if key.startswith("loss_")]
        if not terms:
            raise ValueError(
                "no loss term to compute: seg_weight is 0 and no guide_logits or aux_logits "
                "with a non-zero weight were given"
            )
        out["loss"] = sum(terms[1:], terms[0])
        return out

    def extra_repr(self) -> str:
        return (
            f"seg_weight={self.seg_weight}, guidance_weight={self.guidance_weight}, "
            f"aux_weight={self.aux_weight}, ignore_index={self.ignore_index}, "
            f"dice_ignore_mode={self.dice_ignore_mode!r}"
        )
