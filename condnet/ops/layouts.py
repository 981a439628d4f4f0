"""The projection's layouts: how a conditional classifier stores its projection,
and how the projection's output is read as per-image classifiers.

Every kernel sees one canonical form: a (C + 1) x C matrix per class,
``A`` (K, C + 1, C) and ``a`` (K, C + 1), giving ``theta[b, k] = A[k] f[b, k] + a[k]``
(B, K, C + 1). A layout says two things, both owned here:

- how the stored parameters are viewed as ``A`` and ``a``
  (:func:`canonical_projection`, views, never copies);
- how theta is read as the per-image weights (B, K, C) and biases (B, K)
  (:func:`split_theta`, views; :func:`join_theta` is its gradient).

The layouts:

``"grouped_conv"``
    The released CondNet model's storage: a grouped 1x1 conv (groups=K,
    C*K inputs -> C*K + K outputs), weight (C*K + K, C, 1, 1) (or
    (C*K + K, C)) and bias (C*K + K,). Group k applies a (C + 1) x C matrix to
    class k's features, so the weight *is* ``A`` reshaped. The conv's outputs,
    read class-major, are split as the released code does: the first C*K are
    the weights, the last K the biases. Group boundaries therefore do not line
    up with classes (all K biases come from the last group); released
    checkpoints were trained with exactly this.
``"per_class"``
    ``A`` and ``a`` stored as they are (``filter_weight``, ``filter_bias``);
    class k's weights are theta[:, k, :C], its bias theta[:, k, C].

``"official"``, this layout's former name, is accepted with a FutureWarning.
The C++ composite op (csrc/composite/conditional_classifier.cpp) reads theta
the same way, by the same names.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

__all__ = [
    "GROUPED_CONV",
    "LAYOUTS",
    "PER_CLASS",
    "StoredShapes",
    "canonical_projection",
    "check_layout",
    "join_theta",
    "split_theta",
    "stored_projection_shapes",
]

GROUPED_CONV = "grouped_conv"
PER_CLASS = "per_class"
LAYOUTS = (GROUPED_CONV, PER_CLASS)

# Former names, still accepted: name -> layout.
_RENAMED = {"official": GROUPED_CONV}


def check_layout(layout: object, name: str = "layout") -> str:
    """``layout`` as one of :data:`LAYOUTS`; a former name is translated with a
    FutureWarning, anything else is a ValueError naming the argument ``name``."""
    if layout in LAYOUTS:
        return layout
    if isinstance(layout, str) and layout in _RENAMED:
        new = _RENAMED[layout]
        warnings.warn(
            f"{name}={layout!r} is now called {new!r} (the released model's grouped-conv "
            f"storage); {layout!r} will stop being accepted in a future release",
            FutureWarning,
            stacklevel=3,
        )
        return new
    raise ValueError(f"{name} must be one of {LAYOUTS}; got {layout!r}")


def _unknown(layout: object) -> ValueError:
    return ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")


class StoredShapes(NamedTuple):
    """The shapes a layout stores its projection in, for K classes and C channels."""

    weight: list[tuple[int, ...]]  # accepted weight shapes; modules store the first
    bias: tuple[int, ...]
    weight_meaning: str  # the shapes spelled out, for error messages
    bias_meaning: str


def stored_projection_shapes(layout: str, num_classes: int, channels: int) -> StoredShapes:
    """The projection's stored shapes in ``layout`` for K classes and C channels."""
    K, C = num_classes, channels
    if layout == PER_CLASS:
        return StoredShapes(
            [(K, C + 1, C)],
            (K, C + 1),
            f"(K, C+1, C) = {(K, C + 1, C)}",
            f"(K, C+1) = {(K, C + 1)}",
        )
    if layout != GROUPED_CONV:
        raise _unknown(layout)
    rows = C * K + K
    return StoredShapes(
        [(rows, C, 1, 1), (rows, C)],
        (rows,),
        f"(C*K + K, C, 1, 1) = {(rows, C, 1, 1)} (or {(rows, C)})",
        f"(C*K + K,) = {(rows,)}",
    )


def canonical_projection(
    proj_weight: torch.Tensor, proj_bias: torch.Tensor | None, layout: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stored projection as the per-class ``A`` (K, C + 1, C) and ``a``
    (K, C + 1) the kernels take. Views, no copies."""
    if layout == PER_CLASS:
        return proj_weight, proj_bias
    if layout != GROUPED_CONV:
        raise _unknown(layout)
    C = proj_weight.shape[1]
    A = proj_weight.reshape(num_classes, C + 1, C)
    a = None if proj_bias is None else proj_bias.reshape(num_classes, C + 1)
    return A, a


def split_theta(theta: torch.Tensor, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-image classifier ``(weight (B, K, C), bias (B, K))`` read off
    theta (B, K, C + 1), as views."""
    B, K, J = theta.shape
    C = J - 1
    if layout == PER_CLASS:
        return theta[..., :C], theta[..., C]
    if layout != GROUPED_CONV:
        raise _unknown(layout)
    flat = theta.reshape(B, K * J)
    return flat[:, : K * C].reshape(B, K, C), flat[:, K * C :]


def join_theta(grad_weight: torch.Tensor, grad_bias: torch.Tensor, layout: str) -> torch.Tensor:
    """The gradient of theta (B, K, C + 1) from those of the two views
    :func:`split_theta` makes (they partition theta, so this is a placement)."""
    B, K, C = grad_weight.shape
    if layout == PER_CLASS:
        return torch.cat([grad_weight, grad_bias[:, :, None]], dim=2)
    if layout != GROUPED_CONV:
        raise _unknown(layout)
    return torch.cat([grad_weight.reshape(B, K * C), grad_bias], dim=1).reshape(B, K, C + 1)
