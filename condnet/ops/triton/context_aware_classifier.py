"""CAC's whole classifier on the Triton kernels, forward and backward each as
one op: :mod:`condnet.ops.context_composite` over this package's four
primitives (context_pool's backward adds the cosine classifier's part of dx,
so dx is written once; the generator MLP runs in ATen)."""

from __future__ import annotations

import torch

from .. import context_composite
from .context_pool import context_pool_forward
from .context_pool_backward import context_pool_backward
from .cosine_classify import cosine_classify_backward, cosine_classify_forward

PARTS = context_composite.ContextParts(
    context_pool=context_pool_forward,
    cosine_classify=cosine_classify_forward,
    context_pool_backward=context_pool_backward,
    cosine_classify_backward=cosine_classify_backward,
)


def context_aware_classifier_forward(
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
    return context_composite.forward(
        PARTS,
        x,
        guide_weight,
        guide_bias,
        class_weight,
        proj_in_weight,
        proj_out_weight,
        proj_out_bias,
        scale,
        eps,
    )


def context_aware_classifier_backward(
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
    proj_in_weight, proj_out_weight, proj_out_bias), None where
    ``output_mask`` says not needed."""
    return context_composite.backward(
        PARTS,
        grad_logits,
        grad_guide_logits,
        x,
        guide_weight,
        guide_logits,
        centres,
        mass,
        class_weight,
        proj_in_weight,
        proj_out_weight,
        proj_out_bias,
        logits,
        classifier,
        x_norm,
        scale,
        eps,
        output_mask,
    )
