"""The whole conditional classifier on the Triton kernels, forward and
backward each as one op: :mod:`condnet.ops.composite` over this package's
kernels (class_pool's backward adds the dynamic classifier's w^T dy into its
dx, so dx is written once)."""

from __future__ import annotations

import torch

from .. import composite
from .class_pool import class_pool_forward
from .class_pool_backward import class_pool_backward
from .dynamic_classify import dynamic_classify_backward, dynamic_classify_forward
from .project import project_backward, project_forward

PARTS = composite.Parts(
    class_pool=class_pool_forward,
    project=project_forward,
    dynamic_classify=dynamic_classify_forward,
    class_pool_backward=class_pool_backward,
    project_backward=project_backward,
    dynamic_classify_backward=dynamic_classify_backward,
)


def conditional_classifier_forward(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    layout: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, guide_logits, class_feats, theta)``."""
    return composite.forward(PARTS, x, guide_weight, guide_bias, proj_weight, proj_bias, layout)


def conditional_classifier_backward(
    grad_logits: torch.Tensor | None,
    grad_guide_logits: torch.Tensor | None,
    grad_class_feats: torch.Tensor | None,
    grad_theta: torch.Tensor | None,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_logits: torch.Tensor,
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    theta: torch.Tensor,
    layout: str,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, ...]:
    """``(dx, dWg, dbg, dA, da)``, None where ``output_mask`` says not needed."""
    return composite.backward(
        PARTS,
        grad_logits,
        grad_guide_logits,
        grad_class_feats,
        grad_theta,
        x,
        guide_weight,
        guide_logits,
        class_feats,
        proj_weight,
        theta,
        layout,
        output_mask,
    )
