"""The Triton kernels as operators: ``torch.ops.condnet_triton.*``.

Each op is a ``torch.library.triton_op`` with the schema of
:mod:`condnet.ops.schemas` (the one the C++ ops have): its body allocates
the outputs and launches kernels through ``wrap_triton``, so the same body
serves as the fake (shape) implementation, and torch.compile traces through
it to the kernels instead of treating the op as opaque. The backward kernels
are ops too, with an ``output_mask`` like the C++ ops, and the autograd
formulas call them.

The namespace differs from the C++ ops' ``condnet::`` so that both can be
loaded at once and a graph says which implementation it runs.
"""

from __future__ import annotations

from torch.library import triton_op

from ..autograd import register_autograd
from ..schemas import SCHEMAS
from .class_pool import class_pool_forward
from .class_pool_backward import class_pool_backward
from .conditional_classifier import conditional_classifier_backward, conditional_classifier_forward
from .context_aware_classifier import (
    context_aware_classifier_backward,
    context_aware_classifier_forward,
)
from .context_pool import context_pool_forward
from .context_pool_backward import context_pool_backward
from .cosine_classify import cosine_classify_backward, cosine_classify_forward
from .dynamic_classify import dynamic_classify_backward, dynamic_classify_forward
from .launch import interpreted
from .pool_forward import _pool_fwd_kernel
from .project import project_backward, project_forward

NAMESPACE = "condnet_triton"

# Whether the kernels run in the Triton interpreter (TRITON_INTERPRET=1 when
# they were defined): then they take CPU tensors and cannot be compiled.
INTERPRETED = interpreted(_pool_fwd_kernel)

_IMPLEMENTATIONS = {
    "class_pool": class_pool_forward,
    "class_pool_backward": class_pool_backward,
    "dynamic_classify": dynamic_classify_forward,
    "dynamic_classify_backward": dynamic_classify_backward,
    "project": project_forward,
    "project_backward": project_backward,
    "conditional_classifier": conditional_classifier_forward,
    "conditional_classifier_backward": conditional_classifier_backward,
    "context_pool": context_pool_forward,
    "context_pool_backward": context_pool_backward,
    "cosine_classify": cosine_classify_forward,
    "cosine_classify_backward": cosine_classify_backward,
    "context_aware_classifier": context_aware_classifier_forward,
    "context_aware_classifier_backward": context_aware_classifier_backward,
}
if set(_IMPLEMENTATIONS) != set(SCHEMAS):
    raise ImportError(f"Triton ops {sorted(_IMPLEMENTATIONS)} differ from {sorted(SCHEMAS)}")

OPS = {
    name: triton_op(f"{NAMESPACE}::{name}", mutates_args=(), schema=SCHEMAS[name])(fn)
    for name, fn in _IMPLEMENTATIONS.items()
}

register_autograd(NAMESPACE)
