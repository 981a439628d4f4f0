"""class_pool forward in Triton: guide logits, their softmax over the K
classes and the class-pooled features (means over the pixels), in one pass
over x, by the pooling kernel shared with context_pool (:mod:`.pool_forward`).
"""

from __future__ import annotations

import torch

from .launch import wrap_triton
from .pool_forward import pool_forward


def reduce_with_atomics(programs: int) -> bool:
    """Whether partial sums from ``programs`` programs are combined with
    atomics: not for one program, nor when determinism is asked for."""
    return programs > 1 and not torch.are_deterministic_algorithms_enabled()


def class_pool_forward(
    x: torch.Tensor, guide_weight: torch.Tensor, guide_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the forward kernel; returns ``(guide_logits, class_feats)``."""
    N = x.shape[2] * x.shape[3]
    g, sums, _ = pool_forward(
        x, guide_weight, guide_bias, N, False, reduce_with_atomics, wrap_triton
    )
    return g, sums.to(x.dtype)
