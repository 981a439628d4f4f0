"""Autograd formulas of the condnet ops, written once for both of their
implementations: the C++ ops (``torch.ops.condnet``) and the Triton ops
(``torch.ops.condnet_triton``). Each formula calls its own namespace's
registered backward op, so the whole training step stays visible to the
dispatcher and to torch.compile.

The backward ops take an output mask, built here from
``ctx.needs_input_grad``: gradients nobody asked for are never computed.
Outputs whose gradient is unused arrive as None (``set_materialize_grads(False)``)
and the backward ops skip their terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _mask(ctx) -> list[bool]:
    """Which of an op's (input, weight, bias) need a gradient; an absent bias needs none."""
    need_input, need_weight, need_bias = ctx.needs_input_grad
    return [need_input, need_weight, need_bias and ctx.has_bias]


def _class_pool_setup(ctx, inputs, output):
    x, guide_weight, guide_bias = inputs
    guide_logits, _ = output
    ctx.save_for_backward(x, guide_weight, guide_logits)
    ctx.has_bias = guide_bias is not None
    ctx.set_materialize_grads(False)


def _dynamic_classify_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _project_setup(ctx, inputs, output):
    class_feats, weight, bias = inputs
    ctx.save_for_backward(class_feats, weight)
    ctx.has_bias = bias is not None


def _conditional_classifier_setup(ctx, inputs, output):
    x, guide_weight, guide_bias, proj_weight, proj_bias, layout = inputs
    _, guide_logits, class_feats, theta = output
    ctx.save_for_backward(x, guide_weight, guide_logits, class_feats, proj_weight, theta)
    ctx.layout = layout
    ctx.has_biases = (guide_bias is not None, proj_bias is not None)
    ctx.set_materialize_grads(False)


def _context_pool_setup(ctx, inputs, output):
    x, guide_weight, guide_bias = inputs
    guide_logits, centres, mass = output
    ctx.save_for_backward(x, guide_weight, guide_logits, centres, mass)
    ctx.has_bias = guide_bias is not None
    ctx.set_materialize_grads(False)


def _cosine_classify_setup(ctx, inputs, output):
    x, weight, eps = inputs
    logits, x_norm = output
    ctx.save_for_backward(x, weight, logits, x_norm)
    ctx.eps = eps
    ctx.mark_non_differentiable(x_norm)
    ctx.set_materialize_grads(False)


def _context_aware_classifier_setup(ctx, inputs, output):
    x, guide_weight, guide_bias, class_weight, in_weight, out_weight, out_bias, scale, eps = inputs
    logits, guide_logits, centres, mass, classifier, x_norm = output
    ctx.save_for_backward(
        x, guide_weight, guide_logits, centres, mass, class_weight, in_weight, out_weight,
        out_bias, logits, classifier, x_norm,
    )  # fmt: skip
    ctx.scale, ctx.eps = scale, eps
    ctx.has_biases = (guide_bias is not None, out_bias is not None)
    # The intermediate outputs are what the backward needs, not results.
    ctx.mark_non_differentiable(centres, mass, classifier, x_norm)
    ctx.set_materialize_grads(False)


def register_autograd(namespace: str) -> None:
    """Registers the autograd formula of every op of ``namespace``
    ("condnet" or "condnet_triton"); its ops must be defined already."""
    ops = getattr(torch.ops, namespace)

    def class_pool_backward(ctx, grad_guide_logits, grad_class_feats):
        x, guide_weight, guide_logits = ctx.saved_tensors
        mask = _mask(ctx)
        return tuple(
            ops.class_pool_backward(
                grad_guide_logits, grad_class_feats, x, guide_weight, guide_logits, mask
            )
        )

    def dynamic_classify_backward(ctx, grad_logits):
        x, weight = ctx.saved_tensors
        mask = _mask(ctx)
        return tuple(ops.dynamic_classify_backward(grad_logits, x, weight, mask))

    def project_backward(ctx, grad_theta):
        class_feats, weight = ctx.saved_tensors
        mask = _mask(ctx)
        return tuple(ops.project_backward(grad_theta, class_feats, weight, mask))

    def conditional_classifier_backward(ctx, grad_logits, grad_guide, grad_feats, grad_theta):
        x, guide_weight, guide_logits, class_feats, proj_weight, theta = ctx.saved_tensors
        has_guide_bias, has_proj_bias = ctx.has_biases
        need = list(ctx.needs_input_grad[:5])
        need[2] = need[2] and has_guide_bias
        need[4] = need[4] and has_proj_bias
        grads = ops.conditional_classifier_backward(
            grad_logits,
            grad_guide,
            grad_feats,
            grad_theta,
            x,
            guide_weight,
            guide_logits,
            class_feats,
            proj_weight,
            theta,
            ctx.layout,
            need,
        )
        return (*grads, None)

    def context_pool_backward(ctx, grad_guide_logits, grad_centres, grad_mass):
        x, guide_weight, guide_logits, centres, mass = ctx.saved_tensors
        return tuple(
            ops.context_pool_backward(
                grad_guide_logits, grad_centres, grad_mass, x, guide_weight, guide_logits,
                centres, mass, _mask(ctx),
            )
        )  # fmt: skip

    def cosine_classify_backward(ctx, grad_logits, grad_x_norm):
        x, weight, logits, x_norm = ctx.saved_tensors
        if grad_logits is None:
            return None, None, None
        need = list(ctx.needs_input_grad[:2])
        dx, dweight = ops.cosine_classify_backward(
            grad_logits, x, weight, logits, x_norm, ctx.eps, need
        )
        return dx, dweight, None

    def context_aware_classifier_backward(ctx, grad_logits, grad_guide, *intermediates):
        saved = ctx.saved_tensors
        has_guide_bias, has_out_bias = ctx.has_biases
        need = list(ctx.needs_input_grad[:7])
        need[2] = need[2] and has_guide_bias
        need[6] = need[6] and has_out_bias
        grads = ops.context_aware_classifier_backward(
            grad_logits, grad_guide, *saved, ctx.scale, ctx.eps, need
        )
        return (*grads, None, None)

    formulas: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "class_pool": (class_pool_backward, _class_pool_setup),
        "dynamic_classify": (dynamic_classify_backward, _dynamic_classify_setup),
        "project": (project_backward, _project_setup),
        "conditional_classifier": (conditional_classifier_backward, _conditional_classifier_setup),
        "context_pool": (context_pool_backward, _context_pool_setup),
        "cosine_classify": (cosine_classify_backward, _cosine_classify_setup),
        "context_aware_classifier": (
            context_aware_classifier_backward,
            _context_aware_classifier_setup,
        ),
    }
    for op, (backward, setup) in formulas.items():
        # A C++ build older than an op lacks it (condnet.ops.extension says so).
        if hasattr(ops, op):
            torch.library.register_autograd(f"{namespace}::{op}", backward, setup_context=setup)
