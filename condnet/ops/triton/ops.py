"""The Triton kernels as operators: ``torch.ops.condnet_triton.*``.

Each op is a ``torch.library.triton_op``: its body allocates the outputs and
launches kernels through ``wrap_triton``, so the same body serves as the fake
(shape) implementation, and torch.compile traces through it to the kernels
instead of treating the op as opaque. The backward kernels are ops too, with
an ``output_mask`` like the C++ ops, and the autograd formulas call them.

The namespace differs from the C++ ops' ``condnet::`` so that both can be
loaded at once and a graph says which implementation it runs.
"""

from __future__ import annotations

import torch
from torch.library import triton_op

from ..registration import _class_pool_setup, _dynamic_classify_setup, _output_mask
from .class_pool import _class_pool_fwd_kernel, class_pool_forward
from .class_pool_backward import class_pool_backward
from .dynamic_classify import dynamic_classify_backward, dynamic_classify_forward
from .launch import interpreted

NAMESPACE = "condnet_triton"

# Whether the kernels run in the Triton interpreter (TRITON_INTERPRET=1 when
# they were defined): then they take CPU tensors and cannot be compiled.
INTERPRETED = interpreted(_class_pool_fwd_kernel)

class_pool = triton_op(
    f"{NAMESPACE}::class_pool",
    mutates_args=(),
    schema="(Tensor x, Tensor guide_weight, Tensor? guide_bias) -> (Tensor, Tensor)",
)(class_pool_forward)

class_pool_backward_op = triton_op(
    f"{NAMESPACE}::class_pool_backward",
    mutates_args=(),
    schema=(
        "(Tensor? grad_guide_logits, Tensor? grad_class_feats, Tensor x, Tensor guide_weight, "
        "Tensor guide_logits, bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
    ),
)(class_pool_backward)

dynamic_classify = triton_op(
    f"{NAMESPACE}::dynamic_classify",
    mutates_args=(),
    schema="(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
)(dynamic_classify_forward)

dynamic_classify_backward_op = triton_op(
    f"{NAMESPACE}::dynamic_classify_backward",
    mutates_args=(),
    schema=(
        "(Tensor grad_logits, Tensor x, Tensor weight, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)"
    ),
)(dynamic_classify_backward)


def _class_pool_grads(ctx, grad_guide_logits, grad_class_feats):
    x, guide_weight, guide_logits = ctx.saved_tensors
    return tuple(
        torch.ops.condnet_triton.class_pool_backward(
            grad_guide_logits, grad_class_feats, x, guide_weight, guide_logits, _output_mask(ctx)
        )
    )


def _dynamic_classify_grads(ctx, grad_logits):
    x, weight = ctx.saved_tensors
    return tuple(
        torch.ops.condnet_triton.dynamic_classify_backward(
            grad_logits, x, weight, _output_mask(ctx)
        )
    )


class_pool.register_autograd(_class_pool_grads, setup_context=_class_pool_setup)
dynamic_classify.register_autograd(_dynamic_classify_grads, setup_context=_dynamic_classify_setup)
