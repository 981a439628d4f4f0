"""The schema of every condnet op, for the backends that define their ops from
Python (the Triton namespace, ``condnet_triton::``).

The C++ extension defines the same ops in csrc/ops.cpp (a libtorch user has no
Python); tests/test_ops_registration.py checks that every schema here equals
the one ``torch.ops.condnet`` registered, so the two cannot drift apart.

The backward ops take ``output_mask`` = which of their gradients to compute;
masked outputs come back undefined (None). ``conditional_classifier`` takes
the projection in the canonical per-class form and ``layout`` says how its
output theta is read as weights and biases (:mod:`condnet.ops.layouts`).

CAC's ops (:mod:`condnet.ops.cac`): ``context_pool`` returns the static
logits, the class centres and the class masses; ``cosine_classify`` takes the
scaled, normalised per-image classifiers and returns the logits and the
features' per-pixel norms (unclamped; float32 for 16-bit features), which its
backward needs. ``context_pool_backward`` adds the cosine classifier's part
of dx when ``grad_logits`` is given, so ``context_aware_classifier``'s
backward writes dx once.
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
    "context_pool": (
        "(Tensor x, Tensor guide_weight, Tensor? guide_bias) "
        "-> (Tensor guide_logits, Tensor centres, Tensor mass)"
    ),
    "context_pool_backward": (
        "(Tensor? grad_guide_logits, Tensor? grad_centres, Tensor? grad_mass, Tensor x, "
        "Tensor guide_weight, Tensor guide_logits, Tensor centres, Tensor mass, "
        "bool[3] output_mask, Tensor? grad_logits=None, Tensor? classifier=None, "
        "Tensor? logits=None, Tensor? x_norm=None, float eps=0.) -> (Tensor, Tensor, Tensor)"
    ),
    "cosine_classify": "(Tensor x, Tensor weight, float eps) -> (Tensor logits, Tensor x_norm)",
    "cosine_classify_backward": (
        "(Tensor grad_logits, Tensor x, Tensor weight, Tensor logits, Tensor x_norm, float eps, "
        "bool[2] output_mask) -> (Tensor, Tensor)"
    ),
    "context_aware_classifier": (
        "(Tensor x, Tensor guide_weight, Tensor? guide_bias, Tensor class_weight, "
        "Tensor proj_in_weight, Tensor proj_out_weight, Tensor? proj_out_bias, float scale, "
        "float eps) -> (Tensor logits, Tensor guide_logits, Tensor centres, Tensor mass, "
        "Tensor classifier, Tensor x_norm)"
    ),
    "context_aware_classifier_backward": (
        "(Tensor? grad_logits, Tensor? grad_guide_logits, Tensor x, Tensor guide_weight, "
        "Tensor guide_logits, Tensor centres, Tensor mass, Tensor class_weight, "
        "Tensor proj_in_weight, Tensor proj_out_weight, Tensor? proj_out_bias, Tensor logits, "
        "Tensor classifier, Tensor x_norm, float scale, float eps, bool[7] output_mask) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    ),
}
