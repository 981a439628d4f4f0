"""Argument checks for the public ops: a ValueError or TypeError that names the
argument and says what was expected and what was given."""

from __future__ import annotations

import torch


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
