"""The public ops: argument checks, autocast, the layout's views, then the
kernel the backend registry (:mod:`condnet.ops.registry`) names."""

from __future__ import annotations

from typing import overload

import torch

from . import layouts, registry
from .validation import (
    check_class_pool,
    check_conditional_classifier,
    check_dynamic_classify,
    check_project,
)


# The overloads tell the type checker that each argument comes back as it went
# in: a tensor stays a tensor, an optional bias stays optional.
@overload
def _autocast(x: torch.Tensor, /) -> tuple[torch.Tensor]: ...


@overload
def _autocast(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, /
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...


def _autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Under autocast, casts floating inputs to the autocast dtype, as a
    conv or matmul would; so fp32 parameters meet bf16 features cleanly.

    The projection's weights are never passed here: the kernels read float32
    weights as they are (a cast copy of the classifier's largest tensor is
    what they exist to avoid)."""
    x = tensors[0]
    if not isinstance(x, torch.Tensor):
        return tensors
    device = x.device.type
    if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(x.device.type)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors
    )


def class_pool(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guide logits and class-wise pooled features, fused.

    ``g = guide_weight @ x + guide_bias``; ``f = softmax_K(g) @ x^T / (H*W)``.

    Args:
        x: features (B, C, H, W); float16, bfloat16, float32 or float64.
        guide_weight: (K, C), same dtype and device as x.
        guide_bias: optional (K,).
        backend: "auto" or a registered backend (:data:`condnet.ops.BACKENDS`:
            "reference", "extension", "triton"); None follows
            :func:`condnet.ops.use_backend`, then ``CONDNET_BACKEND``, then "auto".

    Returns:
        ``(guide_logits, class_feats)``: (B, K, H, W) and (B, K, C), in x's dtype.
    """
    x, guide_weight, guide_bias = _autocast(x, guide_weight, guide_bias)
    check_class_pool(x, guide_weight, guide_bias)
    kernel = registry.kernel("class_pool", x.device.type, backend)
    guide_logits, class_feats = kernel(x, guide_weight, guide_bias)
    return guide_logits, class_feats


def dynamic_classify(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """Per-image 1x1 classifier: ``logits[b] = weight[b] @ x[b] + bias[b]``.

    Args:
        x: features (B, C, H, W).
        weight: (B, K, C), one classifier per image.
        bias: optional (B, K).
        backend: as for :func:`class_pool`.

    Returns:
        logits (B, K, H, W) in x's dtype.
    """
    x, weight, bias = _autocast(x, weight, bias)
    check_dynamic_classify(x, weight, bias)
    return registry.kernel("dynamic_classify", x.device.type, backend)(x, weight, bias)


def project(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    layout: str = layouts.GROUPED_CONV,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection of class features to per-image classifiers, with the
    parameters stored in ``layout`` (:mod:`condnet.ops.layouts`).

    Every layout runs the same per-class product, ``theta[b, k] = A[k] @
    class_feats[b, k] + a[k]`` with ``A`` (K, C + 1, C) a view of the stored
    weight, and reads theta back as the layout says: ``"grouped_conv"`` is the
    released model's grouped 1x1 conv (groups=K) reproduced exactly (its first
    C*K outputs are the weights, its last K the biases); ``"per_class"``
    stores ``A`` and ``a`` as they are, class k's weights theta[:, k, :C] and
    its bias theta[:, k, C].

    Args:
        class_feats: (B, K, C).
        proj_weight: (C*K + K, C, 1, 1) or (C*K + K, C) for "grouped_conv",
            (K, C + 1, C) for "per_class"; in class_feats' dtype, or float32
            for float16/bfloat16 class_feats: the kernels read float32 master
            weights as they are and sum in float32 (under autocast too).
        proj_bias: optional (C*K + K,) or (K, C + 1), in proj_weight's dtype.
        layout: "grouped_conv" or "per_class".
        backend: as for :func:`class_pool`.

    Returns:
        ``(weight, bias)``: (B, K, C) and (B, K) in class_feats' dtype (views
        of one (B, K, C + 1) tensor).
    """
    layout = layouts.check_layout(layout)
    (class_feats,) = _autocast(class_feats)
    check_project(class_feats, proj_weight, proj_bias, layout)
    A, a = layouts.canonical_projection(proj_weight, proj_bias, layout, class_feats.shape[1])
    theta = registry.kernel("project", class_feats.device.type, backend)(class_feats, A, a)
    return layouts.split_theta(theta, layout)


def project_per_class(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project` with ``layout="per_class"``."""
    return project(class_feats, proj_weight, proj_bias, layout=layouts.PER_CLASS, backend=backend)


def project_grouped_conv(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project` with ``layout="grouped_conv"``, the released model's
    projection (``project_official`` before the layout was renamed)."""
    return project(
        class_feats, proj_weight, proj_bias, layout=layouts.GROUPED_CONV, backend=backend
    )


def conditional_classifier(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    layout: str = layouts.GROUPED_CONV,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole conditional classifier, fused: class_pool, the projection in
    ``layout``, dynamic_classify.

    On the kernel backends it is one op forward and one op backward, so x's
    gradient is written once (autograd over the three ops would write two and
    add them) and the projection's float32 weights are read as they are under
    autocast.

    Args:
        x: features (B, C, H, W).
        guide_weight, guide_bias: the guidance classifier, (K, C) and (K,).
        proj_weight, proj_bias: the projection as ``layout`` stores it (see
            :func:`project`).
        layout: "grouped_conv" or "per_class".
        backend: as for :func:`class_pool`.

    Returns:
        ``(logits, guide_logits)``, both (B, K, H, W) in x's dtype.
    """
    layout = layouts.check_layout(layout)
    x, guide_weight, guide_bias = _autocast(x, guide_weight, guide_bias)
    check_conditional_classifier(x, guide_weight, guide_bias, proj_weight, proj_bias, layout)
    A, a = layouts.canonical_projection(proj_weight, proj_bias, layout, guide_weight.shape[0])
    kernel = registry.kernel("conditional_classifier", x.device.type, backend)
    logits, guide_logits, _, _ = kernel(x, guide_weight, guide_bias, A, a, layout)
    return logits, guide_logits
