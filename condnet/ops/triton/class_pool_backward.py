"""class_pool backward in Triton: dx, dWg and dbg in one pass over x.

With upstream gradients dg (B, K, N) and df (B, K, C), either possibly
absent, and the saved guide logits g from which p = softmax_k(g) is
recomputed:

    dp  = df x / N                      (K x N per image)
    dgt = dg + p * (dp - sum_k p dp)    softmax backward
    dx  = df^T p / N + Wg^T dgt  (+ w^T dy)
    dWg = sum_{b,n} dgt x^T,  dbg = sum_{b,n} dgt

The optional ``w^T dy`` is the dynamic classifier's input gradient, which the
whole classifier's backward passes in (grad_logits, classifier_weight) so
that dx is written once.

The kernel is the pooling backward shared with context_pool
(:mod:`.pool_backward`), given dM = df with the divisor N, no mass term h,
and a linear classifier term.
"""

from __future__ import annotations

import torch

from .class_pool import reduce_with_atomics
from .launch import wrap_triton
from .pool_backward import ClassifierTerm, pool_backward


def class_pool_backward(
    grad_guide_logits: torch.Tensor | None,
    grad_class_feats: torch.Tensor | None,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_logits: torch.Tensor,
    output_mask: list[bool],
    grad_logits: torch.Tensor | None = None,
    classifier_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launches the backward kernel; returns ``(dx, dWg, dbg)``, None where
    ``output_mask`` says the gradient is not needed. With ``grad_logits``
    (B, K', H, W) and ``classifier_weight`` (B, K', C), dx also receives
    ``classifier_weight^T grad_logits``."""
    if (grad_logits is None) != (classifier_weight is None):
        raise ValueError("grad_logits and classifier_weight must be given together")
    term = None
    if grad_logits is not None and classifier_weight is not None:
        term = ClassifierTerm(grad_logits, classifier_weight)
    N = x.shape[2] * x.shape[3]
    return pool_backward(
        grad_guide_logits,
        grad_class_feats,
        None,
        N,
        x,
        guide_weight,
        guide_logits,
        output_mask,
        term,
        reduce_with_atomics,
        wrap_triton,
    )
