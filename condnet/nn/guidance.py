"""CondNet's guidance loss: the Dice loss on the guide logits, and the same loss
for a network converted by :func:`condnet.nn.make_conditional`.

:func:`dice_guidance_loss` takes guide logits (a :class:`ConditionalClassifier`
called with ``return_guide=True`` returns them). :func:`guidance_loss` takes a
converted network: each :class:`DropInConditionalClassifier` keeps the guide
logits of its last training forward, and ``guidance_loss`` takes them (the
modules forget them), so once the step's ``backward`` has run, nothing from that
step is left alive: the only references to its graph were the loss tensors the
caller drops.
"""

from __future__ import annotations

import torch
from torch import nn

from .convert import conditional_classifiers
from .loss_inputs import checked_logits_and_label, resize_label, to_loss_dtype

__all__ = [
    "DICE_IGNORE_MODES",
    "dice_guidance_loss",
    "dice_guidance_loss_unchecked",
    "guidance_loss",
]

DICE_IGNORE_MODES = ("exclude", "released")


def _one_hot(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, h, w) indices -> (B, K, h, w) one-hot in ``like``'s dtype, without
    F.one_hot's int64 (B, h, w, K) intermediate."""
    return torch.zeros_like(like).scatter_(1, index.unsqueeze(1), 1.0)


def dice_guidance_loss_unchecked(
    guide_logits: torch.Tensor,
    label: torch.Tensor,
    ignore_index: int,
    smooth: float,
    exponent: float,
    ignore_mode: str,
) -> torch.Tensor:
    """:func:`dice_guidance_loss` of inputs already checked: ``label`` (B, H, W) int64
    with values in [0, K) or ``ignore_index``, ``ignore_mode`` one of
    :data:`DICE_IGNORE_MODES` (for a caller that checks once for several losses)."""
    probs = torch.softmax(to_loss_dtype(guide_logits), dim=1)
    B, K = probs.shape[:2]
    label = resize_label(label, probs.shape[-2:])
    valid = (label != ignore_index).unsqueeze(1).to(probs.dtype)  # (B, 1, h, w)
    if ignore_mode == "released":
        # mmseg's DiceLoss: ignored pixels are clamped into [0, K) and keep that
        # one-hot target (and their probabilities) in the denominator; only
        # the numerator is masked.
        target = _one_hot(label.clamp(0, K - 1), probs)
        overlap = probs * target * valid
    else:
        target = _one_hot(torch.where(label == ignore_index, 0, label), probs) * valid
        probs = probs * valid
        overlap = probs * target
    numerator = 2 * overlap.sum(dim=(2, 3)) + smooth
    denominator = (probs.pow(exponent) + target.pow(exponent)).sum(dim=(2, 3)) + smooth
    per_class = (1 - numerator / denominator).mean(dim=0)  # (K,), averaged over images
    if 0 <= ignore_index < K:
        # mmseg skips the class numbered ignore_index but still divides by K;
        # that class has no counted pixel, so its term would only push its
        # probability down.
        per_class = per_class * (torch.arange(K, device=per_class.device) != ignore_index)
    return per_class.sum() / K


def dice_guidance_loss(
    guide_logits: torch.Tensor,
    label: torch.Tensor,
    ignore_index: int = 255,
    smooth: float = 1e-5,
    exponent: float = 2,
    ignore_mode: str = "exclude",
) -> torch.Tensor:
    """CondNet's guidance loss: a soft Dice loss on the guide logits.

    ``p = softmax_K(guide_logits)`` is compared with the one-hot label,
    nearest-resized to the guide logits' size (as the released model does).
    For image b and class k, with sums over the pixels of that image and
    ``v`` = 1 on counted pixels::

        dice[b, k] = 1 - (2 * sum(p * t * v) + smooth) / (sum(p**e + t**e) + smooth)

    The loss is the mean of ``dice`` over images and classes (mmseg's
    ``DiceLoss``). A class numbered ``ignore_index`` (only when it is < K) adds
    nothing, but the mean still divides by K, as in mmseg.

    Args:
        guide_logits: (B, K, h, w), the classifier's second output.
        label: int64 (B, H, W) or (B, 1, H, W) at any size.
        ignore_index: label value of pixels that do not count.
        smooth: added to numerator and denominator.
        exponent: ``e`` above.
        ignore_mode: how ignored pixels enter. ``"exclude"`` (the default)
            leaves them out of the numerator *and* the denominator, so they
            count nowhere. ``"released"`` reproduces the released model
            exactly: only the numerator is masked; in the denominator an
            ignored pixel keeps its probabilities and the target
            ``one_hot(clamp(label, 0, K-1))`` (class K-1 for 255), which pulls
            every ignored pixel's prediction towards class K-1.

    Returns:
        A scalar in float32 (float64 for float64 logits).
    """
    if ignore_mode not in DICE_IGNORE_MODES:
        raise ValueError(f"ignore_mode must be one of {DICE_IGNORE_MODES}; got {ignore_mode!r}")
    guide_logits, label = checked_logits_and_label(
        guide_logits, label, ignore_index, "guide_logits"
    )
    return dice_guidance_loss_unchecked(
        guide_logits, label, ignore_index, smooth, exponent, ignore_mode
    )


def guidance_loss(
    model: nn.Module,
    label: torch.Tensor,
    *,
    ignore_index: int = 255,
    smooth: float = 1e-5,
    exponent: float = 2,
    ignore_mode: str = "exclude",
) -> torch.Tensor:
    """CondNet's Dice guidance loss for every conditional classifier in ``model``.

    Call it after the training forward and add it to the host library's loss,
    with the released weight 0.2 (``loss = host_loss + 0.2 * guidance_loss(model,
    label)``). For each classifier it computes
    :func:`dice_guidance_loss` of the guide logits of
    its last training forward against ``label``, nearest-resized to their
    size; the result is the sum over classifiers (one term per converted
    conv, e.g. two with ``make_conditional(..., auxiliary=True)``).

    The classifiers hand over their guide logits: a second call before the
    next training forward raises. This is what keeps a step's graph from
    living on in the model. It works the same through
    ``DistributedDataParallel`` (pass the wrapped or the inner model): the
    guide logits belong to the same forward as the output, so the gradients
    reach the same parameters in the same backward.

    Args:
        model: a network converted by :func:`condnet.nn.make_conditional`
            (possibly wrapped by DDP or ``torch.compile``).
        label: int64 class indices (B, H, W) or (B, 1, H, W) at any size.
        ignore_index, smooth, exponent, ignore_mode: as in
            :func:`dice_guidance_loss`.

    Returns:
        A scalar, float32 (float64 for float64 logits), attached to the graph.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    classifiers = conditional_classifiers(model)
    if not classifiers:
        raise ValueError(
            "model has no conditional classifier made by condnet.nn.make_conditional; "
            "convert it first (a ConditionalClassifier you call yourself returns its guide "
            "logits with return_guide=True; use condnet.nn.dice_guidance_loss; a model "
            "converted with variant='cac' takes condnet.nn.cac_auxiliary_loss)"
        )
    guides = [module.guide_logits for _, module in classifiers]
    missing = [name for (name, _), guide in zip(classifiers, guides, strict=True) if guide is None]
    if missing:
        raise ValueError(
            f"no guide logits recorded for {missing}: guidance_loss needs a forward in "
            "training mode with gradients enabled since the last call (each forward's guide "
            "logits are used once)"
        )
    terms = [
        dice_guidance_loss(
            guide,
            label,
            ignore_index=ignore_index,
            smooth=smooth,
            exponent=exponent,
            ignore_mode=ignore_mode,
        )
        for guide in guides
        if guide is not None  # all of them, checked above
    ]
    # Taken only once every term is computed, so a bad label leaves them in place.
    for _, module in classifiers:
        module.take_guide_logits()
    return sum(terms[1:], terms[0])
