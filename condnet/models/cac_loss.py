"""CAC's training objective for a whole segmentor: the context-aware
classifier's four losses (:func:`condnet.nn.cac_losses`, each weight 1 as
released) plus the auxiliary FCN head's cross-entropy (weight 0.4), as one
dict of named terms like :class:`~condnet.models.CondNetLoss`'s."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from condnet.nn import ContextAwareOutput, cac_losses
from condnet.nn.loss_inputs import (
    as_label,
    check_label_values,
    check_logits,
    resize_label,
    to_loss_dtype,
)

from .losses import _accuracy, _cross_entropy, _resize_logits

__all__ = ["CAC_TERMS", "CACLoss"]

#: cac_losses' keys -> this loss's names (``loss_seg`` is the prediction's, as
#: in every other model of the zoo).
CAC_TERMS = {"main": "seg", "static": "static", "oracle": "oracle", "distill": "distill"}


def _check_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    return float(value)


def _cross_entropy_over_all_pixels(
    logits: torch.Tensor, label: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """mmseg 0.x's ``CrossEntropyLoss`` (``avg_non_ignore=False``): the mean over
    every pixel of the label, an ignored one counting 0."""
    logits = _resize_logits(to_loss_dtype(logits), (label.shape[-2], label.shape[-1]))
    per_pixel = F.cross_entropy(logits, label, ignore_index=ignore_index, reduction="none")
    return per_pixel.mean()


class CACLoss(nn.Module):
    """The released CAC objective, as a dict of named terms.

    ``loss_seg``: cross-entropy on the context-aware logits (cac_losses'
    ``main``); ``loss_static``: on the static ``conv_seg`` logits;
    ``loss_oracle``: on the oracle's logits; ``loss_distill``: the oracle's
    entropy-weighted distillation into the logits; each times its weight (1.0
    as released). ``loss_aux``: cross-entropy on the auxiliary head's logits
    (bilinearly upsampled to the label), times ``aux_weight`` (0.4): averaged
    over the counted pixels as :class:`~condnet.models.CondNetLoss` does, or,
    for a classifier in ``released`` mode, over all pixels as the mmseg
    bundled with CAC does (ignored ones count 0). ``acc_seg``, ``acc_static`` (against the label
    nearest-resized to the static logits) and ``acc_aux`` are pixel
    accuracies in percent; ``loss`` is the sum of the weighted ``loss_*``
    terms. How each CAC term resizes and averages (the released way or the
    default) follows the classifier's ``released`` flag, which travels on its
    :class:`~condnet.nn.ContextAwareOutput`.

    A zero weight drops its term. Without the classifier's output (a model
    in eval mode, or a plain head) only ``loss_seg`` on ``logits`` (the
    cross-entropy of :func:`~condnet.models.losses.cross_entropy`) and
    ``loss_aux`` are computed.

    ``forward(label, logits, cac_output=None, aux_logits=None)``: the int64
    label (B, H, W) or (B, 1, H, W) at image size, ``ignore_index`` where no
    class counts; logits (B, K, h, w) at any resolution; ``cac_output`` the
    decode head's :class:`~condnet.nn.ContextAwareOutput` (its ``logits`` are
    ``logits``).
    """

    def __init__(
        self,
        seg_weight: float = 1.0,
        static_weight: float = 1.0,
        oracle_weight: float = 1.0,
        distill_weight: float = 1.0,
        aux_weight: float = 0.4,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.weights = {
            "seg": _check_weight("seg_weight", seg_weight),
            "static": _check_weight("static_weight", static_weight),
            "oracle": _check_weight("oracle_weight", oracle_weight),
            "distill": _check_weight("distill_weight", distill_weight),
        }
        self.aux_weight = _check_weight("aux_weight", aux_weight)
        if not (any(self.weights.values()) or self.aux_weight):
            raise ValueError("at least one of the loss weights must be > 0")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an int; got {ignore_index!r}")
        self.ignore_index = ignore_index

    def forward(
        self,
        label: torch.Tensor,
        logits: torch.Tensor,
        cac_output: ContextAwareOutput | None = None,
        aux_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        label = as_label(label)
        B = label.shape[0]
        logits = check_logits(logits, "logits", B)
        K = logits.shape[1]
        if cac_output is not None and not isinstance(cac_output, ContextAwareOutput):
            raise ValueError(
                "cac_output must be the ContextAwareOutput of a context-aware classifier "
                f"in training; got {type(cac_output).__name__}"
            )
        if aux_logits is not None and check_logits(aux_logits, "aux_logits", B).shape[1] != K:
            raise ValueError(f"aux_logits has {aux_logits.shape[1]} classes; logits have K={K}")
        check_label_values(label, K, self.ignore_index)
        ignore = self.ignore_index
        out: dict[str, torch.Tensor] = {}
        if cac_output is None:
            if self.weights["seg"] > 0:
                out["loss_seg"] = self.weights["seg"] * _cross_entropy(logits, label, ignore)
        else:
            terms = cac_losses(cac_output, label, ignore_index=ignore)
            for key, name in CAC_TERMS.items():
                if self.weights[name] > 0:
                    out[f"loss_{name}"] = self.weights[name] * terms[key]
        if "loss_seg" in out:
            out["acc_seg"] = _accuracy(logits, label, ignore)
        if "loss_static" in out and cac_output is not None:
            static = cac_output.static_logits
            out["acc_static"] = _accuracy(static, resize_label(label, static.shape[-2:]), ignore)
        if aux_logits is not None and self.aux_weight > 0:
            if cac_output is not None and cac_output.released:
                aux = _cross_entropy_over_all_pixels(aux_logits, label, ignore)
            else:
                aux = _cross_entropy(aux_logits, label, ignore)
            out["loss_aux"] = self.aux_weight * aux
            out["acc_aux"] = _accuracy(aux_logits, label, ignore)
        losses = [value for key, value in out.items() if key.startswith("loss_")]
        if not losses:
            raise ValueError(
                "no loss term to compute: the weights of every given output are 0 "
                "(the CAC terms need the classifier's training output)"
            )
        out["loss"] = sum(losses[1:], losses[0])
        return out

    def extra_repr(self) -> str:
        weights = ", ".join(f"{name}_weight={w}" for name, w in self.weights.items())
        return f"{weights}, aux_weight={self.aux_weight}, ignore_index={self.ignore_index}"
