"""CAC's four training losses, from a :class:`ContextAwareClassifier`'s training
output: the main cross-entropy, the static and oracle cross-entropies, and the
distillation of the oracle into the prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .context_aware_classifier import ContextAwareOutput
from .loss_inputs import as_label, check_label_values, check_logits, resize_label, to_loss_dtype

__all__ = ["cac_losses", "distill_loss"]

# The released distillation's constants: half the target is the oracle's softmax,
# and the entropy's log is taken of p + 1e-12.
SMOOTHNESS = 0.5
LOG_EPS = 1e-12
# Added to each class's entropy sum and to the class count before dividing.
AVERAGE_EPS = 1e-12


def _upsample(logits: torch.Tensor, size: torch.Size, align_corners: bool) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=align_corners)


def _cross_entropy(
    logits: torch.Tensor, label: torch.Tensor, ignore_index: int, over: str
) -> torch.Tensor:
    """Cross-entropy averaged over ``"all"`` pixels (ignored ones count as 0),
    the ``"valid"`` ones as torch does (NaN when there is none), or the
    ``"valid_or_zero"`` ones (0 when there is none)."""
    if over == "valid":
        return F.cross_entropy(logits, label, ignore_index=ignore_index)
    per_pixel = F.cross_entropy(logits, label, ignore_index=ignore_index, reduction="none")
    if over == "all":
        return per_pixel.mean()
    return per_pixel.sum() / (label != ignore_index).sum().clamp_min(1)


def distill_loss(
    logits: torch.Tensor, oracle_logits: torch.Tensor, label: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """CAC's distillation at feature resolution (the released ``get_distill_loss``).

    ``label`` (B, H, W) int64 is nearest-resized to the logits' size. With
    ``q = softmax(oracle_logits)`` (no gradient) and the target ``t = 0.5 q +
    0.5 onehot(label)``, each pixel's loss ``-sum_k t log_softmax(logits)`` is
    weighted by the entropy of ``q`` (0 on ignored pixels); the weighted mean
    is taken within each class the label holds, then the classes' terms are
    averaged: ``sum / (count + 1e-12)``.
    """
    target = resize_label(label, logits.shape[-2:])
    valid = target != ignore_index
    soft = torch.softmax(oracle_logits.detach(), dim=1)
    index = torch.where(valid, target, 0).unsqueeze(1)
    onehot = torch.zeros_like(soft).scatter_(1, index, 1.0)
    smoothed = SMOOTHNESS * soft + (1 - SMOOTHNESS) * onehot
    per_pixel = -(F.log_softmax(logits, dim=1) * smoothed).sum(1)  # (B, h, w)
    entropy = -(soft * torch.log(soft + LOG_EPS)).sum(1) * valid  # (B, h, w)
    member = onehot * valid.unsqueeze(1)  # (B, K, h, w): the valid pixels of each class
    weight = member * entropy.unsqueeze(1)
    numerator = (weight * per_pixel.unsqueeze(1)).sum((0, 2, 3))
    denominator = weight.sum((0, 2, 3))
    present = member.sum((0, 2, 3)) > 0  # (K,)
    per_class = torch.where(present, numerator / (denominator + AVERAGE_EPS), 0.0)
    return per_class.sum() / (present.sum().to(per_class.dtype) + AVERAGE_EPS)


def cac_losses(
    out: ContextAwareOutput,
    label: torch.Tensor,
    ignore_index: int = 255,
    *,
    released: bool | None = None,
) -> dict[str, torch.Tensor]:
    """CAC's training losses, each of weight 1 (the caller sums them).

    Args:
        out: what a :class:`ContextAwareClassifier` in training mode returns
            for ``clf(x, label=label)``.
        label: int64 class indices (B, H, W) or (B, 1, H, W) at image
            resolution, ``ignore_index`` where no class counts.
        ignore_index: label value of ignored pixels.
        released: the mode; None (the default) takes the module's
            (``out.released``).

    Returns:
        ``{"main", "static", "oracle", "distill"}``: scalars, float32 (float64
        for float64 logits), attached to the graph:

        - ``main``: cross-entropy of ``out.logits``, bilinearly resized to the
          label with ``align_corners=False``;
        - ``static``, ``oracle``: cross-entropy of ``out.static_logits`` and
          ``out.oracle_logits``, resized the same way (see below);
        - ``distill``: :func:`distill_loss`, at feature resolution.

    ``released=True`` reproduces the released head exactly: the main loss is
    mmseg 0.x's decode-head loss, a mean over ALL pixels, ignored ones
    counting as 0; the static and oracle losses are resized with
    ``align_corners=True`` and averaged over the valid pixels (NaN when a
    batch has none, as ``nn.CrossEntropyLoss`` gives).

    The default fixes three defects and keeps every recipe choice (the terms,
    their weights, the distillation's target, entropy weighting and class
    averaging, which are the same in both modes):

    - the main loss is averaged over the valid pixels (mmseg 1.x's
      ``avg_non_ignore``, the fix most codebases made): averaged over all
      pixels, its scale shrinks with each batch's share of ignored pixels,
      so the main term weighs less than the three others exactly on the
      images with the most unlabelled area;
    - all three cross-entropies resize with ``align_corners=False``: the
      three logits lie on the same feature grid, and released, the main one
      is resized with the head's ``align_corners=False`` but the static and
      oracle ones with ``True``, which shifts them against the label by up to
      half an output stride at the borders;
    - a batch without a valid pixel gives 0 for every term, not NaN (one such
      crop would otherwise poison the parameters through the optimiser).

    The distillation's two 1e-12 are kept in both modes: the one added to a
    class's entropy sum only matters when the oracle is certain on every
    pixel of the class, and then turns 0/0 into 0; the one added to the class
    count changes the mean by 1e-12 relative.
    """
    if isinstance(out, torch.Tensor):
        raise TypeError(
            "out is a tensor, not a ContextAwareOutput: the classifier ran in eval mode or "
            "without a label; call clf.train() and clf(x, label=label) for the oracle logits"
        )
    if not isinstance(out, ContextAwareOutput):
        raise TypeError(f"out must be a ContextAwareOutput; got {type(out).__name__}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int; got {ignore_index!r}")
    if released is not None and not isinstance(released, bool):
        raise TypeError(f"released must be None or a bool; got {released!r}")
    released = out.released if released is None else released
    label = as_label(label)
    batch = label.shape[0]
    logits = to_loss_dtype(check_logits(out.logits, "out.logits", batch))
    static = to_loss_dtype(check_logits(out.static_logits, "out.static_logits", batch))
    oracle = to_loss_dtype(check_logits(out.oracle_logits, "out.oracle_logits", batch))
    if not torch.compiler.is_compiling():
        # The check syncs with the host, which a fullgraph compile cannot hold.
        check_label_values(label, logits.shape[1], ignore_index)
    size = label.shape[-2:]
    side_corners = released  # released: True for the static and oracle terms
    side_over = "valid" if released else "valid_or_zero"
    return {
        "main": _cross_entropy(
            _upsample(logits, size, False),
            label,
            ignore_index,
            "all" if released else "valid_or_zero",
        ),
        "static": _cross_entropy(
            _upsample(static, size, side_corners), label, ignore_index, side_over
        ),
        "oracle": _cross_entropy(
            _upsample(oracle, size, side_corners), label, ignore_index, side_over
        ),
        "distill": distill_loss(logits, oracle, label, ignore_index),
    }
