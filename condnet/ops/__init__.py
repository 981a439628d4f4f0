"""CondNet's conditional-classifier ops.

    guide_logits, class_feats = class_pool(x, guide_weight, guide_bias)
    weight, bias = project_official(class_feats, proj_weight, proj_bias)   # or project_per_class
    logits = dynamic_classify(x, weight, bias)

``class_pool`` and ``dynamic_classify`` run on fused kernels when the extension
is built (see :func:`build_info`) and on the pure-PyTorch reference otherwise;
the projections are small and plain PyTorch everywhere.
"""

from . import extension as _extension
from .backend import BACKENDS, use_backend
from .extension import build_info
from .functional import class_pool, dynamic_classify
from .reference import project_official, project_per_class

if _extension.LOAD_ERROR is None:
    from .registration import register as _register

    _register()

__all__ = [
    "BACKENDS",
    "build_info",
    "class_pool",
    "dynamic_classify",
    "project_official",
    "project_per_class",
    "use_backend",
]
