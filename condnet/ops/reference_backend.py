"""The ``"reference"`` backend: the specification (:mod:`condnet.ops.reference`)
run as the ops, on any device and dtype, differentiated by autograd. ``"auto"``
falls back to it where no kernel runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import composite, reference, registry

_PARTS = composite.Parts(
    class_pool=reference.class_pool,
    project=reference.project,
    dynamic_classify=reference.dynamic_classify,
)


def _conditional_classifier(x, guide_weight, guide_bias, proj_weight, proj_bias, layout):
    return composite.forward(_PARTS, x, guide_weight, guide_bias, proj_weight, proj_bias, layout)


def _cosine_classify(x, classifier, eps):
    """The kernels' form: ``(logits, x_norm)`` for scaled, normalised classifiers."""
    compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    x_norm = x.to(compute).norm(dim=1)
    return reference.cosine_logits(x, classifier, eps), x_norm


KERNELS: dict[str, Callable[..., Any]] = {
    "class_pool": reference.class_pool,
    "dynamic_classify": reference.dynamic_classify,
    "project": reference.project,
    "conditional_classifier": _conditional_classifier,
    "context_pool": reference.context_pool,
    "cosine_classify": _cosine_classify,
    # (logits, guide_logits): autograd differentiates the specification.
    "context_aware_classifier": reference.context_aware_classifier,
}

BACKEND = registry.Backend(
    name="reference",
    kernel=KERNELS.__getitem__,
    unavailable_reason=lambda op, device_type: None,
    auto_rank=100,
)
registry.register(BACKEND)
