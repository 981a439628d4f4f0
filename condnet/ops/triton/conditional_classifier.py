"""The whole conditional classifier on the Triton kernels, forward and
backward each as one op (the Triton twin of csrc/composite/conditional_classifier.cpp):

    forward:  g, f = class_pool(x, Wg, bg); theta = project(f, A, a);
              w, beta = views of theta; y = dynamic_classify(x, w, beta)
    backward: dw, dbeta = dynamic_classify's weight gradients (one pass over x, dy)
              df, dA, da = project_backward(dtheta)            (one pass over A)
              dx, dWg, dbg = class_pool_backward(..., dy, w)   (one pass over x)

class_pool's backward adds the dynamic classifier's w^T dy into its dx, so
dx is written once instead of twice and summed.
"""

from __future__ import annotations

import torch

from ..reference import split_theta
from .class_pool import class_pool_forward
from .class_pool_backward import class_pool_backward
from .dynamic_classify import dynamic_classify_backward, dynamic_classify_forward
from .project import project_backward, project_forward


def _layout(official: bool) -> str:
    return "official" if official else "per_class"


def _join_theta(dw: torch.Tensor, dbeta: torch.Tensor, official: bool) -> torch.Tensor:
    """dtheta (B, K, C+1) from the gradients of the views split_theta makes."""
    B, K, C = dw.shape
    if official:
        return torch.cat([dw.reshape(B, K * C), dbeta], dim=1).reshape(B, K, C + 1)
    return torch.cat([dw, dbeta[:, :, None]], dim=2)


def conditional_classifier_forward(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    official: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, guide_logits, class_feats, theta)``."""
    guide_logits, class_feats = class_pool_forward(x, guide_weight, guide_bias)
    theta = project_forward(class_feats, proj_weight, proj_bias)
    weight, bias = split_theta(theta, _layout(official))
    return dynamic_classify_forward(x, weight, bias), guide_logits, class_feats, theta


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
    official: bool,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, ...]:
    """``(dx, dWg, dbg, dA, da)``, None where ``output_mask`` says not needed."""
    need_dx, need_dwg, need_dbg, need_da, need_dbias = output_mask
    need_pool = need_dx or need_dwg or need_dbg
    weight, _ = split_theta(theta, _layout(official))
    dtheta = None
    if grad_logits is not None and (need_pool or need_da or need_dbias):
        _, dw, dbeta = dynamic_classify_backward(grad_logits, x, weight, [False, True, True])
        dtheta = _join_theta(dw, dbeta, official)
    if grad_theta is not None:
        dtheta = grad_theta if dtheta is None else dtheta + grad_theta
    df = da = dbias = None
    if dtheta is not None:
        df, da, dbias = project_backward(
            dtheta, class_feats, proj_weight, [need_pool, need_da, need_dbias]
        )
    if grad_class_feats is not None:
        df = grad_class_feats if df is None else df + grad_class_feats
    # Nothing reached theta: the projection's gradients are zero.
    if need_da and da is None:
        da = torch.zeros_like(proj_weight)
    if need_dbias and dbias is None:
        dbias = proj_weight.new_zeros(proj_weight.shape[:2])
    dx = dwg = dbg = None
    if need_pool:
        dx, dwg, dbg = class_pool_backward(
            grad_guide_logits,
            df,
            x,
            guide_weight,
            guide_logits,
            [need_dx, need_dwg, need_dbg],
            grad_logits,
            weight if grad_logits is not None else None,
        )
    return dx, dwg, dbg, da, dbias
