"""Backbone + decode head (+ auxiliary head) as one model: mmseg's
``EncoderDecoder``, in smp style (``model(img)`` gives the logits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from condnet.nn import ConditionalClassifier, ContextAwareClassifier

from . import inference
from .heads.layers import resize
from .inference_config import InferenceConfig, resolve_inference
from .losses import CondNetLoss

if TYPE_CHECKING:  # zoo builds Segmentors: imported for the annotation only
    from .zoo import ModelConfig

OUTPUTS = ("logits", "probs")


class Segmentor(nn.Module):
    """A segmentation network: ``backbone`` -> ``decode_head`` (+ ``auxiliary_head``).

    State-dict keys are ``backbone.*``, ``decode_head.*`` and
    ``auxiliary_head.*``, like the released mmseg ``EncoderDecoder``.

    Args:
        backbone: maps an image batch (B, 3, H, W) to a list of feature maps.
        decode_head: maps that list to ``(logits, guide_logits or None)``. A head
            with a :class:`~condnet.nn.ContextAwareClassifier` (CAC) is called
            as ``decode_head(feats, label=label)`` in training and returns the
            classifier's :class:`~condnet.nn.ContextAwareOutput` second.
        auxiliary_head: optional head of the same interface, used only by
            :meth:`forward_train` (its loss is an extra training signal).
        loss: the training objective (default :class:`CondNetLoss()`; a CAC
            model takes :class:`~condnet.models.CACLoss`).
        num_classes: K; defaults to ``decode_head.num_classes`` and must
            match it when given.
        test_cfg: defaults of :meth:`predict` (default: whole-image).

    Calls:
        ``model(img)`` -> logits (B, K, H, W) at the input size.
        ``model.forward_train(img, label)`` -> the loss dict of ``loss``
        (``loss`` is the total to back-propagate), from one forward pass.
        ``model.predict(img, ...)`` -> test-time inference (slide, multi-scale,
        flip), see :meth:`predict`.

    In training mode the heads' global pooling branches run BatchNorm on one
    value per image, so a batch needs at least 2 images (as in mmseg).
    """

    def __init__(
        self,
        backbone: nn.Module,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | None = None,
        loss: nn.Module | None = None,
        *,
        num_classes: int | None = None,
        test_cfg: InferenceConfig | None = None,
    ) -> None:
        super().__init__()
        head_classes = getattr(decode_head, "num_classes", None)
        if num_classes is None:
            num_classes = head_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
        for name, head in (("decode_head", decode_head), ("auxiliary_head", auxiliary_head)):
            k = getattr(head, "num_classes", None)
            if head is not None and k is not None and k != num_classes:
                raise ValueError(f"{name} predicts {k} classes; num_classes={num_classes}")
        if test_cfg is None:
            test_cfg = InferenceConfig()
        if not isinstance(test_cfg, InferenceConfig):
            raise ValueError(f"test_cfg must be an InferenceConfig; got {type(test_cfg).__name__}")
        self.num_classes = num_classes
        self.test_cfg = test_cfg
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.criterion = loss if loss is not None else CondNetLoss()
        # What build_model built it from (condnet.models.ModelConfig); None otherwise.
        self.config: ModelConfig | None = None

    @staticmethod
    def _check_img(img: torch.Tensor) -> None:
        if not isinstance(img, torch.Tensor) or img.dim() != 4 or not img.is_floating_point():
            got = (
                f"{tuple(img.shape)} {img.dtype}"
                if isinstance(img, torch.Tensor)
                else type(img).__name__
            )
            raise ValueError(f"img must be a floating-point (B, C, H, W) tensor; got {got}")

    def decode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(logits, guide_logits or None)`` at the decode head's resolution."""
        self._check_img(img)
        return self.decode_head(self.backbone(img))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W), bilinearly upsampled to the input size."""
        logits, _ = self.decode(img)
        return resize(logits, img.shape[-2:])

    def forward_train(self, img: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss dict for one batch: ``loss_seg``/``acc_seg``, ``loss_guidance``/
        ``acc_guidance`` (conditional classifier only), ``loss_static``/
        ``acc_static``, ``loss_oracle`` and ``loss_distill`` (CAC only),
        ``loss_aux``/``acc_aux`` (with an auxiliary head), and ``loss``, their
        weighted sum.

        ``label`` is int64 (B, H, W) or (B, 1, H, W) at image size, 255 = ignore.
        Logits are resized to the label by the loss, as in mmseg.
        """
        self._check_img(img)
        feats = self.backbone(img)
        if self.uses_label:  # CAC's oracle needs the label
            logits, guide_logits = self.decode_head(feats, label=label)
        else:
            logits, guide_logits = self.decode_head(feats)
        aux_logits = None
        if self.auxiliary_head is not None:
            aux_logits, _ = self.auxiliary_head(feats)
        return self.criterion(label, logits, guide_logits, aux_logits)

    @property
    def uses_label(self) -> bool:
        """Whether the decode head takes the label in training (a CAC classifier)."""
        return any(isinstance(m, ContextAwareClassifier) for m in self.decode_head.modules())

    @property
    def has_guidance(self) -> bool:
        """Whether :meth:`decode` returns guide logits (a conditional classifier)."""
        return any(isinstance(m, ConditionalClassifier) for m in self.decode_head.modules())

    @torch.no_grad()
    def predict(
        self,
        img: torch.Tensor,
        settings: InferenceConfig | None = None,
        *,
        mode: str | None = None,
        crop_size: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        out_size: tuple[int, int] | None = None,
        output: str = "logits",
    ) -> torch.Tensor:
        """Test-time inference without gradients (call ``model.eval()`` first).

        Args:
            img: (B, 3, H, W) normalised images.
            settings: the :class:`InferenceConfig` to start from; default
                ``test_cfg`` (the released setting).
            mode, crop_size, stride: ``"whole"`` or ``"slide"`` windows.
            scales: image rescale factors; results are averaged (mmseg's
                multi-scale test, e.g. ``condnet.models.ADE20K_TTA_SCALES``).
            flip: also run horizontally flipped images and average.
            out_size: (h, w) of the result; default the input size.
            output: ``"logits"`` or ``"probs"`` (softmax over classes).

            ``mode`` .. ``flip`` left at None keep the value of ``settings``, field
            by field (:func:`~condnet.models.resolve_inference`).

        Returns:
            (B, K, h, w) logits or probabilities; ``argmax(1)`` is the prediction.
        """
        self._check_img(img)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        given = dict(mode=mode, crop_size=crop_size, stride=stride, scales=scales, flip=flip)
        settings = resolve_inference(self.test_cfg if settings is None else settings, given)
        return inference.aug_inference(
            self.forward,
            img,
            self.num_classes,
            scales=settings.scales,
            flip=settings.flip,
            mode=settings.mode,
            crop_size=settings.crop_size,
            stride=settings.stride,
            out_size=out_size,
            output=output,
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, test_cfg={self.test_cfg}"
