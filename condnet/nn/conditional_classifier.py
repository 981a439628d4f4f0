"""The conditional classifier as an ``nn.Module``: a drop-in replacement for
the last ``nn.Conv2d(C, K, 1)`` of any fully convolutional segmentation net."""

from __future__ import annotations

import math

import torch
from torch import nn

from condnet import ops
from condnet.ops.layouts import LAYOUTS, check_layout

__all__ = ["LAYOUTS", "ConditionalClassifier", "check_features"]


def check_features(feat: object, channels: int, expects: str) -> None:
    """``feat`` must be a (B, ``channels``, H, W) tensor; the error says who ``expects``
    it ("this classifier expects": ``in_channels=...``)."""
    if not isinstance(feat, torch.Tensor) or feat.dim() != 4:
        shape = tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__
        raise ValueError(f"feat must be a (B, C, H, W) tensor; got {shape}")
    if feat.shape[1] != channels:
        raise ValueError(f"feat has {feat.shape[1]} channels; {expects} in_channels={channels}")


class ConditionalClassifier(nn.Module):
    """CondNet's classifier: per-image kernels generated from class features.

    ``logits = clf(feat)`` maps features (B, C, H, W) to logits (B, K, H, W),
    like the 1x1 conv it replaces. ``logits, guide_logits = clf(feat,
    return_guide=True)`` also returns the guide logits (B, K, H, W) that the
    guidance (Dice) loss needs, from the same forward pass.

    Steps: optional ``Dropout2d`` on the features; guide logits and class
    features (:func:`condnet.ops.class_pool`); a projection of each class's
    features to that class's weights and bias; the per-image 1x1 classifier
    (:func:`condnet.ops.dynamic_classify`). The three run as one fused op
    (:func:`condnet.ops.conditional_classifier`), whose backward writes the
    features' gradient once; under autocast the projection's float32 weights
    are read as they are, not cast.

    Args:
        in_channels: C, the feature channels.
        num_classes: K.
        layout: ``"grouped_conv"`` stores the projection as the released model's
            grouped 1x1 conv (``filter_project``, groups=K, C*K inputs ->
            C*K + K outputs) and reproduces its output split exactly; released
            weights load once their ``.conv`` level is dropped
            (:func:`condnet.models.load_released` does that). ``"per_class"`` is the clean
            layout: one (C+1) x C matrix and (C+1) bias per class
            (``filter_weight``, ``filter_bias``); the same parameter count.
        dropout: ``Dropout2d`` probability on the features (0 disables it);
            0.1 as in the released heads.

    Attributes:
        backend: the backend of this module's fused ops, None (the default) to
            follow :func:`condnet.ops.use_backend` and ``CONDNET_BACKEND``. It
            is not a constructor argument: set it after building, for every
            classifier of a model at once, with :func:`condnet.nn.set_backend`.
            Set, it wins over ``use_backend`` blocks and the environment.

    Initialisation follows the released model (mmcv ``ConvModule``): Kaiming
    normal weights (fan_out, ReLU gain), zero biases. The per-class layout
    uses the same standard deviation as the grouped-conv one.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        layout: str = "grouped_conv",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        layout = check_layout(layout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        C, K = in_channels, num_classes
        self.in_channels, self.num_classes = C, K
        self.layout = layout
        self.backend: str | None = None  # see condnet.nn.set_backend
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.guidance_project = nn.Conv2d(C, K, 1)
        if layout == "grouped_conv":
            # Held as the released conv so state dicts match; its forward is
            # never run (ops.project_grouped_conv computes the same thing faster).
            self.filter_project = nn.Conv2d(C * K, C * K + K, 1, groups=K)
        else:
            self.filter_weight = nn.Parameter(torch.empty(K, C + 1, C))
            self.filter_bias = nn.Parameter(torch.empty(K, C + 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        C, K = self.in_channels, self.num_classes
        nn.init.kaiming_normal_(self.guidance_project.weight, mode="fan_out", nonlinearity="relu")
        assert self.guidance_project.bias is not None  # built with a bias
        nn.init.zeros_(self.guidance_project.bias)
        if self.layout == "grouped_conv":
            nn.init.kaiming_normal_(self.filter_project.weight, mode="fan_out", nonlinearity="relu")
            assert self.filter_project.bias is not None  # built with a bias
            nn.init.zeros_(self.filter_project.bias)
        else:
            # The grouped conv's fan_out is its output count, K * (C + 1).
            nn.init.normal_(self.filter_weight, std=math.sqrt(2.0 / (K * (C + 1))))
            nn.init.zeros_(self.filter_bias)

    def projection_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The projection's weight and bias as the layout stores them."""
        if self.layout == "grouped_conv":
            assert self.filter_project.bias is not None  # built with a bias
            return self.filter_project.weight, self.filter_project.bias
        return self.filter_weight, self.filter_bias

    def project(self, class_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class features (B, K, C) -> per-image weights (B, K, C) and biases (B, K)."""
        project = (
            ops.project_grouped_conv if self.layout == "grouped_conv" else ops.project_per_class
        )
        return project(class_feats, *self.projection_parameters(), backend=self.backend)

    def forward(
        self, feat: torch.Tensor, return_guide: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        check_features(feat, self.in_channels, "this classifier expects")
        if self.dropout is not None:
            feat = self.dropout(feat)
        guide = self.guidance_project
        # One fused op: class_pool, the projection and dynamic_classify forward,
        # one op backward that writes the features' gradient once.
        logits, guide_logits = ops.conditional_classifier(
            feat,
            guide.weight.flatten(1),
            guide.bias,
            *self.projection_parameters(),
            layout=self.layout,
            backend=self.backend,
        )
        return (logits, guide_logits) if return_guide else logits

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
            f"layout={self.layout!r}, backend={self.backend!r}"
        )
