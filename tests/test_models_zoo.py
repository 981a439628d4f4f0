"""The released configurations: names, settings, parameter counts, and every
model building and training one step on a tiny image."""

import dataclasses

import pytest
import torch

from condnet.models import (
    ModelConfig,
    Segmentor,
    build_model,
    get_config,
    list_models,
)
from condnet.models.heads import PlainClassifier, SepASPPHead, UPerHead
from condnet.nn import ConditionalClassifier

RELEASED = [
    "condnet_r50-d8_ade20k",
    "condnet_r101-d8_ade20k",
    "condnet_r50-d8_pascal_context_59",
    "condnet_r101-d8_pascal_context_59",
    "condnet_upernet_swin-b_ade20k",
    "condnet_r50-d8_cityscapes",
    "condnet_r101-d8_cityscapes",
]


def meta_model(name, **overrides):
    with torch.device("meta"):
        return build_model(name, **overrides)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# CAC's released models (tests/test_models_cac.py checks them).
CAC = ["cac_r50-d8_ade20k", "cac_upernet_swin-t_ade20k", "cac_upernet_swin-b_ade20k"]


def test_names_and_plain_twins():
    assert list_models() == [n for name in RELEASED + CAC for n in (name, name + "-plain")]
    for name in RELEASED:
        twin = get_config(name + "-plain")
        assert twin.classifier == "plain" and get_config(name).classifier == "conditional"
        assert dataclasses.replace(twin, classifier="conditional") == get_config(name)


@pytest.mark.parametrize(
    "name, backbone, head, K, test",
    [
        ("condnet_r50-d8_ade20k", "resnet50_v1c", "sep_aspp", 150, ("whole",)),
        (
            "condnet_r101-d8_ade20k",
            "resnet101_v1c",
            "sep_aspp",
            150,
            ("slide", (512, 512), (342, 342)),
        ),
        (
            "condnet_r50-d8_pascal_context_59",
            "resnet50_v1c",
            "sep_aspp",
            59,
            ("slide", (480, 480), (320, 320)),
        ),
        (
            "condnet_r101-d8_pascal_context_59",
            "resnet101_v1c",
            "sep_aspp",
            59,
            ("slide", (480, 480), (320, 320)),
        ),
        ("condnet_upernet_swin-b_ade20k", "swin_base_w12", "uper", 150, ("whole",)),
        ("condnet_r50-d8_cityscapes", "resnet50_v1c", "sep_aspp", 19, ("whole",)),
        ("condnet_r101-d8_cityscapes", "resnet101_v1c", "sep_aspp", 19, ("whole",)),
    ],
)
def test_released_settings(name, backbone, head, K, test):
    # The training crops are the data configs' (condnet/configs/_base_/datasets, test_configs.py).
    c = get_config(name)
    assert (c.backbone, c.head, c.num_classes) == (backbone, head, K)
    assert (c.test_mode, c.test_crop_size, c.test_stride)[: len(test)] == test
    assert (c.channels, c.dropout, c.layout, c.auxiliary, c.aux_channels) == (
        512,
        0.1,
        "grouped_conv",
        True,
        256,
    )
    assert (c.seg_weight, c.guidance_weight, c.aux_weight) == (1.0, 0.2, 0.4)
    model = meta_model(name)
    assert isinstance(model, Segmentor) and model.config == c
    assert isinstance(model.decode_head, SepASPPHead if head == "sep_aspp" else UPerHead)
    assert isinstance(model.decode_head.classifier, ConditionalClassifier)
    assert model.decode_head.classifier.in_channels == 512
    aux_in = 512 if head == "uper" else 1024
    assert model.auxiliary_head.convs[0].conv.weight.shape == (256, aux_in, 3, 3)
    assert (model.test_cfg.mode, model.test_cfg.crop_size, model.test_cfg.stride)[
        : len(test)
    ] == test
    if head == "sep_aspp":
        assert model.decode_head.dilations == (1, 12, 24, 36)
    else:
        assert dict(c.backbone_kwargs) == {"drop_path_rate": 0.3}


def test_parameter_counts():
    counts = {name: n_params(meta_model(name)) for name in list_models()}
    for name, count in counts.items():
        print(f"{name:42s} {count:>12,d}")
    # The conditional classifier replaces conv_seg (K*C + K) by guidance_project
    # (K*C + K) and filter_project (C*K -> C*K + K, groups K): (C*K + K) * (C + 1).
    C = 512
    for name in RELEASED:
        K = get_config(name).num_classes
        assert counts[name] - counts[name + "-plain"] == (C * K + K) * (C + 1)
    # mmseg's DeepLabV3+ R50 (19 classes) has 43.58M parameters, UPerNet Swin-B 121M.
    assert counts["condnet_r50-d8_cityscapes-plain"] == pytest.approx(43.59e6, rel=1e-3)
    assert counts["condnet_upernet_swin-b_ade20k-plain"] == pytest.approx(121.4e6, rel=1e-3)


def test_overrides():
    model = meta_model("condnet_r50-d8_ade20k", num_classes=21, layout="per_class", auxiliary=False)
    assert model.num_classes == 21 and model.auxiliary_head is None
    assert model.decode_head.classifier.layout == "per_class"
    plain = meta_model("condnet_r50-d8_ade20k", classifier="plain", channels=64)
    assert isinstance(plain.decode_head.classifier, PlainClassifier)
    assert plain.decode_head.classifier.conv_seg.weight.shape == (150, 64, 1, 1)
    config = ModelConfig(backbone="resnet50_v1c", head="aspp", num_classes=3, channels=32)
    model = meta_model(config)
    assert model.decode_head.dilations == (1, 6, 12, 18)
    assert not hasattr(model.config, "dataset")  # informative fields that nothing read


def test_bad_names_and_overrides():
    with pytest.raises(ValueError, match="unknown model 'condnet_r18'; valid names: condnet_r50"):
        build_model("condnet_r18")
    with pytest.raises(ValueError, match=r"unknown ModelConfig fields \['depth'\]; valid fields:"):
        build_model("condnet_r50-d8_ade20k", depth=18)
    with pytest.raises(ValueError, match="head must be one of"):
        build_model("condnet_r50-d8_ade20k", head="psp")
    with pytest.raises(ValueError, match="classifier must be one of"):
        build_model("condnet_r50-d8_ade20k", classifier="dynamic")
    with pytest.raises(ValueError, match="test_mode must be one of"):
        build_model("condnet_r50-d8_ade20k", test_mode="tiles")
    with pytest.raises(ValueError, match="test_mode='slide' needs test_crop_size"):
        build_model("condnet_r50-d8_ade20k", test_mode="slide")
    with pytest.raises(ValueError, match="backbone_kwargs must be a mapping"):
        build_model("condnet_r50-d8_ade20k", backbone_kwargs=[("drop_path_rate", 0.1)])
    with pytest.raises(ValueError, match="dilations apply to the ASPP heads only"):
        meta_model("condnet_upernet_swin-b_ade20k", dilations=(1, 2))
    with pytest.raises(ValueError, match="name_or_config must be"):
        build_model(3)


# Every released name trains one step, and one plain twin (the plain UPerNet
# head is covered in test_models_heads.py).
@pytest.mark.parametrize("name", RELEASED + ["condnet_r50-d8_ade20k-plain"])
def test_every_model_trains_and_predicts(name):
    torch.manual_seed(0)
    model = build_model(name)
    K = model.num_classes
    img = torch.randn(2, 3, 32, 32)
    lab = torch.randint(0, K, (2, 32, 32))
    losses = model.forward_train(img, lab)
    expected = {"loss_seg", "acc_seg", "loss_aux", "acc_aux", "loss"}
    if not name.endswith("-plain"):
        expected |= {"loss_guidance", "acc_guidance"}
    assert set(losses) == expected
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.decode_head.parameters())
    first = next(model.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        logits = model(img[:1])
    assert logits.shape == (1, K, 32, 32) and torch.isfinite(logits).all()
