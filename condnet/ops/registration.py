"""Python-side registrations for the compiled ops: fake kernels (shapes only,
for torch.compile and meta tensors) and the autograd formulas
(:mod:`condnet.ops.autograd`), which call the registered backward ops.
"""

from __future__ import annotations

import torch

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


FAKES = {
    "class_pool": _class_pool_fake,
    "class_pool_backward": _class_pool_backward_fake,
    "dynamic_classify": _dynamic_classify_fake,
    "dynamic_classify_backward": _dynamic_classify_backward_fake,
    "project": _project_fake,
    "project_backward": _project_backward_fake,
    "conditional_classifier": _conditional_classifier_fake,
    "conditional_classifier_backward": _conditional_classifier_backward_fake,
}


def register() -> None:
    """Registers everything; called once, after condnet._C has loaded."""
    for op, fake in FAKES.items():
        torch.library.register_fake(f"condnet::{op}")(fake)
    register_autograd("condnet")
