"""The public ops: argument checks, autocast, the layout's views, then the
kernel the backend registry (:mod:`condnet.ops.registry`) names."""

from __future__ import annotations

from typing import overload

import torch

from . import cac, layouts, registry
from .context_validation import (
    check_context_aware_classifier,
    check_context_pool,
    check_cosine_classify,
)
from .validation import (
    _HALF,
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


def context_pool(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CAC's pooling, fused: static logits, class centres and class masses.

    ``s = guide_weight @ x + guide_bias``, ``P = softmax_K(s)``,
    ``mass = sum_n P``, ``centres = P @ x^T / (mass + 1e-12)``: each class's
    mean feature weighted by its soft mask (CondNet's :func:`class_pool`
    divides by the pixel count instead).

    Args:
        x: features (B, C, H, W).
        guide_weight: (K, C), or (B, K, C) for one per image.
        guide_bias: optional (K,).
        backend: as for :func:`class_pool`.

    Returns:
        ``(guide_logits, centres, mass)``: (B, K, H, W), (B, K, C), (B, K), in x's dtype.
    """
    x, guide_weight, guide_bias = _autocast(x, guide_weight, guide_bias)
    check_context_pool(x, guide_weight, guide_bias)
    kernel = registry.kernel("context_pool", x.device.type, backend)
    guide_logits, centres, mass = kernel(x, guide_weight, guide_bias)
    return guide_logits, centres, mass


def cosine_classify(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    scale: float = 1.0,
    eps: float = cac.DEFAULT_EPS,
    backend: str | None = None,
) -> torch.Tensor:
    """Cosine logits: ``scale * <weight / max(|weight|, eps), x / max(|x|, eps)>``,
    each pixel's norm taken in the same pass over C as the product.

    Args:
        x: features (B, C, H, W).
        weight: classifiers (K, C), or (B, K, C) one set per image.
        scale: the logits' scale (CAC: 15).
        eps: the norms' lower clamp (``F.normalize``'s 1e-12 by default, so a
            zero vector gives zero logits); 0 divides exactly, as the released
            CAC code does (NaN for a zero vector).
        backend: as for :func:`class_pool`.

    Returns:
        logits (B, K, H, W) in x's dtype.
    """
    x, weight, _ = _autocast(x, weight, None)
    check_cosine_classify(x, weight, scale, eps)
    if weight.dim() == 2:
        weight = weight.unsqueeze(0).expand(x.shape[0], -1, -1)
    # 16-bit weights' norms are summed in float32.
    length = weight.to(torch.float32 if weight.dtype in _HALF else weight.dtype).norm(
        dim=-1, keepdim=True
    )
    classifier = (weight * (float(scale) / length.clamp_min(eps))).to(x.dtype)
    kernel = registry.kernel("cosine_classify", x.device.type, backend)
    logits, _ = kernel(x, classifier.contiguous(), float(eps))
    return logits


def context_aware_classifier(
    x: torch.Tensor,
    seg_weight: torch.Tensor,
    seg_bias: torch.Tensor | None,
    proj_in_weight: torch.Tensor,
    proj_out_weight: torch.Tensor,
    proj_out_bias: torch.Tensor | None = None,
    *,
    scale: float = 15.0,
    eps: float = cac.DEFAULT_EPS,
    channel_mask: torch.Tensor | None = None,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAC's context-aware classifier, fused: :func:`context_pool`, the
    generator of per-image classifiers, :func:`cosine_classify`.

    On the kernel backends it is one op forward and one op backward, so x's
    gradient is written once; the generator (B*K rows of 2C numbers) runs
    in its weights' dtype, float32 master weights under autocast.

    Args:
        x: features (B, C, H, W).
        seg_weight, seg_bias: the static classifier (``conv_seg``), (K, C) or
            (K, C, 1, 1), and (K,) or None.
        proj_in_weight: (Hd, 2C), the generator's first linear layer (no bias).
        proj_out_weight, proj_out_bias: (C, Hd) and (C,) or None, its second.
        scale: the cosine logits' scale (15 as released).
        eps: the norms' lower clamp (see :func:`cosine_classify`).
        channel_mask: optional (B, C) Dropout2d multipliers for the static
            logits only: the released head computes ``conv_seg(dropout(x))``
            but pools and classifies x itself.
        backend: as for :func:`class_pool`.

    Returns:
        ``(logits, static_logits)``, both (B, K, H, W) in x's dtype.
    """
    x, seg_weight, seg_bias = _autocast(x, seg_weight, seg_bias)
    if channel_mask is not None:
        (channel_mask,) = _autocast(channel_mask)
    check_context_aware_classifier(
        x,
        seg_weight,
        seg_bias,
        proj_in_weight,
        proj_out_weight,
        proj_out_bias,
        scale,
        eps,
        channel_mask,
    )
    class_weight = seg_weight.flatten(1)
    guide_weight = class_weight
    if channel_mask is not None:
        guide_weight = class_weight.unsqueeze(0) * channel_mask.unsqueeze(1)
    kernel = registry.kernel("context_aware_classifier", x.device.type, backend)
    logits, static_logits, *_ = kernel(
        x,
        guide_weight,
        seg_bias,
        class_weight,
        proj_in_weight,
        proj_out_weight,
        proj_out_bias,
        float(scale),
        float(eps),
    )
    return logits, static_logits
