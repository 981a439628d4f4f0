"""Python-side registrations for the compiled ops: fake kernels (shapes only,
for torch.compile and meta tensors), the autograd formulas
(:mod:`condnet.ops.autograd`), which call the registered backward ops, and
CAC's fused op and its backward (:mod:`condnet.ops.context_composite` over
the C++ primitives; csrc/ops.cpp declares their schemas).
"""

from __future__ import annotations

import torch

from . import context_composite
from .autograd import register_autograd


def _masked(mask, *outputs):
    return tuple(out if need else None for need, out in zip(mask, outputs, strict=True))


def _class_pool_fake(x, guide_weight, guide_bias):
    B, C, H, W = x.shape
    K = guide_weight.shape[0]
    return x.new_empty(B, K, H, W), x.new_empty(B, K, C)


def _class_pool_backward_fake(
    grad_guide_logits,
    grad_class_feats,
    x,
    guide_weight,
    guide_logits,
    output_mask,
    grad_logits=None,
    classifier_weight=None,
):
    return _masked(
        output_mask,
        x.new_empty(x.shape),
        guide_weight.new_empty(guide_weight.shape),
        guide_weight.new_empty(guide_weight.shape[0]),
    )


def _dynamic_classify_fake(x, weight, bias):
    B, C, H, W = x.shape
    return x.new_empty(B, weight.shape[1], H, W)


def _dynamic_classify_backward_fake(grad_logits, x, weight, output_mask):
    return _masked(
        output_mask,
        x.new_empty(x.shape),
        weight.new_empty(weight.shape),
        weight.new_empty(weight.shape[:2]),
    )


def _project_fake(class_feats, weight, bias):
    B, K, C = class_feats.shape
    return class_feats.new_empty(B, K, C + 1)


def _project_backward_fake(grad_theta, class_feats, weight, output_mask):
    return _masked(
        output_mask,
        class_feats.new_empty(class_feats.shape),
        weight.new_empty(weight.shape),
        weight.new_empty(weight.shape[:2]),
    )


def _conditional_classifier_fake(x, guide_weight, guide_bias, proj_weight, proj_bias, layout):
    B, C, H, W = x.shape
    K = guide_weight.shape[0]
    maps = (x.new_empty(B, K, H, W), x.new_empty(B, K, H, W))
    return (*maps, x.new_empty(B, K, C), x.new_empty(B, K, C + 1))


def _conditional_classifier_backward_fake(
    grad_logits,
    grad_guide_logits,
    grad_class_feats,
    grad_theta,
    x,
    guide_weight,
    guide_logits,
    class_feats,
    proj_weight,
    theta,
    layout,
    output_mask,
):
    return _masked(
        output_mask,
        x.new_empty(x.shape),
        guide_weight.new_empty(guide_weight.shape),
        guide_weight.new_empty(guide_weight.shape[0]),
        proj_weight.new_empty(proj_weight.shape),
        proj_weight.new_empty(proj_weight.shape[:2]),
    )


def _norm_dtype(x):
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _context_pool_fake(x, guide_weight, guide_bias):
    B, C, H, W = x.shape
    K = guide_weight.shape[-2]
    return x.new_empty(B, K, H, W), x.new_empty(B, K, C), x.new_empty(B, K)


def _context_pool_backward_fake(
    grad_guide_logits, grad_centres, grad_mass, x, guide_weight, guide_logits, centres, mass,
    output_mask, grad_logits=None, classifier=None, logits=None, x_norm=None, eps=0.0,
):  # fmt: skip
    K = guide_weight.shape[-2]
    grads = (x.new_empty(x.shape), guide_weight.new_empty(guide_weight.shape), x.new_empty(K))
    return _masked(output_mask, *grads)


def _cosine_classify_fake(x, weight, eps):
    B, C, H, W = x.shape
    return x.new_empty(B, weight.shape[1], H, W), x.new_empty(B, H, W, dtype=_norm_dtype(x))


def _cosine_classify_backward_fake(grad_logits, x, weight, logits, x_norm, eps, output_mask):
    return _masked(output_mask, x.new_empty(x.shape), weight.new_empty(weight.shape))


def _context_aware_classifier_fake(
    x, guide_weight, guide_bias, class_weight, in_weight, out_weight, out_bias, scale, eps
):
    B, C, H, W = x.shape
    K = guide_weight.shape[-2]
    maps = (x.new_empty(B, K, H, W), x.new_empty(B, K, H, W))
    return (
        *maps,
        x.new_empty(B, K, C),
        x.new_empty(B, K),
        x.new_empty(B, K, C),
        x.new_empty(B, H, W, dtype=_norm_dtype(x)),
    )


def _context_aware_classifier_backward_fake(
    grad_logits, grad_guide_logits, x, guide_weight, guide_logits, centres, mass, class_weight,
    in_weight, out_weight, out_bias, logits, classifier, x_norm, scale, eps, output_mask,
):  # fmt: skip
    like = (x, guide_weight, x.new_empty(guide_weight.shape[-2]), class_weight)
    like += (in_weight, out_weight, out_bias if out_bias is not None else out_weight[:, 0])
    return _masked(output_mask, *(t.new_empty(t.shape) for t in like))


FAKES = {
    "class_pool": _class_pool_fake,
    "class_pool_backward": _class_pool_backward_fake,
    "dynamic_classify": _dynamic_classify_fake,
    "dynamic_classify_backward": _dynamic_classify_backward_fake,
    "project": _project_fake,
    "project_backward": _project_backward_fake,
    "conditional_classifier": _conditional_classifier_fake,
    "conditional_classifier_backward": _conditional_classifier_backward_fake,
    "context_pool": _context_pool_fake,
    "context_pool_backward": _context_pool_backward_fake,
    "cosine_classify": _cosine_classify_fake,
    "cosine_classify_backward": _cosine_classify_backward_fake,
    "context_aware_classifier": _context_aware_classifier_fake,
    "context_aware_classifier_backward": _context_aware_classifier_backward_fake,
}

_IMPL_LIBRARY: list[torch.library.Library] = []


def _register_context_composite() -> None:
    """CAC's fused op and its backward for every device the primitives run on."""
    ops = torch.ops.condnet
    parts = context_composite.ContextParts(
        context_pool=ops.context_pool,
        cosine_classify=ops.cosine_classify,
        context_pool_backward=ops.context_pool_backward,
        cosine_classify_backward=ops.cosine_classify_backward,
    )
    library = torch.library.Library("condnet", "IMPL")
    library.impl(
        "context_aware_classifier",
        lambda *args: context_composite.forward(parts, *args),
        "CompositeExplicitAutograd",
    )
    library.impl(
        "context_aware_classifier_backward",
        lambda *args: context_composite.backward(parts, *args),
        "CompositeExplicitAutograd",
    )
    _IMPL_LIBRARY.append(library)  # the registrations live as long as the library object


def register() -> None:
    """Registers everything; called once, after condnet._C has loaded."""
    for op, fake in FAKES.items():
        # A C++ build older than an op lacks it (condnet.ops.extension says so).
        if hasattr(torch.ops.condnet, op):
            torch.library.register_fake(f"condnet::{op}")(fake)
    if hasattr(torch.ops.condnet, "context_aware_classifier"):
        _register_context_composite()
    register_autograd("condnet")
