"""The public ops: argument checks, autocast, and the choice of backend."""

from __future__ import annotations

import torch

from . import reference
from .backend import resolve
from .validation import check_class_pool, check_dynamic_classify


def _autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Under autocast, casts floating inputs to the autocast dtype, as a
    conv or matmul would; so fp32 parameters meet bf16 features cleanly."""
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
