"""dynamic_classify in Triton: the per-image 1x1 classifier and its backward.

    y[b]     = w[b] x[b] + beta[b]          (K x C) @ (C x N)
    dx[b]    = w[b]^T dy[b]                 (C x K) @ (K x N)
    dw[b]    = dy[b] x[b]^T                 (K x N) @ (N x C)
    dbeta[b] = sum_n dy[b]

The kernels are the per-image classifier products shared with
cosine_classify (:mod:`.per_image_classify`), without the norm.
"""

from __future__ import annotations

import torch

from .launch import wrap_triton
from .per_image_classify import classify_backward, classify_forward


def dynamic_classify_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return classify_forward(x, weight, bias, None, 0.0, wrap_triton)


def dynamic_classify_backward(
    grad_logits: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, output_mask: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dw, dbeta)``, None where ``output_mask`` says it is not needed."""
    return classify_backward(grad_logits, x, weight, None, output_mask, wrap_triton)
