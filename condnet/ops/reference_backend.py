"""The ``"reference"`` backend: the specification (:mod:`condnet.ops.reference`)
run as the ops, on any device and dtype, differentiated by autograd. ``"auto"``
falls back to it where no kernel runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import composite, reference, registry

_PARTS = composite.Parts(
    class_pool=reference.class_pool,
    project=reference.project,
    dynamic_classify=reference.dynamic_classify,
)


def _conditional_classifier(x, guide_weight, guide_bias, proj_weight, proj_bias, layout):
    return composite.forward(_PARTS, x, guide_weight, guide_bias, proj_weight, proj_bias, layout)


KERNELS: dict[str, Callable[..., Any]] = {
    "class_pool": reference.class_pool,
    "dynamic_classify": reference.dynamic_classify,
    "project": reference.project,
    "conditional_classifier": _conditional_classifier,
}

BACKEND = registry.Backend(
    name="reference",
    kernel=KERNELS.__getitem__,
    unavailable_reason=lambda op, device_type: None,
    auto_rank=100,
)
registry.register(BACKEND)
