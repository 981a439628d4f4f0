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

from collections.abc import Callable

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
    grad_guide_shape,
    grad_feats_shape,
    x_shape,
    guide_weight_shape,
    guide_shape,
    mask,
    grad_logits_shape=None,
    classifier_weight_shape=None,
    **kwargs,
) -> int:
    """2BKCN per product that the requested gradients need, as autograd of the
    reference does: dp (if class features get a gradient), the pooling and
    guide parts of dx, and dWg; plus the dynamic classifier's dx term w^T dy
    when the whole classifier's backward passes it."""
    need_x, need_w, _ = mask
    pooled = grad_feats_shape is not None
    guided = pooled or grad_guide_shape is not None
    products = (pooled and any(mask)) + (pooled and need_x) + (guided and need_x) + need_w
    flops = 2 * products * _bkcn(x_shape, guide_weight_shape)
    if need_x and grad_logits_shape is not None:
        flops += 2 * _bkcn(x_shape, classifier_weight_shape)
    return flops


def dynamic_classify_backward_flops(grad_shape, x_shape, weight_shape, mask, **kwargs) -> int:
    """2BKCN each for dx and dw."""
    need_x, need_w, _ = mask
    return 2 * (need_x + need_w) * _bkcn(x_shape, weight_shape)


def _bkjc(feats_shape) -> int:
    """B*K*(C+1)*C of the projection from class features (B, K, C)."""
    B, K, C = feats_shape
    return B * K * (C + 1) * C


def project_flops(feats_shape, weight_shape, *args, **kwargs) -> int:
    """theta = A f: 2BK(C+1)C."""
    return 2 * _bkjc(feats_shape)


def project_backward_flops(grad_shape, feats_shape, weight_shape, mask, **kwargs) -> int:
    """2BK(C+1)C each for df and dA."""
    need_f, need_w, _ = mask
    return 2 * (need_f + need_w) * _bkjc(feats_shape)


def conditional_classifier_flops(x_shape, guide_weight_shape, *args, **kwargs) -> int:
    """class_pool, the projection and dynamic_classify."""
    B, C = x_shape[:2]
    K = guide_weight_shape[0]
    pool = class_pool_flops(x_shape, guide_weight_shape)
    return pool + project_flops((B, K, C), None) + dynamic_classify_flops(x_shape, (B, K, C))


def conditional_classifier_backward_flops(
    grad_logits_shape,
    grad_guide_shape,
    grad_feats_shape,
    grad_theta_shape,
    x_shape,
    guide_weight_shape,
    guide_shape,
    feats_shape,
    proj_weight_shape,
    theta_shape,
    layout,
    mask,
    **kwargs,
) -> int:
    """What its three backward steps compute: dw of the dynamic classifier,
    the projection's df and dA, class_pool's backward with the dx term w^T dy."""
    need_pool = any(mask[:3])
    flops, dtheta = 0, grad_theta_shape is not None
    if grad_logits_shape is not None and (need_pool or mask[3] or mask[4]):
        flops += 2 * _bkcn(x_shape, feats_shape)  # dw = dy x^T
        dtheta = True
    if dtheta:
        flops += project_backward_flops(None, feats_shape, None, [need_pool, mask[3], mask[4]])
    pooled = dtheta or grad_feats_shape is not None
    if need_pool:
        flops += class_pool_backward_flops(
            grad_guide_shape,
            feats_shape if pooled else None,
            x_shape,
            guide_weight_shape,
            guide_shape,
            mask[:3],
            grad_logits_shape,
            feats_shape,
        )
    return flops


def context_pool_flops(x_shape, guide_weight_shape, *args, **kwargs) -> int:
    """CAC's static logits 2BKCN + pooling 2BKCN (as class_pool)."""
    return 4 * _bkcn(x_shape, guide_weight_shape)


def cosine_classify_flops(x_shape, weight_shape, *args, **kwargs) -> int:
    """The cosine logits' product: 2BKCN (the norms are not products)."""
    return 2 * _bkcn(x_shape, weight_shape)


def cosine_classify_backward_flops(grad_shape, x_shape, weight_shape, *args, **kwargs) -> int:
    """2BKCN each for dx and dweight."""
    need_x, need_w = args[-1] if args else kwargs["output_mask"]
    return 2 * (need_x + need_w) * _bkcn(x_shape, weight_shape)


def context_pool_backward_flops(
    grad_guide_shape, grad_centres_shape, grad_mass_shape, x_shape, guide_weight_shape,
    guide_shape, centres_shape, mass_shape, mask, grad_logits_shape=None,
    classifier_shape=None, *args, **kwargs,
) -> int:  # fmt: skip
    """As class_pool's backward, with the centres' gradient for the class
    features' (the mass's adds no product), and the cosine classifier's dx
    term v^T dy when the whole classifier's backward passes it."""
    need_x, need_w, need_b = mask
    pooled = grad_centres_shape is not None
    guided = pooled or grad_guide_shape is not None or grad_mass_shape is not None
    products = (pooled and (need_x or need_w or need_b)) + (pooled and need_x)
    products += (guided and need_x) + (guided and need_w)
    flops = 2 * products * _bkcn(x_shape, guide_weight_shape)
    if need_x and grad_logits_shape is not None:
        flops += 2 * _bkcn(x_shape, classifier_shape)
    return flops


def _generator_sizes(x_shape, guide_weight_shape, proj_in_weight_shape) -> tuple[int, int, int]:
    """B*K rows, C and Hd of CAC's generator MLP (2C -> Hd -> C)."""
    B, C = x_shape[:2]
    return B * guide_weight_shape[-2], C, proj_in_weight_shape[0]


def context_aware_classifier_flops(
    x_shape, guide_weight_shape, guide_bias_shape, class_weight_shape, proj_in_weight_shape,
    *args, **kwargs,
) -> int:  # fmt: skip
    """context_pool, the generator (2 BK Hd 2C + 2 BK C Hd) and cosine_classify."""
    rows, C, hidden = _generator_sizes(x_shape, guide_weight_shape, proj_in_weight_shape)
    classify = cosine_classify_flops(x_shape, guide_weight_shape)
    return context_pool_flops(x_shape, guide_weight_shape) + 6 * rows * C * hidden + classify


def context_aware_classifier_backward_flops(
    grad_logits_shape, grad_guide_shape, x_shape, guide_weight_shape, guide_shape,
    centres_shape, mass_shape, class_weight_shape, proj_in_weight_shape, *args, **kwargs,
) -> int:  # fmt: skip
    """The products autograd of the reference computes for the gradients
    asked for: dv = dy x^T / r, the generator's backward (each of its two
    layers' input and weight gradients where needed), context_pool's
    backward with the cosine dx term."""
    mask = args[-1] if args else kwargs["output_mask"]
    need_pool, need_class = any(mask[:3]), mask[3]
    need_in, need_out = mask[4], mask[5] or mask[6]
    rows, C, hidden = _generator_sizes(x_shape, guide_weight_shape, proj_in_weight_shape)
    flops = 0
    through_generator = grad_logits_shape is not None and (
        need_pool or need_class or need_in or need_out
    )
    if through_generator:
        flops += 2 * _bkcn(x_shape, guide_weight_shape)  # dv
        flops += 2 * rows * C * hidden * (mask[5] + (need_pool or need_class or need_in))
        flops += 4 * rows * C * hidden * (need_in + (need_pool or need_class))
    if need_pool:
        flops += context_pool_backward_flops(
            grad_guide_shape,
            centres_shape if through_generator else None,
            None,
            x_shape,
            guide_weight_shape,
            guide_shape,
            centres_shape,
            mass_shape,
            mask[:3],
            grad_logits_shape,
            centres_shape,
        )
    return flops


FLOP_FORMULAS: dict[str, Callable[..., int]] = {
    "class_pool": class_pool_flops,
    "dynamic_classify": dynamic_classify_flops,
    "class_pool_backward": class_pool_backward_flops,
    "dynamic_classify_backward": dynamic_classify_backward_flops,
    "project": project_flops,
    "project_backward": project_backward_flops,
    "conditional_classifier": conditional_classifier_flops,
    "conditional_classifier_backward": conditional_classifier_backward_flops,
    "context_pool": context_pool_flops,
    "context_pool_backward": context_pool_backward_flops,
    "cosine_classify": cosine_classify_flops,
    "cosine_classify_backward": cosine_classify_backward_flops,
    "context_aware_classifier": context_aware_classifier_flops,
    "context_aware_classifier_backward": context_aware_classifier_backward_flops,
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
