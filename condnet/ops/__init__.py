"""The ops of image-conditioned classifiers: CondNet's and CAC's.

    guide_logits, class_feats = class_pool(x, guide_weight, guide_bias)
    weight, bias = project(class_feats, proj_weight, proj_bias, layout="grouped_conv")
    logits = dynamic_classify(x, weight, bias)

or the three at once, forward and backward each one op, x's gradient written
once:

    logits, guide_logits = conditional_classifier(x, guide_weight, guide_bias,
                                                  proj_weight, proj_bias, layout="grouped_conv")

CAC's context-aware classifier, the same way:

    guide_logits, centres, mass = context_pool(x, guide_weight, guide_bias)
    logits = cosine_classify(x, weight, scale=15.0)
    logits, static_logits = context_aware_classifier(x, seg_weight, seg_bias,
                                                     proj_in_weight, proj_out_weight, proj_out_bias)

Every op runs on the backend the registry (:mod:`condnet.ops.registry`)
chooses: the compiled kernels when the extension is built (see
:func:`build_info`), Triton on CUDA GPUs, the pure-PyTorch reference otherwise.
"""

# Each backend registers itself on import; "auto" orders them by rank, not by
# the order of these imports.
from . import extension as _extension
from . import reference_backend as _reference_backend  # noqa: F401
from . import registry
from . import triton as _triton  # noqa: F401
from .extension import build_info
from .functional import (
    class_pool,
    conditional_classifier,
    context_aware_classifier,
    context_pool,
    cosine_classify,
    dynamic_classify,
    project,
    project_grouped_conv,
    project_per_class,
)
from .layouts import LAYOUTS
from .registry import use_backend

if _extension.LOAD_ERROR is None:
    from .registration import register as _register

    _register()

# "auto" and every registered backend.
BACKENDS = registry.names()
# The released layout's former name.
project_official = project_grouped_conv

__all__ = [
    "BACKENDS",
    "LAYOUTS",
    "build_info",
    "class_pool",
    "conditional_classifier",
    "context_aware_classifier",
    "context_pool",
    "cosine_classify",
    "dynamic_classify",
    "project",
    "project_grouped_conv",
    "project_official",
    "project_per_class",
    "use_backend",
]
