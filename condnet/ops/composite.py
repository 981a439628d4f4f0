"""The whole conditional classifier assembled from a backend's three ops, in
Python: the Triton backend's fused op and the reference backend's use it
(the C++ extension has its twin, csrc/composite/conditional_classifier.cpp,
for libtorch users; the tests hold both to :mod:`condnet.ops.reference`).

    forward:  g, f = class_pool(x, Wg, bg); theta = project(f, A, a);
              w, beta = views of theta (the layout's reading); y = dynamic_classify(x, w, beta)
    backward: dw, dbeta = dynamic_classify's weight gradients   (one pass over x, dy)
              df, dA, da = project_backward(dtheta)              (one pass over A)
              dx, dWg, dbg = class_pool_backward(..., dy, w)     (one pass over x)

class_pool's backward adds the dynamic classifier's w^T dy into its dx, so dx
is written once instead of twice and summed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .layouts import join_theta, split_theta


@dataclass(frozen=True)
class Parts:
    """A backend's ops, as the schemas of :mod:`condnet.ops.schemas` take them.
    The backward ops may be None where autograd differentiates the forward ones."""

    class_pool: Callable
    project: Callable
    dynamic_classify: Callable
    class_pool_backward: Callable | None = None
    project_backward: Callable | None = None
    dynamic_classify_backward: Callable | None = None


def forward(
    parts: Parts,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None,
    layout: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, guide_logits, class_feats, theta)``; the projection is canonical
    (K, C + 1, C) and ``layout`` says how theta is read."""
    guide_logits, class_feats = parts.class_pool(x, guide_weight, guide_bias)
    theta = parts.project(class_feats, proj_weight, proj_bias)
    weight, bias = split_theta(theta, layout)
    return parts.dynamic_classify(x, weight, bias), guide_logits, class_feats, theta


def backward(
    parts: Parts,
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
    pool_backward, project_backward, classify_backward = (
        parts.class_pool_backward,
        parts.project_backward,
        parts.dynamic_classify_backward,
    )
    if pool_backward is None or project_backward is None or classify_backward is None:
        raise TypeError("composite.backward needs the parts' three backward ops")
    need_dx, need_dwg, need_dbg, need_da, need_dbias = output_mask
    need_pool = need_dx or need_dwg or need_dbg
    weight, _ = split_theta(theta, layout)
    dtheta = None
    if grad_logits is not None and (need_pool or need_da or need_dbias):
        _, dw, dbeta = classify_backward(grad_logits, x, weight, [False, True, True])
        dtheta = join_theta(dw, dbeta, layout)
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
        dx, dwg, dbg = pool_backward(
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
