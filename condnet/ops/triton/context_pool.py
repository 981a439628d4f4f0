"""context_pool forward in Triton: CAC's static logits, class centres and
class masses, in one pass over x.

    s = Wg x + bg,  P = softmax_k(s),  mass = sum_n P,  centres = P x^T / (mass + 1e-12)

The kernel is the pooling forward shared with class_pool
(:mod:`.pool_forward`), given a divisor of 1 and asked for the mass: each
class's probability mass is summed in the same loop that forms ``P x^T``,
from the same registers, and the launcher divides the (B, K, C) sums by it
once every program has added its part. The guide weight may be one per
image, (B, K, C) (the static classifier with a Dropout2d mask folded in).
"""

from __future__ import annotations

import torch

from ..cac import MASS_EPS
from .class_pool import reduce_with_atomics
from .launch import wrap_triton
from .pool_forward import pool_forward


def context_pool_forward(
    x: torch.Tensor, guide_weight: torch.Tensor, guide_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the forward kernel; returns ``(guide_logits, centres, mass)``,
    all in x's dtype (centres divided by the mass in the accumulator's dtype
    and rounded once)."""
    g, sums, mass = pool_forward(
        x, guide_weight, guide_bias, 1, True, reduce_with_atomics, wrap_triton
    )
    assert mass is not None  # asked for
    centres = sums / (mass + MASS_EPS).unsqueeze(-1)
    return g, centres.to(x.dtype), mass.to(x.dtype)
