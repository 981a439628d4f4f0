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

from torch.library import triton_op

from ..autograd import register_autograd
from .class_pool import _class_pool_fwd_kernel, class_pool_forward
from .class_pool_backward import class_pool_backward
from .conditional_classifier import conditional_classifier_backward, conditional_classifier_forward
from .dynamic_classify import dynamic_classify_backward, dynamic_classify_forward
from .launch import interpreted
from .project import project_backward, project_forward

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
        "Tensor guide_logits, bool[3] output_mask, Tensor? grad_logits=None, "
        "Tensor? classifier_weight=None) -> (Tensor, Tensor, Tensor)"
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


project = triton_op(
    f"{NAMESPACE}::project",
    mutates_args=(),
    schema="(Tensor class_feats, Tensor weight, Tensor? bias) -> Tensor",
)(project_forward)

project_backward_op = triton_op(
    f"{NAMESPACE}::project_backward",
    mutates_args=(),
    schema=(
        "(Tensor grad_theta, Tensor class_feats, Tensor weight, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)"
    ),
)(project_backward)

conditional_classifier = triton_op(
    f"{NAMESPACE}::conditional_classifier",
    mutates_args=(),
    schema=(
        "(Tensor x, Tensor guide_weight, Tensor? guide_bias, Tensor proj_weight, "
        "Tensor? proj_bias, bool official) -> (Tensor, Tensor, Tensor, Tensor)"
    ),
)(conditional_classifier_forward)

conditional_classifier_backward_op = triton_op(
    f"{NAMESPACE}::conditional_classifier_backward",
    mutates_args=(),
    schema=(
        "(Tensor? grad_logits, Tensor? grad_guide_logits, Tensor? grad_class_feats, "
        "Tensor? grad_theta, Tensor x, Tensor guide_weight, Tensor guide_logits, "
        "Tensor class_feats, Tensor proj_weight, Tensor theta, bool official, "
        "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
)(conditional_classifier_backward)

register_autograd(NAMESPACE)
