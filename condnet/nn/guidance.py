"""The guidance loss of a network converted by :func:`condnet.nn.make_conditional`.

Each :class:`DropInConditionalClassifier` keeps the guide logits of its last
training forward. ``guidance_loss`` takes them (the modules forget them), so
once the step's ``backward`` has run, nothing from that step is left alive:
the only references to its graph were the loss tensors the caller drops.
"""

from __future__ import annotations

import torch
from torch import nn

from .convert import conditional_classifiers

__all__ = ["guidance_loss"]


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
    :func:`condnet.models.losses.dice_guidance_loss` of the guide logits of
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
            :func:`~condnet.models.losses.dice_guidance_loss`.

    Returns:
        A scalar, float32 (float64 for float64 logits), attached to the graph.
    """
    from condnet.models.losses import dice_guidance_loss  # condnet.models imports condnet.nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    classifiers = conditional_classifiers(model)
    if not classifiers:
        raise ValueError(
            "model has no conditional classifier made by condnet.nn.make_conditional; "
            "convert it first (a ConditionalClassifier you call yourself returns its guide "
            "logits with return_guide=True; use condnet.models.losses.dice_guidance_loss)"
        )
    missing = [name for name, module in classifiers if module.guide_logits is None]
    if missing:
        raise ValueError(
            f"no guide logits recorded for {missing}: guidance_loss needs a forward in "
            "training mode with gradients enabled since the last call (each forward's guide "
            "logits are used once)"
        )
    terms = [
        dice_guidance_loss(
            module.guide_logits,
            label,
            ignore_index=ignore_index,
            smooth=smooth,
            exponent=exponent,
            ignore_mode=ignore_mode,
        )
        for _, module in classifiers
    ]
    # Taken only once every term is computed, so a bad label leaves them in place.
    for _, module in classifiers:
        module.take_guide_logits()
    return sum(terms[1:], terms[0])
