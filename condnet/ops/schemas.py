"""The schema of every condnet op, for the backends that define their ops from
Python (the Triton namespace, ``condnet_triton::``).

The C++ extension defines the same ops in csrc/ops.cpp (a libtorch user has no
Python); tests/test_ops_registration.py checks that every schema here equals
the one ``torch.ops.condnet`` registered, so the two cannot drift apart.

The backward ops take ``output_mask`` = which of their gradients to compute;
masked outputs come back undefined (None). ``conditional_classifier`` takes
the projection in the canonical per-class form and ``layout`` says how its
output theta is read as weights and biases (:mod:`condnet.ops.layouts`).
"""

from __future__ import annotations

SCHEMAS = {
    "class_pool": "(Tensor x, Tensor guide_weight, Tensor? guide_bias) -> (Tensor, Tensor)",
    "class_pool_backward": (
        "(Tensor? grad_guide_logits, Tensor? grad_class_feats, Tensor x, Tensor guide_weight, "
        "Tensor guide_logits, bool[3] output_mask, Tensor? grad_logits=None, "
        "Tensor? classifier_weight=None) -> (Tensor, Tensor, Tensor)"
    ),
    "dynamic_classify": "(Tensor x, Tensor weight, Tensor? bias) -> Tensor",
    "dynamic_classify_backward": (
        "(Tensor grad_logits, Tensor x, Tensor weight, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)"
    ),
    "project": "(Tensor class_feats, Tensor weight, Tensor? bias) -> Tensor",
    "project_backward": (
        "(Tensor grad_theta, Tensor class_feats, Tensor weight, bool[3] output_mask) "
        "-> (Tensor, Tensor, Tensor)"
    ),
    "conditional_classifier": (
        "(Tensor x, Tensor guide_weight, Tensor? guide_bias, Tensor proj_weight, "
        "Tensor? proj_bias, str layout) "
        "-> (Tensor logits, Tensor guide_logits, Tensor class_feats, Tensor theta)"
    ),
    "conditional_classifier_backward": (
        "(Tensor? grad_logits, Tensor? grad_guide_logits, Tensor? grad_class_feats, "
        "Tensor? grad_theta, Tensor x, Tensor guide_weight, Tensor guide_logits, "
        "Tensor class_feats, Tensor proj_weight, Tensor theta, str layout, "
        "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
}
