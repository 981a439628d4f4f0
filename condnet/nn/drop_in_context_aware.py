"""CAC's context-aware classifier as it sits inside a host network, in place of
the ``nn.Conv2d`` that ``make_conditional(model, variant="cac")`` replaced, and
:func:`cac_auxiliary_loss`, which takes what its training forward kept.

The host calls the classifier like the conv (``logits = module(features)``)
and never passes the label, so the oracle cannot be computed in the forward.
The module keeps its last training forward's features, logits and static
logits instead (the features are kept by autograd for the backward anyway);
:func:`cac_auxiliary_loss` computes the oracle from them and the label, then
CAC's static, oracle and distillation losses. The host's forward signature
stays as it was.
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
from torch import nn

from condnet import ops

from .cac_losses import cac_losses
from .conditional_classifier import check_features
from .context_aware_classifier import (
    ContextAwareClassifier,
    ContextAwareOutput,
    generator_weights,
)
from .drop_in import check_replaceable, conv_geometry, unfold_patches

__all__ = [
    "DropInContextAwareClassifier",
    "cac_auxiliary_loss",
    "context_aware_classifiers",
]


class _Recorded(NamedTuple):
    """What a training forward keeps for :func:`cac_auxiliary_loss`."""

    features: torch.Tensor  # the classifier's input (unfolded for a k x k conv)
    logits: torch.Tensor
    static_logits: torch.Tensor


class DropInContextAwareClassifier(ContextAwareClassifier):
    """A :class:`ContextAwareClassifier` with the interface of ``nn.Conv2d(C, K, k)``.

    ``module(features)`` returns the context-aware logits, as the conv
    returned its logits. In training mode with gradients enabled it also keeps
    that forward's features, logits and static logits (with their graph) until
    :func:`cac_auxiliary_loss` takes them, the next training forward replaces
    them, or ``eval()`` drops them.

    A k x k conv (k > 1; segmentation_models_pytorch's ``Unet`` ends in a 3x3
    one) becomes a context-aware classifier over k x k patches: the features
    are unfolded to C*k*k channels (``F.unfold`` with the conv's stride,
    padding and dilation), so ``conv_seg`` holds the conv's k x k kernel as a
    1x1 one over patches, the class centres are centres of patches and the
    cosine is taken between patches. The generators grow with (C*k*k)**2.

    Args:
        in_channels: C, the channels of the features (before unfolding).
        num_classes: K.
        dropout: ``Dropout2d`` probability on the static logits' input (the
            released head's dropout; the centres and the cosine see the
            features themselves). 0 by default, since the host network keeps
            its own dropout. For a k x k conv, whole feature channels are
            dropped (all k*k entries of a channel together), as a
            ``Dropout2d`` before the conv would.
        kernel_size, stride, padding, dilation: those of the conv replaced.

    The base class's ``in_channels`` is C*k*k (what its ops see);
    :attr:`feature_channels` is C. The generators' hidden width is
    ``in_channels // 2`` (the released width; rounded down when odd).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        dropout: float = 0.0,
        kernel_size: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
    ) -> None:
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int; got {in_channels!r}")
        geometry = conv_geometry(kernel_size, stride, padding, dilation)
        (kh, kw) = geometry[0]
        channels = in_channels * kh * kw
        super().__init__(
            channels, num_classes, dropout=dropout, hidden_channels=max(1, channels // 2)
        )
        self.feature_channels = in_channels
        self.kernel_size, self.stride, self.padding, self.dilation = geometry
        self.patches = geometry[:3] != ((1, 1), (1, 1), (0, 0))
        self._recorded: _Recorded | None = None

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, init: str = "from_classifier", dropout: float = 0.0
    ) -> DropInContextAwareClassifier:
        """The context-aware classifier to put in place of ``conv``, on its
        device and dtype. ``init="from_classifier"`` copies the conv's weight
        and bias into ``conv_seg`` (a conv without bias gives a zero bias);
        ``"random"`` keeps the released initialisation. ``proj`` and
        ``apd_proj`` are freshly initialised either way."""
        check_replaceable(conv, init, "a context-aware classifier")
        with torch.device(conv.weight.device):
            module = cls(
                conv.in_channels,
                conv.out_channels,
                dropout=dropout,
                kernel_size=cast(tuple[int, int], conv.kernel_size),
                stride=cast(tuple[int, int], conv.stride),
                padding=cast(tuple[int, int], conv.padding),
                dilation=cast(tuple[int, int], conv.dilation),
            )
        module = module.to(conv.weight.dtype)
        if init == "from_classifier":
            with torch.no_grad():
                # F.unfold lays a patch out channel-major, as the conv's weight is.
                seg = module.conv_seg
                seg.weight.copy_(conv.weight.reshape(seg.weight.shape))
                assert seg.bias is not None  # built with a bias
                seg.bias.copy_(conv.bias if conv.bias is not None else torch.zeros_like(seg.bias))
        return module.train(conv.training)

    def train(self, mode: bool = True) -> DropInContextAwareClassifier:
        if not mode:
            self._recorded = None
        return super().train(mode)

    @property
    def recorded(self) -> bool:
        """Whether a training forward's outputs wait for :func:`cac_auxiliary_loss`."""
        return self._recorded is not None

    def take_recorded(self) -> _Recorded | None:
        """The last training forward's features, logits and static logits, forgotten
        here (so the module no longer holds their graph); None if there are none."""
        recorded, self._recorded = self._recorded, None
        return recorded

    def channel_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """Dropout2d multipliers over the host's feature channels (B, C), each
        repeated over its k*k unfolded entries; None in eval or without dropout."""
        if not self.training or self.dropout == 0.0:
            return None
        keep = 1.0 - self.dropout
        shape = (x.shape[0], self.feature_channels)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep) / keep
        taps = self.in_channels // self.feature_channels
        return mask.repeat_interleave(taps, dim=1) if taps > 1 else mask

    def forward(  # type: ignore[override]  # the conv's interface: features only
        self, feat: torch.Tensor
    ) -> torch.Tensor:
        check_features(feat, self.feature_channels, "this classifier replaced a conv with")
        x = feat
        if self.patches:
            x = unfold_patches(feat, self.kernel_size, self.stride, self.padding, self.dilation)
        seg = self.conv_seg
        # The base class's fused op, whose static logits the base class's
        # forward drops without a label; the auxiliary losses need them.
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
        if self.training and torch.is_grad_enabled():
            self._recorded = _Recorded(x, logits, static_logits)
        return logits

    def extra_repr(self) -> str:
        text = f"feature_channels={self.feature_channels}, " + super().extra_repr()
        if self.patches:
            text += (
                f", kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}"
            )
        return text


def context_aware_classifiers(
    model: nn.Module,
) -> list[tuple[str, DropInContextAwareClassifier]]:
    """``(name, module)`` of every classifier that ``make_conditional(...,
    variant="cac")`` put in ``model``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, DropInContextAwareClassifier)
    ]


def cac_auxiliary_loss(
    model: nn.Module, label: torch.Tensor, *, ignore_index: int = 255
) -> torch.Tensor:
    """CAC's auxiliary losses for every context-aware classifier in ``model``.

    Call it after the training forward and add it to the host library's own
    loss, with weight 1 as released (``loss = host_loss +
    cac_auxiliary_loss(model, label)``); the host's cross-entropy on the
    network's output plays the part of CAC's main loss. For each classifier,
    the oracle is computed from its last training forward's features and
    ``label`` (:meth:`ContextAwareClassifier.oracle_logits`), and the term is
    ``static + oracle + distill`` of :func:`condnet.nn.cac_losses` (the
    default numerics, ``released=False``); the result is the sum over
    classifiers.

    The classifiers hand over what they kept: a second call before the next
    training forward raises, and once the step's ``backward`` has run nothing
    of the step is left alive in the model. ``model`` may be the
    ``torch.compile`` wrapper (tested with ``fullgraph=True``): the recorded
    tensors leave the compiled graph with the output. The oracle's generator
    ``apd_proj`` runs here, outside the forward, and gets its gradient in the
    same backward as the host loss; so ``DistributedDataParallel`` works with
    its default ``find_unused_parameters=False`` or with ``static_graph=True``,
    not with ``find_unused_parameters=True`` (which, searching from the
    forward's outputs, takes ``apd_proj`` for unused).

    Args:
        model: a network converted by ``make_conditional(..., variant="cac")``.
        label: int64 class indices (B, H, W) or (B, 1, H, W) at image
            resolution, ``ignore_index`` where no class counts.
        ignore_index: the label value of ignored pixels.

    Returns:
        A scalar, float32 (float64 for float64 features), attached to the graph.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    classifiers = context_aware_classifiers(model)
    if not classifiers:
        raise ValueError(
            "model has no context-aware classifier made by "
            "condnet.nn.make_conditional(model, variant='cac'); convert it first (a model "
            "converted with variant='condnet' takes condnet.nn.guidance_loss)"
        )
    missing = [name for name, module in classifiers if not module.recorded]
    if missing:
        raise ValueError(
            f"no training forward recorded for {missing}: cac_auxiliary_loss needs a forward "
            "in training mode with gradients enabled since the last call (each forward's "
            "outputs are used once)"
        )
    terms = []
    for _, module in classifiers:
        recorded = cast(_Recorded, module._recorded)  # all present, checked above
        oracle = module.oracle_logits(recorded.features, label, ignore_index)
        out = ContextAwareOutput(recorded.logits, recorded.static_logits, oracle, module.released)
        losses = cac_losses(out, label, ignore_index)
        terms.append(losses["static"] + losses["oracle"] + losses["distill"])
    # Taken only once every term is computed, so a bad label leaves them in place.
    for _, module in classifiers:
        module.take_recorded()
    return sum(terms[1:], terms[0])
