"""cosine_classify in Triton: CAC's cosine logits and their backward.

With v (B, K, C) the scaled, normalised per-image classifiers, |x_n| the
per-pixel norm of the features and r_n = max(|x_n|, eps):

    y[b, k, n] = <v[b, k], x[b, :, n]> / r_n
    dv[b, k]   = sum_n dy[b, k, n] / r_n x[b, :, n]
    dx[b, :, n] = sum_k v[b, k] dy[b, k, n] / r_n
                 - [|x_n| >= eps] x[b, :, n] (sum_k dy[b, k, n] y[b, k, n]) / (r_n |x_n|)

(the indicator is clamp_min's gradient mask; with eps = 0 a zero pixel
divides 0 by 0, as the released CAC code does).

The kernels are the per-image classifier products shared with
dynamic_classify (:mod:`.per_image_classify`), with the per-pixel norm.
"""

from __future__ import annotations

import torch

from .launch import wrap_triton
from .per_image_classify import classify_backward, classify_forward


def norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The per-pixel norms' dtype: float32 for 16-bit features, else theirs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def cosine_classify_forward(
    x: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the forward kernel; returns ``(logits, x_norm)``: (B, K, H, W)
    in x's dtype and the unclamped norms (B, H, W)."""
    B, _, H, W = x.shape
    x_norm = x.new_empty(B, H, W, dtype=norm_dtype(x.dtype))
    return classify_forward(x, weight, None, x_norm, eps, wrap_triton), x_norm


def cosine_classify_backward(
    grad_logits: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    logits: torch.Tensor,
    x_norm: torch.Tensor,
    eps: float,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dweight)``, None where ``output_mask`` says it is not needed."""
    need_dx, need_dw = output_mask
    cosine = (logits, x_norm, eps)
    dx, dw, _ = classify_backward(
        grad_logits, x, weight, cosine, [need_dx, need_dw, False], wrap_triton
    )
    return dx, dw
