"""Argument checks for CAC's public ops (:mod:`condnet.ops.functional`): a
ValueError or TypeError that names the argument and says what was expected."""

from __future__ import annotations

import math

import torch

from .validation import _HALF, _check_tensor, _shape, check_features, check_like_x


def check_per_image_weight(x: torch.Tensor, weight: object, name: str) -> int:
    """``weight`` is (K, C) or, one per image, (B, K, C), like x; returns K."""
    B, C = x.shape[:2]
    weight = _check_tensor(weight, name)
    if weight.dim() not in (2, 3) or weight.shape[-2] == 0:
        raise ValueError(
            f"{name} must have shape (K, C) or (B, K, C) with K >= 1, B={B} and C={C} from x, "
            f"got {_shape(weight)}"
        )
    K = weight.shape[-2]
    shape = (K, C) if weight.dim() == 2 else (B, K, C)
    check_like_x(weight, name, x, shape, f"(K, C) or (B, K, C) with B={B} and C={C} from x")
    return K


def check_eps(eps: object) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    return float(eps)


def check_scale(scale: object) -> float:
    # A comparison, not math.isfinite: torch.compile traces it for a symbolic scale.
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not abs(scale) < math.inf:
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    return float(scale)


def check_context_pool(x, guide_weight, guide_bias) -> None:
    x = check_features(x)
    K = check_per_image_weight(x, guide_weight, "guide_weight")
    if guide_bias is not None:
        check_like_x(guide_bias, "guide_bias", x, (K,), f"(K,) with K={K} from guide_weight")


def check_cosine_classify(x, weight, scale, eps) -> None:
    x = check_features(x)
    check_per_image_weight(x, weight, "weight")
    check_scale(scale)
    check_eps(eps)


def _check_generator_tensor(t: object, name: str, shape: tuple, meaning: str, x: torch.Tensor):
    t = _check_tensor(t, name)
    if _shape(t) != shape:
        raise ValueError(f"{name} must have shape {meaning}, got {_shape(t)}")
    if t.dtype != x.dtype and not (t.dtype == torch.float32 and x.dtype in _HALF):
        raise TypeError(
            f"{name} must have x's dtype {x.dtype} (or float32 for float16/bfloat16 x), "
            f"got {t.dtype}"
        )
    if t.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    return t


def check_context_aware_classifier(
    x, seg_weight, seg_bias, proj_in_weight, proj_out_weight, proj_out_bias, scale, eps, mask
) -> None:
    """``seg_weight`` is the static classifier (K, C) (or a conv's (K, C, 1, 1)),
    the generator's layers (Hd, 2C), (C, Hd) and (C,)."""
    x = check_features(x)
    B, C = x.shape[:2]
    seg_weight = _check_tensor(seg_weight, "seg_weight")
    if seg_weight.dim() == 4 and seg_weight.shape[2:] == (1, 1):
        seg_weight = seg_weight.flatten(1)
    if seg_weight.dim() != 2 or seg_weight.shape[0] == 0:
        raise ValueError(
            f"seg_weight must have shape (K, C) or (K, C, 1, 1) with K >= 1 and C={C} from x, "
            f"got {_shape(seg_weight)}"
        )
    K = seg_weight.shape[0]
    check_like_x(seg_weight, "seg_weight", x, (K, C), f"(K, C) or (K, C, 1, 1) with C={C} from x")
    if seg_bias is not None:
        check_like_x(seg_bias, "seg_bias", x, (K,), f"(K,) with K={K} from seg_weight")
    proj_in_weight = _check_tensor(proj_in_weight, "proj_in_weight")
    if proj_in_weight.dim() != 2 or proj_in_weight.shape[0] == 0:
        raise ValueError(
            f"proj_in_weight must have shape (Hd, 2C) with Hd >= 1 and 2C={2 * C} from x, "
            f"got {_shape(proj_in_weight)}"
        )
    hidden = proj_in_weight.shape[0]
    where = f"with Hd={hidden} from proj_in_weight and C={C} from x"
    _check_generator_tensor(
        proj_in_weight, "proj_in_weight", (hidden, 2 * C), f"(Hd, 2C) {where}", x
    )
    out_weight = _check_generator_tensor(
        proj_out_weight, "proj_out_weight", (C, hidden), f"(C, Hd) {where}", x
    )
    if out_weight.dtype != proj_in_weight.dtype:
        raise TypeError(
            f"proj_out_weight must have proj_in_weight's dtype {proj_in_weight.dtype}, "
            f"got {out_weight.dtype}"
        )
    if proj_out_bias is not None:
        bias = _check_generator_tensor(proj_out_bias, "proj_out_bias", (C,), f"(C,) {where}", x)
        if bias.dtype != proj_in_weight.dtype:
            raise TypeError(
                f"proj_out_bias must have proj_in_weight's dtype {proj_in_weight.dtype}, "
                f"got {bias.dtype}"
            )
    check_scale(scale)
    check_eps(eps)
    if mask is not None:
        check_like_x(mask, "channel_mask", x, (B, C), f"(B, C) with B={B} and C={C} from x")
