"""The released CondNet and CAC configurations and ``build_model``.

Each configuration is a :class:`ModelConfig`; ``build_model(name)`` turns one
into a :class:`~condnet.models.Segmentor`. Every name has a plain twin, the
same name with the suffix ``-plain``: the same network with the baseline 1x1
classifier (DeepLabV3+ or UPerNet) instead of the conditional or
context-aware one.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from condnet.ops.layouts import check_layout

from .backbones import BACKBONES, build_backbone
from .cac_loss import CACLoss
from .heads import CLASSIFIERS, ASPPHead, FCNHead, SepASPPHead, UPerHead
from .inference_config import InferenceConfig, check_inference_fields, check_window
from .losses import CondNetLoss
from .segmentor import Segmentor

HEADS = ("sep_aspp", "aspp", "uper", "fcn")
# The label value CAC's oracle skips (ContextAwareClassifier's ignore_index).
_CAC_IGNORE_INDEX = 255
PLAIN_SUFFIX = "-plain"
# ModelConfig's names of the InferenceConfig fields of its test setting.
_TEST_KEYS = {"mode": "test_mode", "crop_size": "test_crop_size", "stride": "test_stride"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a model; every field can be overridden in
    :func:`build_model`.

    Attributes:
        backbone: a :func:`~condnet.models.backbones.build_backbone` name
            ("resnet50_v1c", "resnet101_v1c", "swin_base_w12", "swin_tiny_w7").
        head: "sep_aspp" (DeepLabV3+), "aspp" (DeepLabV3), "uper" (UPerNet) or
            "fcn" (mmseg's FCN decode head: two 3x3 convs on the last map and
            ``conv_cat``).
        num_classes: K.
        classifier: "conditional" (CondNet), "cac" (CAC's context-aware
            classifier) or "plain" (the 1x1-conv baseline).
        cac_released: the context-aware classifier's ``released`` numerics
            (batch-wide oracle, exact norms, the released losses' resizing and
            averaging); False keeps :class:`~condnet.nn.ContextAwareClassifier`'s
            fixes. Unused by the other classifiers.
        layout: the conditional classifier's parameter layout, "grouped_conv"
            (loads released checkpoints) or "per_class".
        channels: decode-head width.
        c1_channels: width of DeepLabV3+'s low-level skip.
        dilations: ASPP dilations; None takes the head's default ((1, 12, 24, 36)
            for "sep_aspp", (1, 6, 12, 18) for "aspp").
        pool_scales: UPerNet's pyramid pooling sizes.
        dropout: ``Dropout2d`` before both classifiers.
        auxiliary: whether to add the auxiliary FCN head on backbone stage 3.
        aux_channels: its width.
        backbone_kwargs: passed to ``build_backbone`` (timm constructor
            arguments, e.g. ``drop_path_rate``; Swin also takes ``embed_dim``,
            ``depths``, ``num_heads``, ``window_size``).
        test_mode, test_crop_size, test_stride: :meth:`Segmentor.predict`'s
            defaults ("whole", or "slide" windows), the model's ``test_cfg``.
        seg_weight, guidance_weight, aux_weight, ignore_index,
            dice_ignore_mode: the :class:`~condnet.models.losses.CondNetLoss`;
            a CAC model's :class:`~condnet.models.CACLoss` takes ``seg_weight``
            (its main cross-entropy), ``aux_weight`` and ``ignore_index``
            (255, the label value its oracle skips), its other three terms
            weigh 1 as released.
    """

    backbone: str
    head: str
    num_classes: int
    classifier: str = "conditional"
    cac_released: bool = False
    layout: str = "grouped_conv"
    channels: int = 512
    c1_channels: int = 48
    dilations: tuple[int, ...] | None = None
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    auxiliary: bool = True
    aux_channels: int = 256
    backbone_kwargs: Mapping[str, object] = field(default_factory=dict)
    test_mode: str = "whole"
    test_crop_size: tuple[int, int] | None = None
    test_stride: tuple[int, int] | None = None
    seg_weight: float = 1.0
    guidance_weight: float = 0.2
    aux_weight: float = 0.4
    ignore_index: int = 255
    dice_ignore_mode: str = "exclude"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(
                f"backbone must be one of {', '.join(BACKBONES)}; got {self.backbone!r}"
            )
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}; got {self.head!r}")
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"num_classes must be an int >= 1; got {k!r}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}; got {self.classifier!r}")
        object.__setattr__(self, "layout", check_layout(self.layout))
        if not isinstance(self.cac_released, bool):
            raise ValueError(f"cac_released must be a bool; got {self.cac_released!r}")
        if self.classifier == "cac" and self.ignore_index != _CAC_IGNORE_INDEX:
            raise ValueError(
                f"ignore_index must be {_CAC_IGNORE_INDEX} with classifier='cac' (the label "
                f"value the context-aware classifier's oracle skips); got {self.ignore_index!r}"
            )
        # The test setting is an InferenceConfig's, checked by its rules under these names.
        test = check_inference_fields(
            {"mode": self.test_mode, "crop_size": self.test_crop_size, "stride": self.test_stride},
            _TEST_KEYS,
        )
        check_window(test["mode"], test["crop_size"], test["stride"], _TEST_KEYS)
        for name, key in _TEST_KEYS.items():
            object.__setattr__(self, key, test[name])
        for name in ("dilations", "pool_scales"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.backbone_kwargs, Mapping):
            raise ValueError(
                f"backbone_kwargs must be a mapping; got {type(self.backbone_kwargs).__name__}"
            )
        object.__setattr__(self, "backbone_kwargs", MappingProxyType(dict(self.backbone_kwargs)))

    def __reduce__(self):
        # Rebuilt through the constructor: a mappingproxy (backbone_kwargs) cannot be pickled.
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["backbone_kwargs"] = dict(self.backbone_kwargs)
        return (_model_config, (values,))

    @property
    def test_cfg(self) -> InferenceConfig:
        """The test setting as :meth:`Segmentor.predict` takes it."""
        return InferenceConfig(self.test_mode, self.test_crop_size, self.test_stride)


def _model_config(values: dict) -> ModelConfig:
    return ModelConfig(**values)


def _released() -> dict[str, ModelConfig]:
    # Groups of ModelConfig fields, combined per model (Any: the fields' types differ).
    ade: dict[str, Any] = dict(num_classes=150)
    context: dict[str, Any] = dict(num_classes=59)
    context_test: dict[str, Any] = dict(
        test_mode="slide", test_crop_size=(480, 480), test_stride=(320, 320)
    )
    city: dict[str, Any] = dict(num_classes=19)
    r50: dict[str, Any] = dict(backbone="resnet50_v1c")
    r101: dict[str, Any] = dict(backbone="resnet101_v1c")
    deeplab: dict[str, Any] = dict(head="sep_aspp")
    conditional = {
        "condnet_r50-d8_ade20k": ModelConfig(**r50, **deeplab, **ade),
        "condnet_r101-d8_ade20k": ModelConfig(
            **r101,
            **deeplab,
            **ade,
            test_mode="slide",
            test_crop_size=(512, 512),
            test_stride=(342, 342),
        ),
        "condnet_r50-d8_pascal_context_59": ModelConfig(
            **r50, **deeplab, **context, **context_test
        ),
        "condnet_r101-d8_pascal_context_59": ModelConfig(
            **r101, **deeplab, **context, **context_test
        ),
        "condnet_upernet_swin-b_ade20k": ModelConfig(
            backbone="swin_base_w12", head="uper", backbone_kwargs={"drop_path_rate": 0.3}, **ade
        ),
        # CondNet released no Cityscapes configuration; these follow mmseg's
        # DeepLabV3+ 512x1024 Cityscapes setting (whole-image test).
        "condnet_r50-d8_cityscapes": ModelConfig(**r50, **deeplab, **city),
        "condnet_r101-d8_cityscapes": ModelConfig(**r101, **deeplab, **city),
    }
    # CAC's released ADE20K recipes (github.com/tianzhuotao/CAC, configs/): DeepLabV3+
    # R50-D8 and UPerNet Swin-T (4 GPUs x 4 images), UPerNet Swin-B pretrained on
    # ImageNet-22K at 384 (8 GPUs x 2 images); all 512x512 crops, 160k iterations.
    swin: dict[str, Any] = dict(head="uper", backbone_kwargs={"drop_path_rate": 0.3})
    cac = {
        "cac_r50-d8_ade20k": ModelConfig(**r50, **deeplab, **ade, classifier="cac"),
        "cac_upernet_swin-t_ade20k": ModelConfig(
            backbone="swin_tiny_w7", **swin, **ade, classifier="cac"
        ),
        "cac_upernet_swin-b_ade20k": ModelConfig(
            backbone="swin_base_w12", **swin, **ade, classifier="cac"
        ),
    }
    configs = {}
    for name, config in {**conditional, **cac}.items():
        configs[name] = config
        configs[name + PLAIN_SUFFIX] = dataclasses.replace(config, classifier="plain")
    return configs


#: Name -> configuration of every released model and its ``-plain`` twin.
MODEL_CONFIGS: MappingProxyType[str, ModelConfig] = MappingProxyType(_released())

_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def list_models() -> list[str]:
    """The names :func:`build_model` accepts, conditional and ``-plain``."""
    return list(MODEL_CONFIGS)


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` registered under ``name``."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_CONFIGS)}")
    return MODEL_CONFIGS[name]


def _build_head(
    config: ModelConfig, channels: Sequence[int]
) -> SepASPPHead | ASPPHead | UPerHead | FCNHead:
    # The arguments every head takes (Any: their types differ).
    common: dict[str, Any] = dict(
        channels=config.channels,
        classifier=config.classifier,
        layout=config.layout,
        dropout=config.dropout,
        released=config.cac_released,
    )
    if config.dilations is not None:
        if config.head in ("uper", "fcn"):
            raise ValueError(f"dilations apply to the ASPP heads only; head={config.head!r}")
        common["dilations"] = config.dilations
    if config.head == "fcn":  # mmseg's FCN decode head (fcn_r50-d8.py)
        last = len(channels) - 1
        return FCNHead(
            channels[-1],
            config.num_classes,
            num_convs=2,
            concat_input=True,
            in_index=last,
            **common,
        )
    if config.head == "sep_aspp":
        return SepASPPHead(
            channels[-1], channels[0], config.num_classes, c1_channels=config.c1_channels, **common
        )
    if config.head == "aspp":
        return ASPPHead(channels[-1], config.num_classes, **common)
    return UPerHead(channels, config.num_classes, pool_scales=config.pool_scales, **common)


def build_model(
    name_or_config: str | ModelConfig,
    pretrained_backbone: bool | str | os.PathLike | Mapping = False,
    **overrides,
) -> Segmentor:
    """Builds a :class:`Segmentor` from a registered name or a :class:`ModelConfig`.

    Args:
        name_or_config: one of :func:`list_models` or a :class:`ModelConfig`.
        pretrained_backbone: False (random initialisation), True (timm's
            ImageNet weights) or a backbone checkpoint path / state dict (see
            :func:`~condnet.models.backbones.build_backbone`).
        **overrides: :class:`ModelConfig` fields to change, e.g.
            ``num_classes=21``, ``classifier="plain"``, ``classifier="cac"``,
            ``layout="per_class"``.

    The returned model keeps its configuration in ``model.config``.
    """
    if isinstance(name_or_config, ModelConfig):
        config = name_or_config
    elif isinstance(name_or_config, str):
        config = get_config(name_or_config)
    else:
        raise ValueError(
            "name_or_config must be a model name or a ModelConfig; "
            f"got {type(name_or_config).__name__}"
        )
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown ModelConfig fields {unknown}; valid fields: {', '.join(_FIELDS)}"
        )
    if overrides:
        config = dataclasses.replace(config, **overrides)
    backbone = build_backbone(
        config.backbone, pretrained=pretrained_backbone, **config.backbone_kwargs
    )
    channels = tuple(backbone.out_channels)
    decode_head = _build_head(config, channels)
    auxiliary_head = None
    if config.auxiliary:
        auxiliary_head = FCNHead(
            channels[2], config.num_classes, channels=config.aux_channels, dropout=config.dropout
        )
    aux_weight = config.aux_weight if config.auxiliary else 0.0
    loss: CACLoss | CondNetLoss
    if config.classifier == "cac":
        loss = CACLoss(
            seg_weight=config.seg_weight, aux_weight=aux_weight, ignore_index=config.ignore_index
        )
    else:
        loss = CondNetLoss(
            seg_weight=config.seg_weight,
            guidance_weight=config.guidance_weight,
            aux_weight=aux_weight,
            ignore_index=config.ignore_index,
            dice_ignore_mode=config.dice_ignore_mode,
        )
    model = Segmentor(
        backbone,
        decode_head,
        auxiliary_head,
        loss,
        num_classes=config.num_classes,
        test_cfg=config.test_cfg,
    )
    model.config = config
    return model
