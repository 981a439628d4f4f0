"""FLOP formulas of the condnet ops, for ``torch.utils.flop_counter.FlopCounterMode``.

The counter cannot see inside a fused kernel, so each op (and its backward op)
gets a formula: 2 FLOPs per multiply-accumulate, the products the reference
computes, so that the fused paths count the same FLOPs as the reference path.
The formulas take the argument shapes; the ops of every namespace (the compiled
``condnet::`` ops and the Triton ``condnet_triton::`` ops) share schemas, so they
share formulas.

Importing this module registers them for the namespaces loaded so far, and
:mod:`condnet.ops.triton` registers them for its ops when it loads them.
``condnet.ops`` does not import this module: ``torch.utils.flop_counter`` imports
triton, which ``import condnet.ops`` must not (:mod:`condnet.models.complexity`
imports it).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula


def _bkcn(x_shape, weight_shape) -> int:
    """B*K*C*N of a condnet op from x (B, C, H, W) and a weight whose
    second-to-last dim is K: (K, C) for class_pool, (B, K, C) for dynamic_classify."""
    B, C, H, W = x_shape
    return B * weight_shape[-2] * C * H * W


def class_pool_flops(x_shape, guide_weight_shape, *args, **kwargs) -> int:
    """Guide logits 2BKCN + class pooling 2BKCN."""
    return 4 * _bkcn(x_shape, guide_weight_shape)


def dynamic_classify_flops(x_shape, weight_shape, *args, **kwargs) -> int:
    """The per-image classifier: 2BKCN."""
    return 2 * _bkcn(x_shape, weight_shape)


def class_pool_backward_flops(
    grad_guide_shape, grad_feats_shape, x_shape, guide_weight_shape, guide_shape, mask, **kwargs
) -> int:
    """2BKCN per product that the requested gradients need, as autograd of the
    reference does: dp (if class features get a gradient), the pooling and
    guide parts of dx, and dWg."""
    need_x, need_w, _ = mask
    pooled = grad_feats_shape is not None
    products = (pooled and any(mask)) + (pooled and need_x) + need_x + need_w  # bools add as 0/1
    return 2 * products * _bkcn(x_shape, guide_weight_shape)


def dynamic_classify_backward_flops(grad_shape, x_shape, weight_shape, mask, **kwargs) -> int:
    """2BKCN each for dx and dw."""
    need_x, need_w, _ = mask
    return 2 * (need_x + need_w) * _bkcn(x_shape, weight_shape)


FLOP_FORMULAS = {
    "class_pool": class_pool_flops,
    "dynamic_classify": dynamic_classify_flops,
    "class_pool_backward": class_pool_backward_flops,
    "dynamic_classify_backward": dynamic_classify_backward_flops,
}


def register_flop_formulas(namespace: str = "condnet") -> list[str]:
    """Registers :data:`FLOP_FORMULAS` for the ops of ``torch.ops.<namespace>``
    that exist; returns the names registered now. Safe to call again.

    Done on import for the namespaces loaded by then, and by :mod:`condnet.ops.triton`
    for ``condnet_triton`` once its ops are registered.
    """
    done = []
    ops = getattr(torch.ops, namespace)
    for name, formula in FLOP_FORMULAS.items():
        try:
            packet = getattr(ops, name)
        except (AttributeError, RuntimeError):
            continue
        if packet not in flop_registry:
            register_flop_formula(packet)(formula)
            done.append(name)
    return done


for _namespace in ("condnet", "condnet_triton"):
    register_flop_formulas(_namespace)
