"""context_pool backward in Triton: dx, dWg and dbg in one pass over x,
optionally with the cosine classifier's part of dx, so that CAC's whole
classifier writes dx once.

With upstream gradients ds (static logits), dcen (centres) and dmass, each
possibly absent, and P = softmax_k(s) recomputed from the saved logits:

    dM = dcen / (mass + 1e-12)                       (B, K, C)  by the launcher
    h  = dmass - sum_c dcen * centres / (mass + 1e-12)  (B, K)  by the launcher
    dP = dM x + h                                    (K x N per image)
    dst = ds + P * (dP - sum_k P dP)                 softmax backward
    dx  = Wg^T dst + dM^T P  (+ the cosine term)
    dWg = sum_n dst x^T (per image for a (B, K, C) Wg, else summed over images)
    dbg = sum_{b,n} dst

The cosine term, with dy the cosine logits' gradient, v the classifiers, y
the logits, |x_n| the saved norms and r_n = max(|x_n|, eps)
(:mod:`.cosine_classify`):

    sum_k v[k] dy[k, n] / r_n - [|x_n| >= eps] x_n (sum_k dy[k, n] y[k, n]) / (r_n |x_n|)

The kernel is the pooling backward shared with class_pool
(:mod:`.pool_backward`), given dM with a divisor of 1, the mass term h and
the cosine classifier term.
"""

from __future__ import annotations

import torch

from ..cac import MASS_EPS
from .class_pool import reduce_with_atomics
from .config import accumulator_dtype
from .launch import wrap_triton
from .pool_backward import ClassifierTerm, pool_backward


def _pool_terms(grad_centres, grad_mass, centres, mass, acc_dtype):
    """dM and h (see the module's docstring): small (B, K, C) and (B, K) terms."""
    inv_mass = 1.0 / (mass.to(acc_dtype) + MASS_EPS)
    dm = h = None
    if grad_centres is not None:
        dcen = grad_centres.to(acc_dtype)
        dm = dcen * inv_mass.unsqueeze(-1)
        h = -(dm * centres.to(acc_dtype)).sum(-1)
    if grad_mass is not None:
        h = grad_mass.to(acc_dtype) if h is None else h + grad_mass.to(acc_dtype)
    return dm, h


def context_pool_backward(
    grad_guide_logits: torch.Tensor | None,
    grad_centres: torch.Tensor | None,
    grad_mass: torch.Tensor | None,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_logits: torch.Tensor,
    centres: torch.Tensor,
    mass: torch.Tensor,
    output_mask: list[bool],
    grad_logits: torch.Tensor | None = None,
    classifier: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    x_norm: torch.Tensor | None = None,
    eps: float = 0.0,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launches the backward kernel; returns ``(dx, dWg, dbg)``, None where
    ``output_mask`` says the gradient is not needed. With ``grad_logits``
    (and the cosine classifier's ``classifier``, ``logits``, ``x_norm`` and
    ``eps``), dx also receives the cosine classifier's part."""
    term = None
    if grad_logits is not None:
        if classifier is None or logits is None or x_norm is None:
            raise ValueError("grad_logits needs classifier, logits and x_norm")
        term = ClassifierTerm(grad_logits, classifier, logits, x_norm, eps)
    dm, h = _pool_terms(grad_centres, grad_mass, centres, mass, accumulator_dtype(x.dtype))
    return pool_backward(
        grad_guide_logits,
        dm,
        h,
        1,
        x,
        guide_weight,
        guide_logits,
        output_mask,
        term,
        reduce_with_atomics,
        wrap_triton,
    )
