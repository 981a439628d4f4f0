"""Argument checks for the public ops: a ValueError or TypeError that names the
argument and says what was expected and what was given."""

from __future__ import annotations

import torch

from .layouts import check_layout, stored_projection_shapes


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_features(x: object) -> torch.Tensor:
    x = _check_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (B, C, H, W), got shape {_shape(x)}")
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one channel, got shape {_shape(x)}")
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"x must have at least one pixel (H*W > 0), got shape {_shape(x)}")
    return x


def check_like_x(t: object, name: str, x: torch.Tensor, shape: tuple, meaning: str) -> None:
    """``t`` is a floating tensor of ``shape`` with x's dtype and device.

    ``meaning`` spells out the expected shape, e.g. "(K, C) with C=512 from x".
    """
    t = _check_tensor(t, name)
    if _shape(t) != tuple(shape):
        raise ValueError(f"{name} must have shape {meaning}, got {_shape(t)}")
    if t.dtype != x.dtype:
        raise TypeError(f"{name} must have x's dtype {x.dtype}, got {t.dtype}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")


def check_class_pool(x, guide_weight, guide_bias) -> None:
    x = check_features(x)
    C = x.shape[1]
    guide_weight = _check_tensor(guide_weight, "guide_weight")
    if guide_weight.dim() != 2 or guide_weight.shape[0] == 0:
        raise ValueError(
            f"guide_weight must have shape (K, C) with K >= 1 and C={C} from x, "
            f"got {_shape(guide_weight)}"
        )
    K = guide_weight.shape[0]
    check_like_x(guide_weight, "guide_weight", x, (K, C), f"(K, C) with C={C} from x")
    if guide_bias is not None:
        check_like_x(guide_bias, "guide_bias", x, (K,), f"(K,) with K={K} from guide_weight")


def check_dynamic_classify(x, weight, bias) -> None:
    x = check_features(x)
    B, C = x.shape[:2]
    weight = _check_tensor(weight, "weight")
    if weight.dim() != 3 or weight.shape[1] == 0:
        raise ValueError(
            f"weight must have shape (B, K, C) with B={B} and C={C} from x and K >= 1, "
            f"got {_shape(weight)}"
        )
    K = weight.shape[1]
    check_like_x(weight, "weight", x, (B, K, C), f"(B, K, C) with B={B} and C={C} from x")
    if bias is not None:
        check_like_x(bias, "bias", x, (B, K), f"(B, K) with B={B} from x and K={K} from weight")


_HALF = (torch.float16, torch.bfloat16)


def check_class_feats(class_feats: object) -> torch.Tensor:
    class_feats = _check_tensor(class_feats, "class_feats")
    if class_feats.dim() != 3 or 0 in class_feats.shape[1:]:
        raise ValueError(
            f"class_feats must have shape (B, K, C) with K, C >= 1, got {_shape(class_feats)}"
        )
    return class_feats


def check_projection(
    proj_weight: object,
    proj_bias: object,
    layout: str,
    K: int,
    C: int,
    feats_dtype: torch.dtype,
    device: torch.device,
    source: str,
) -> None:
    """The projection's parameters for K classes of C channels, as ``layout``
    stores them (:func:`condnet.ops.layouts.stored_projection_shapes`). Their
    dtype is the class features' or, for float16/bfloat16 features, float32
    (master weights). ``source`` says where K and C come
    from, for the messages."""
    proj_weight = _check_tensor(proj_weight, "proj_weight")
    stored = stored_projection_shapes(layout, K, C)
    if _shape(proj_weight) not in stored.weight:
        raise ValueError(
            f"proj_weight must have shape {stored.weight_meaning} {source}, "
            f"got {_shape(proj_weight)}"
        )
    if proj_weight.dtype != feats_dtype and not (
        proj_weight.dtype == torch.float32 and feats_dtype in _HALF
    ):
        raise TypeError(
            f"proj_weight must have the class features' dtype {feats_dtype} (or float32 "
            f"for float16/bfloat16 features), got {proj_weight.dtype}"
        )
    if proj_weight.device != device:
        raise ValueError(f"proj_weight must be on device {device}, got {proj_weight.device}")
    if proj_bias is None:
        return
    proj_bias = _check_tensor(proj_bias, "proj_bias")
    if _shape(proj_bias) != stored.bias:
        raise ValueError(
            f"proj_bias must have shape {stored.bias_meaning}, got {_shape(proj_bias)}"
        )
    if proj_bias.dtype != proj_weight.dtype:
        raise TypeError(
            f"proj_bias must have proj_weight's dtype {proj_weight.dtype}, got {proj_bias.dtype}"
        )
    if proj_bias.device != device:
        raise ValueError(f"proj_bias must be on device {device}, got {proj_bias.device}")


def check_project(class_feats, proj_weight, proj_bias, layout: str) -> None:
    class_feats = check_class_feats(class_feats)
    _, K, C = class_feats.shape
    source = f"for class_feats of shape (B, K, C) = {_shape(class_feats)}"
    check_projection(
        proj_weight, proj_bias, layout, K, C, class_feats.dtype, class_feats.device, source
    )


def check_conditional_classifier(x, guide_weight, guide_bias, proj_weight, proj_bias, layout):
    """class_pool's arguments, then the projection's for the class features
    (B, K, C) that class_pool makes of them."""
    check_class_pool(x, guide_weight, guide_bias)
    layout = check_layout(layout)
    K, C = guide_weight.shape
    source = f"for K={K} classes (guide_weight) of C={C} channels (x)"
    check_projection(proj_weight, proj_bias, layout, K, C, x.dtype, x.device, source)
