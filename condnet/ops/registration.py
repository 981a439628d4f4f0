"""Python-side registrations for the compiled ops: fake kernels (shapes only,
for torch.compile and meta tensors) and autograd formulas that call the
registered backward ops, so the whole training step is visible to the
dispatcher and to torch.compile.
"""

from __future__ import annotations

import torch


def _class_pool_fake(x, guide_weight, guide_bias):
    B, C, H, W = x.shape
    K = guide_weight.shape[0]
    return x.new_empty(B, K, H, W), x.new_empty(B, K, C)


def _masked(mask, *outputs):
    return tuple(out if need else None for need, out in zip(mask, outputs, strict=True))


def _class_pool_backward_fake(
    grad_guide_logits, grad_class_feats, x, guide_weight, guide_logits, output_mask
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


def _class_pool_setup(ctx, inputs, output):
    x, guide_weight, guide_bias = inputs
    guide_logits, _ = output
    ctx.save_for_backward(x, guide_weight, guide_logits)
    ctx.has_bias = guide_bias is not None
    # An unused output then arrives as None, and the kernel skips its terms.
    ctx.set_materialize_grads(False)


def _output_mask(ctx) -> list[bool]:
    """Which of (x, weight, bias) need a gradient; the kernels skip the rest."""
    need_x, need_w, need_b = ctx.needs_input_grad
    return [need_x, need_w, need_b and ctx.has_bias]


def _class_pool_backward(ctx, grad_guide_logits, grad_class_feats):
    x, guide_weight, guide_logits = ctx.saved_tensors
    return tuple(
        torch.ops.condnet.class_pool_backward(
            grad_guide_logits, grad_class_feats, x, guide_weight, guide_logits, _output_mask(ctx)
        )
    )


def _dynamic_classify_setup(ctx, inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _dynamic_classify_backward(ctx, grad_logits):
    x, weight = ctx.saved_tensors
    return tuple(
        torch.ops.condnet.dynamic_classify_backward(grad_logits, x, weight, _output_mask(ctx))
    )


def register() -> None:
    """Registers everything; called once, after condnet._C has loaded."""
    fake = torch.library.register_fake
    fake("condnet::class_pool")(_class_pool_fake)
    fake("condnet::class_pool_backward")(_class_pool_backward_fake)
    fake("condnet::dynamic_classify")(_dynamic_classify_fake)
    fake("condnet::dynamic_classify_backward")(_dynamic_classify_backward_fake)
    torch.library.register_autograd(
        "condnet::class_pool", _class_pool_backward, setup_context=_class_pool_setup
    )
    torch.library.register_autograd(
        "condnet::dynamic_classify",
        _dynamic_classify_backward,
        setup_context=_dynamic_classify_setup,
    )
