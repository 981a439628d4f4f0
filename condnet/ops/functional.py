"""The public ops: argument checks, autocast, and the choice of backend."""

from __future__ import annotations

import torch

from . import reference
from .backend import resolve
from .validation import (
    check_class_pool,
    check_conditional_classifier,
    check_dynamic_classify,
    check_layout,
    check_project,
)


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
        backend: "auto", "reference", "extension" or "triton"; None follows
            :func:`condnet.ops.use_backend`, then ``CONDNET_BACKEND``, then "auto".

    Returns:
        ``(guide_logits, class_feats)``: (B, K, H, W) and (B, K, C), in x's dtype.
    """
    x, guide_weight, guide_bias = _autocast(x, guide_weight, guide_bias)
    check_class_pool(x, guide_weight, guide_bias)
    impl = resolve("class_pool", x.device.type, backend)
    if impl == "triton":
        return tuple(torch.ops.condnet_triton.class_pool(x, guide_weight, guide_bias))
    if impl == "extension":
        return tuple(torch.ops.condnet.class_pool(x, guide_weight, guide_bias))
    return reference.class_pool(x, guide_weight, guide_bias)


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
    impl = resolve("dynamic_classify", x.device.type, backend)
    if impl == "triton":
        return torch.ops.condnet_triton.dynamic_classify(x, weight, bias)
    if impl == "extension":
        return torch.ops.condnet.dynamic_classify(x, weight, bias)
    return reference.dynamic_classify(x, weight, bias)


def _project(class_feats, proj_weight, proj_bias, layout, backend):
    (class_feats,) = _autocast(class_feats)
    check_project(class_feats, proj_weight, proj_bias, layout)
    impl = resolve("project", class_feats.device.type, backend)
    if impl == "reference":
        fn = reference.project_official if layout == "official" else reference.project_per_class
        return fn(class_feats, proj_weight, proj_bias)
    if layout == "official":
        proj_weight, proj_bias = reference.official_groups(
            proj_weight, proj_bias, class_feats.shape[1]
        )
    namespace = torch.ops.condnet_triton if impl == "triton" else torch.ops.condnet
    theta = namespace.project(class_feats, proj_weight, proj_bias)
    return reference.split_theta(theta, layout)


def project_per_class(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-class projection: ``theta[b, k] = proj_weight[k] @ class_feats[b, k]
    + proj_bias[k]``, whose first C entries are class k's weights and the
    last its bias.

    Args:
        class_feats: (B, K, C).
        proj_weight: (K, C + 1, C), in class_feats' dtype, or float32 for
            float16/bfloat16 class_feats: the kernels read float32 master
            weights as they are and sum in float32 (under autocast too).
        proj_bias: optional (K, C + 1), in proj_weight's dtype.
        backend: as for :func:`class_pool`.

    Returns:
        ``(weight, bias)``: (B, K, C) and (B, K) in class_feats' dtype (views
        of one (B, K, C + 1) tensor).
    """
    return _project(class_feats, proj_weight, proj_bias, "per_class", backend)


def project_official(
    class_feats: torch.Tensor,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released model's projection (a grouped 1x1 conv, groups=K),
    reproduced exactly: the same per-class product as
    :func:`project_per_class`, through views of the conv's weight, read back
    with the conv's output split (its first C*K outputs are the weights, its
    last K the biases; see :func:`condnet.ops.reference.project_official`).

    Args:
        class_feats: (B, K, C).
        proj_weight: (C*K + K, C, 1, 1) as in released checkpoints, or
            (C*K + K, C); dtype as for :func:`project_per_class`.
        proj_bias: optional (C*K + K,).
        backend: as for :func:`class_pool`.

    Returns:
        ``(weight, bias)``: (B, K, C) and (B, K).
    """
    return _project(class_feats, proj_weight, proj_bias, "official", backend)


def conditional_classifier(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    proj_weight: torch.Tensor,
    proj_bias: torch.Tensor | None = None,
    *,
    layout: str = "official",
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
        proj_weight, proj_bias: the projection as ``layout`` stores it:
            (C*K + K, C, 1, 1) and (C*K + K,) for "official" (the released
            grouped conv), (K, C + 1, C) and (K, C + 1) for "per_class".
        layout: "official" or "per_class".
        backend: as for :func:`class_pool`.

    Returns:
        ``(logits, guide_logits)``, both (B, K, H, W) in x's dtype.
    """
    layout = check_layout(layout)
    x, guide_weight, guide_bias = _autocast(x, guide_weight, guide_bias)
    check_conditional_classifier(x, guide_weight, guide_bias, proj_weight, proj_bias, layout)
    impl = resolve("conditional_classifier", x.device.type, backend)
    if impl == "reference":
        return reference.conditional_classifier(
            x, guide_weight, guide_bias, proj_weight, proj_bias, layout
        )
    if layout == "official":
        proj_weight, proj_bias = reference.official_groups(
            proj_weight, proj_bias, guide_weight.shape[0]
        )
    namespace = torch.ops.condnet_triton if impl == "triton" else torch.ops.condnet
    logits, guide_logits, _, _ = namespace.conditional_classifier(
        x, guide_weight, guide_bias, proj_weight, proj_bias, layout == "official"
    )
    return logits, guide_logits
