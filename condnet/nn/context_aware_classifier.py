"""CAC's context-aware classifier as an ``nn.Module`` (Tian et al., "Learning
Context-aware Classifier for Semantic Segmentation", AAAI 2023), with the
released head's parameter names so that released checkpoints load."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from condnet import ops
from condnet.ops.cac import DEFAULT_EPS, MASS_EPS

from .conditional_classifier import check_features
from .loss_inputs import as_label, check_label_values, resize_label

__all__ = ["ContextAwareClassifier", "ContextAwareOutput", "generator_weights"]

# The oracle's norms are F.normalize's in the released code (its default clamp),
# so they are clamped in both modes; only the main logits divide exactly there.
ORACLE_EPS = 1e-12


@dataclass(frozen=True)
class ContextAwareOutput:
    """A training forward's outputs, all (B, K, h, w) at feature resolution.

    Attributes:
        logits: the context-aware logits (the prediction).
        static_logits: ``conv_seg`` on the (dropped-out) features.
        oracle_logits: the oracle's logits, from the label's class means.
        released: the mode of the module that made them; :func:`condnet.nn.cac_losses`
            reads it to pick the released or the default losses.
    """

    logits: torch.Tensor
    static_logits: torch.Tensor
    oracle_logits: torch.Tensor
    released: bool


def _projection(channels: int, hidden: int) -> nn.Sequential:
    """The generator: Linear(2C -> Hd, no bias), ReLU, Linear(Hd -> C)."""
    return nn.Sequential(
        nn.Linear(2 * channels, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, channels)
    )


def generator_weights(generator: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A generator's (first weight (Hd, 2C), last weight (C, Hd), last bias (C,)),
    the arguments :func:`condnet.ops.context_aware_classifier` takes."""
    first, last = generator[0], generator[2]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)  # built so
    return first.weight, last.weight, last.bias


class ContextAwareClassifier(nn.Module):
    """CAC's classifier: per-image cosine classifiers generated from each
    image's soft class centres.

    ``logits = clf(x)`` maps features (B, C, H, W) to logits (B, K, H, W).
    In training, ``clf(x, label=label)`` also computes the oracle and returns a
    :class:`ContextAwareOutput`, the input of :func:`condnet.nn.cac_losses`;
    without a label it returns the logits only.

    Steps (one fused op, :func:`condnet.ops.context_aware_classifier`, whose
    backward writes x's gradient once): static logits ``conv_seg(dropout(x))``;
    their softmax weights each class's centre, pooled from x itself (not the
    dropped-out copy, as released); ``proj([centre; conv_seg row])`` is that
    image's classifier; the logits are ``scale`` x the cosine between it and x.

    The oracle (training only): the label, nearest-resized to the features;
    each class it holds has its mean feature put in place of that class's row
    of ``conv_seg``'s weight (detached); ``apd_proj`` on ``[that; conv_seg
    weight]``; ``scale`` x cosine against x (:func:`condnet.ops.cosine_classify`).

    Args:
        in_channels: C.
        num_classes: K.
        scale: the cosine logits' scale; 15 as released.
        dropout: ``Dropout2d`` probability on the static logits' input
            (0 disables it); 0.1 as released.
        released: True reproduces the released numerics exactly; False (the
            default) fixes the released code's defects, below.
        hidden_channels: Hd, the generators' hidden width; ``in_channels // 2``
            (the released width) when None, which needs an even ``in_channels``
            (an odd one would silently round; pass Hd explicitly then).

    What the default (``released=False``) changes, and why:

    - The oracle is per image: a class's mean feature is taken over that
      image's pixels only, and a class absent from an image keeps
      ``conv_seg``'s row. Released, one mean is taken over the whole batch, so
      each image's oracle target holds other images' features: an image's
      loss depends on what else is in its batch (and on the batch size), and
      the oracle sees a class in an image where it is absent.
    - The norms of the features and of the generated classifiers are clamped
      at 1e-12 (``F.normalize``'s policy): released, ``get_pred`` divides by
      the norms exactly, so one zero feature vector (all channels zero after
      the head's ReLU) gives NaN logits at its pixel, a NaN loss and NaN
      gradients for every parameter.
      The oracle already used ``F.normalize``, so it is the same in both modes.

    In both modes: the class centres divide by the soft mass + 1e-12 and the
    oracle's class means by the pixel count + 1e-12 (as released; the count is
    at least 1, so it does not matter). The losses' own differences are listed
    by :func:`condnet.nn.cac_losses`. Released details that are not numerics:
    the released head takes ``conv_seg.weight.squeeze()``, which breaks for
    K = 1 (this module flattens instead), and indexes with any label value
    but 255 (here a value outside [0, K) that is not ``ignore_index`` raises a
    ValueError naming ``label``; the check is skipped while compiling, as it
    syncs with the host).

    Attributes:
        backend: the backend of this module's ops, None (the default) to
            follow :func:`condnet.ops.use_backend` and ``CONDNET_BACKEND``; set
            it for every classifier of a model with :func:`condnet.nn.set_backend`.

    Initialisation follows the released head: ``conv_seg`` weight normal with
    std 0.01 and zero bias (mmseg's ``init_cfg``), the linear layers PyTorch's
    default.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        scale: float = 15.0,
        dropout: float = 0.1,
        released: bool = False,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if hidden_channels is None:
            if in_channels % 2:
                raise ValueError(
                    f"in_channels={in_channels} is odd, so the default hidden_channels "
                    f"(in_channels / 2) is not a whole number; pass hidden_channels (the "
                    f"released head uses in_channels // 2 = {in_channels // 2})"
                )
            hidden_channels = in_channels // 2
        if (
            isinstance(hidden_channels, bool)
            or not isinstance(hidden_channels, int)
            or hidden_channels < 1
        ):
            raise ValueError(f"hidden_channels must be a positive int; got {hidden_channels!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ValueError(f"scale must be a positive finite number; got {scale!r}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number; got {scale!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout!r}")
        if not isinstance(released, bool):
            raise ValueError(f"released must be a bool; got {released!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.hidden_channels = hidden_channels
        self.scale = float(scale)
        self.dropout = float(dropout)
        self.released = released
        self.backend: str | None = None  # see condnet.nn.set_backend
        self.conv_seg = nn.Conv2d(in_channels, num_classes, 1)
        self.proj = _projection(in_channels, hidden_channels)
        self.apd_proj = _projection(in_channels, hidden_channels)
        self.reset_parameters()

    @property
    def eps(self) -> float:
        """The main logits' norm clamp: 0 (exact division) released, else 1e-12."""
        return 0.0 if self.released else DEFAULT_EPS

    def reset_parameters(self) -> None:
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        assert self.conv_seg.bias is not None  # built with a bias
        nn.init.zeros_(self.conv_seg.bias)
        for generator in (self.proj, self.apd_proj):
            for layer in generator:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    def channel_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """This forward's ``Dropout2d`` multipliers (B, C), 0 or 1/(1-p) in x's
        dtype; None in eval mode or without dropout."""
        if not self.training or self.dropout == 0.0:
            return None
        keep = 1.0 - self.dropout
        mask = torch.empty(x.shape[:2], dtype=x.dtype, device=x.device).bernoulli_(keep)
        return mask / keep

    def forward(
        self, x: torch.Tensor, label: torch.Tensor | None = None, *, ignore_index: int = 255
    ) -> torch.Tensor | ContextAwareOutput:
        """Logits (B, K, H, W); in training with ``label`` (int64 class indices,
        (B, H', W') or (B, 1, H', W') at any size, ``ignore_index`` where no
        class counts) a :class:`ContextAwareOutput`."""
        check_features(x, self.in_channels, "this classifier expects")
        if label is not None and not self.training:
            raise ValueError(
                "label is given in eval mode: only training computes the oracle; call "
                "clf(x) for the logits, or clf.train() first"
            )
        seg = self.conv_seg
        logits, static_logits = ops.context_aware_classifier(
            x,
            seg.weight,
            seg.bias,
            *generator_weights(self.proj),
            scale=self.scale,
            eps=self.eps,
            channel_mask=self.channel_mask(x),
            backend=self.backend,
        )
        if label is None:
            return logits
        oracle_logits = self.oracle_logits(x, label, ignore_index)
        return ContextAwareOutput(logits, static_logits, oracle_logits, self.released)

    def oracle_logits(
        self, x: torch.Tensor, label: torch.Tensor, ignore_index: int = 255
    ) -> torch.Tensor:
        """The oracle's logits (B, K, H, W): per image by default, per batch released."""
        label = as_label(label)
        if label.shape[0] != x.shape[0]:
            raise ValueError(f"label has batch size {label.shape[0]}; x has {x.shape[0]}")
        K = self.num_classes
        if not torch.compiler.is_compiling():
            # The check syncs with the host, which a fullgraph compile cannot hold.
            check_label_values(label, K, ignore_index)
        label = resize_label(label, x.shape[-2:]).flatten(1)  # (B, N)
        weight = self.conv_seg.weight.flatten(1)  # (K, C)
        # Means of features in float32 for 16-bit x (a pixel count in bfloat16
        # is exact only to 256), outside autocast so the sums stay so.
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.autocast(x.device.type, enabled=False):
            valid = label != ignore_index
            onehot = torch.zeros(label.shape[0], K, label.shape[1], dtype=compute, device=x.device)
            onehot.scatter_(1, torch.where(valid, label, 0)[:, None], valid[:, None].to(compute))
            sums = onehot @ x.flatten(2).transpose(1, 2).to(compute)  # (B, K, C)
            counts = onehot.sum(-1)  # (B, K)
            if self.released:  # one oracle for the batch
                sums, counts = sums.sum(0), counts.sum(0)
            means = sums / (counts + MASS_EPS)[..., None]
            rows = torch.where(counts[..., None] > 0, means, weight.detach().to(compute))
        proto = weight if rows.dim() == 2 else weight.expand(rows.shape[0], -1, -1)
        generated = self.apd_proj(torch.cat([rows.to(weight.dtype), proto], dim=-1))
        return ops.cosine_classify(
            x, generated.to(x.dtype), scale=self.scale, eps=ORACLE_EPS, backend=self.backend
        )

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
            f"hidden_channels={self.hidden_channels}, scale={self.scale}, "
            f"dropout={self.dropout}, released={self.released}, backend={self.backend!r}"
        )
