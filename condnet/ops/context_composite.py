"""CAC's whole classifier assembled from a backend's four primitive ops, in
Python: every backend's fused ``context_aware_classifier`` op and its backward
op run this over their own primitives (the C++ ops and the Triton ops alike;
the reference backend runs :func:`condnet.ops.reference.context_aware_classifier`
under autograd instead).

    forward:  g, centres, mass = context_pool(x, Wg, bg)          (one pass over x)
              v = cac.generate(centres, W, Wi, Wo, bo)            (small: B*K rows)
              y, |x| = cosine_classify(x, v)                       (one pass over x)
    backward: dv = cosine_classify_backward(dy)'s weight gradient  (one pass over x, dy)
              d centres, dW, dWi, dWo, dbo = cac.generate_backward(dv)
              dx, dWg, dbg = context_pool_backward(dg, d centres, ..., dy, v, y, |x|)
                                                                   (one pass over x)

context_pool's backward adds the cosine classifier's part of dx, so dx is
written once instead of twice and summed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import cac


@dataclass(frozen=True)
class ContextParts:
    """A backend's primitive CAC ops, as :mod:`condnet.ops.schemas` types them."""

    context_pool: Callable
    cosine_classify: Callable
    context_pool_backward: Callable
    cosine_classify_backward: Callable


def forward(
    parts: ContextParts,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    class_weight: torch.Tensor,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None,
    scale: float,
    eps: float,
) -> tuple[torch.Tensor, ...]:
    """``(logits, guide_logits, centres, mass, classifier, x_norm)``."""
    guide_logits, centres, mass = parts.context_pool(x, guide_weight, guide_bias)
    classifier = cac.generate(
        centres, class_weight, proj_in_weight, proj_out_weight, proj_out_bias, scale, eps
    )
    logits, x_norm = parts.cosine_classify(x, classifier, eps)
    return logits, guide_logits, centres, mass, classifier, x_norm


def backward(
    parts: ContextParts,
    grad_logits: torch.Tensor | None,
    grad_guide_logits: torch.Tensor | None,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_logits: torch.Tensor,
    centres: torch.Tensor,
    mass: torch.Tensor,
    class_weight: torch.Tensor,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None,
    logits: torch.Tensor,
    classifier: torch.Tensor,
    x_norm: torch.Tensor,
    scale: float,
    eps: float,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, ...]:
    """The gradients of (x, guide_weight, guide_bias, class_weight,
    proj_in_weight, proj_out_weight, proj_out_bias); None where
    ``output_mask`` says not needed."""
    need_dx, need_dwg, need_dbg = output_mask[:3]
    d_centres = None
    generator_grads: tuple[torch.Tensor | None, ...] = (None,) * 4
    if grad_logits is not None:
        _, d_classifier = parts.cosine_classify_backward(
            grad_logits, x, classifier, logits, x_norm, eps, [False, True]
        )
        d_centres, *rest = cac.generate_backward(
            d_classifier,
            centres,
            class_weight,
            proj_in_weight,
            proj_out_weight,
            proj_out_bias,
            scale,
            eps,
        )
        generator_grads = tuple(rest)
    dx = dwg = dbg = None
    if (need_dx or need_dwg or need_dbg) and (
        grad_logits is not None or grad_guide_logits is not None
    ):
        with_logits = grad_logits is not None
        dx, dwg, dbg = parts.context_pool_backward(
            grad_guide_logits,
            d_centres,
            None,
            x,
            guide_weight,
            guide_logits,
            centres,
            mass,
            [need_dx, need_dwg, need_dbg],
            grad_logits,
            classifier if with_logits else None,
            logits if with_logits else None,
            x_norm if with_logits else None,
            eps,
        )
    # Nothing reached a needed input: its gradient is zero.
    inputs: tuple[torch.Tensor | None, ...] = (
        x,
        guide_weight,
        guide_logits.new_empty(guide_logits.shape[1]),
        class_weight,
    )
    inputs += (proj_in_weight, proj_out_weight, proj_out_bias)
    grads = (dx, dwg, dbg, *generator_grads)
    out: list[torch.Tensor | None] = []
    for need, grad, like in zip(output_mask, grads, inputs, strict=True):
        if need and grad is None and like is not None:
            grad = torch.zeros_like(like)
        out.append(grad if need else None)
    return tuple(out)
