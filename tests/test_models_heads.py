"""Decode heads: mmcv-compatible child names, shapes, the plain twin,
torch.compile and bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condnet.models.heads import (
    ASPPHead,
    ConvBNReLU,
    DepthwiseSeparableConv,
    FCNHead,
    PlainClassifier,
    SepASPPHead,
    UPerHead,
    build_classifier,
)
from condnet.nn import ConditionalClassifier

K = 5


def resnet_like(B=2, C=(16, 24, 32, 64), size=(16, 12), seed=0):
    """Four maps at strides 4, 8, 8, 8 of a (4 * size) image."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    sizes = [(h, w), (h // 2, w // 2), (h // 2, w // 2), (h // 2, w // 2)]
    return [torch.randn(B, c, *s, generator=g) for c, s in zip(C, sizes, strict=True)]


def pyramid(B=2, C=(8, 16, 24, 32), size=(16, 20), seed=0):
    """Four maps at strides 4, 8, 16, 32 (sizes rounded up, as Swin pads)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for i, c in enumerate(C):
        f = 2**i
        out.append(torch.randn(B, c, -(-h // f), -(-w // f), generator=g))
    return out


def conv_module_keys(prefix):
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    return {f"{prefix}.conv.weight"} | {f"{prefix}.bn.{n}" for n in bn}


def separable_keys(prefix):
    return conv_module_keys(f"{prefix}.depthwise_conv") | conv_module_keys(
        f"{prefix}.pointwise_conv"
    )


def test_conv_bn_relu_names_padding_and_init():
    torch.manual_seed(0)
    m = ConvBNReLU(8, 64, 3, dilation=2)
    assert [name for name, _ in m.named_children()] == ["conv", "bn", "activate"]
    assert m.conv.bias is None and m.conv.padding == (2, 2) and m.conv.dilation == (2, 2)
    assert isinstance(m.bn, nn.BatchNorm2d) and isinstance(m.activate, nn.ReLU)
    # Kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (64 * 9)).
    assert m.conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)
    assert torch.equal(m.bn.weight, torch.ones(64)) and torch.equal(m.bn.bias, torch.zeros(64))
    x = torch.randn(2, 8, 7, 9)
    assert m(x).shape == (2, 64, 7, 9) and (m(x) >= 0).all()


def test_depthwise_separable_conv():
    m = DepthwiseSeparableConv(6, 10, 3, dilation=3)
    assert [name for name, _ in m.named_children()] == ["depthwise_conv", "pointwise_conv"]
    dw, pw = m.depthwise_conv.conv, m.pointwise_conv.conv
    assert dw.groups == 6 and dw.weight.shape == (6, 1, 3, 3) and dw.dilation == (3, 3)
    assert pw.weight.shape == (10, 6, 1, 1)
    assert m(torch.randn(1, 6, 8, 8)).shape == (1, 10, 8, 8)


def test_sep_aspp_head_keys_follow_mmseg():
    head = SepASPPHead(64, 16, K, channels=32, c1_channels=8, classifier="plain")
    expected = conv_module_keys("image_pool.1") | conv_module_keys("aspp_modules.0")
    for i in (1, 2, 3):
        expected |= separable_keys(f"aspp_modules.{i}")
    expected |= conv_module_keys("bottleneck") | conv_module_keys("c1_bottleneck")
    expected |= separable_keys("sep_bottleneck.0") | separable_keys("sep_bottleneck.1")
    expected |= {"classifier.conv_seg.weight", "classifier.conv_seg.bias"}
    assert set(head.state_dict()) == expected
    assert head.bottleneck.conv.weight.shape == (32, 5 * 32, 3, 3)
    assert head.sep_bottleneck[0].depthwise_conv.conv.weight.shape == (32 + 8, 1, 3, 3)
    dilations = [m.depthwise_conv.conv.dilation for m in head.aspp_modules[1:]]
    assert dilations == [(12, 12), (24, 24), (36, 36)]


def test_conditional_heads_hold_the_released_classifier_params():
    head = SepASPPHead(64, 16, K, channels=32, c1_channels=8)
    clf = {k: v.shape for k, v in head.state_dict().items() if k.startswith("classifier.")}
    assert clf == {
        "classifier.guidance_project.weight": (K, 32, 1, 1),
        "classifier.guidance_project.bias": (K,),
        "classifier.filter_project.weight": (32 * K + K, 32, 1, 1),
        "classifier.filter_project.bias": (32 * K + K,),
    }
    per_class = SepASPPHead(64, 16, K, channels=32, c1_channels=8, layout="per_class")
    assert per_class.classifier.layout == "per_class"


def test_aspp_head_uses_dense_dilated_convs():
    head = ASPPHead(64, K, channels=16)
    convs = [m.conv for m in head.aspp_modules]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation[0] for c in convs] == [1, 6, 12, 18]
    assert convs[1].weight.shape == (16, 64, 3, 3)


def test_uper_head_keys_follow_mmseg():
    head = UPerHead((8, 16, 24, 32), K, channels=16, classifier="plain")
    expected = {"classifier.conv_seg.weight", "classifier.conv_seg.bias"}
    for i in range(4):
        expected |= conv_module_keys(f"psp_modules.{i}.1")
    for i in range(3):
        expected |= conv_module_keys(f"lateral_convs.{i}") | conv_module_keys(f"fpn_convs.{i}")
    expected |= conv_module_keys("bottleneck") | conv_module_keys("fpn_bottleneck")
    assert set(head.state_dict()) == expected
    assert head.bottleneck.conv.weight.shape == (16, 32 + 4 * 16, 3, 3)
    assert head.fpn_bottleneck.conv.weight.shape == (16, 4 * 16, 3, 3)
    assert [m[0].output_size for m in head.psp_modules] == [1, 2, 3, 6]


def test_fcn_head_is_plain_on_stage_3():
    head = FCNHead(32, K, channels=8)
    assert set(head.state_dict()) == conv_module_keys("convs.0") | {
        "classifier.conv_seg.weight",
        "classifier.conv_seg.bias",
    }
    assert head.convs[0].conv.weight.shape == (8, 32, 3, 3)
    feats = resnet_like()
    logits, guide = head(feats)
    assert guide is None and logits.shape == (2, K, 8, 6)


@pytest.mark.parametrize("classifier", ["conditional", "plain"])
@pytest.mark.parametrize(
    "make, feats, size",
    [
        (
            lambda c: SepASPPHead(64, 16, K, channels=32, c1_channels=8, classifier=c),
            resnet_like,
            (16, 12),
        ),
        (lambda c: ASPPHead(64, K, channels=16, classifier=c), resnet_like, (8, 6)),
        (lambda c: UPerHead((8, 16, 24, 32), K, channels=16, classifier=c), pyramid, (16, 20)),
    ],
    ids=["sep_aspp", "aspp", "uper"],
)
def test_head_shapes_train_and_eval(make, feats, size, classifier):
    torch.manual_seed(0)
    head = make(classifier)
    features = feats()
    logits, guide = head(features)
    assert logits.shape == (2, K, *size)
    if classifier == "plain":
        assert guide is None
    else:
        assert guide.shape == (2, K, *size)
        (logits.sum() + guide.sum()).backward()
        assert head.classifier.guidance_project.weight.grad.abs().sum() > 0
    head.eval()
    with torch.no_grad():
        a, b = head(features)[0], head(features)[0]
    torch.testing.assert_close(a, b)  # eval: no dropout, running BN statistics


def up(x, like):
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def test_sep_aspp_head_follows_the_deeplabv3plus_data_flow():
    torch.manual_seed(0)
    head = SepASPPHead(64, 16, K, channels=16, c1_channels=8).eval()
    feats = resnet_like()
    x, c1 = feats[-1], feats[0]
    with torch.no_grad():
        branches = [up(head.image_pool(x), x)] + [m(x) for m in head.aspp_modules]
        out = up(head.bottleneck(torch.cat(branches, dim=1)), c1)
        out = head.sep_bottleneck(torch.cat([out, head.c1_bottleneck(c1)], dim=1))
        expected = head.classifier(out, return_guide=True)
        torch.testing.assert_close(head(feats), expected)


def test_uper_head_follows_the_upernet_data_flow():
    torch.manual_seed(0)
    head = UPerHead((8, 16, 24, 32), K, channels=16).eval()
    feats = pyramid(size=(15, 21))
    with torch.no_grad():
        top = feats[3]
        psp = [top] + [up(m(top), top) for m in head.psp_modules]
        lat = [conv(f) for conv, f in zip(head.lateral_convs, feats, strict=False)]
        lat.append(head.bottleneck(torch.cat(psp, dim=1)))
        for i in (3, 2, 1):
            lat[i - 1] = lat[i - 1] + up(lat[i], lat[i - 1])
        outs = [head.fpn_convs[i](lat[i]) for i in range(3)] + [lat[3]]
        fused = head.fpn_bottleneck(torch.cat([up(o, outs[0]) for o in outs], dim=1))
        expected = head.classifier(fused, return_guide=True)
        torch.testing.assert_close(head(feats), expected)


def test_plain_classifier_init_and_forward():
    torch.manual_seed(0)
    clf = PlainClassifier(256, 150)
    assert clf.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(clf.conv_seg.bias, torch.zeros(150))
    assert isinstance(clf.dropout, nn.Dropout2d) and clf.dropout.p == 0.1
    clf.eval()
    x = torch.randn(1, 256, 3, 4)
    ref = torch.einsum("kc,bchw->bkhw", clf.conv_seg.weight[:, :, 0, 0], x)
    torch.testing.assert_close(clf(x), ref, rtol=1e-5, atol=1e-6)
    assert isinstance(build_classifier("conditional", 8, 3), ConditionalClassifier)


def test_compiled_sep_aspp_head_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    head = SepASPPHead(32, 8, K, channels=16, c1_channels=8).eval()
    feats = resnet_like(C=(8, 8, 8, 32), size=(8, 8))
    compiled = torch.compile(head, fullgraph=False)
    with torch.no_grad():
        expected = head(feats)
        got = compiled(feats)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: SepASPPHead(64, 16, K, classifier="softmax"), "classifier must be one of"),
        (lambda: ASPPHead(64, K, dilations=(1, 0)), "dilations must be"),
        (lambda: ASPPHead(64, K, layout="grouped"), "layout must be one of"),
        (lambda: UPerHead(32, K), "in_channels must list"),
        (lambda: UPerHead((8, 16), K, pool_scales=()), "pool_scales must be"),
        (lambda: FCNHead(32, K, num_convs=0), "num_convs must be"),
        (lambda: ConvBNReLU(8, 0), "out_channels must be a positive int"),
        (lambda: PlainClassifier(8, 3, dropout=1.0), "dropout must be in"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_features():
    head = SepASPPHead(64, 16, K, channels=16, c1_channels=8)
    feats = resnet_like()
    with pytest.raises(ValueError, match=r"feature map -1 must be \(B, 64, H, W\); got \(2, 32"):
        head(feats[:3])
    with pytest.raises(ValueError, match="features must be a list"):
        head(feats[-1])
    uper = UPerHead((8, 16, 24, 32), K, channels=16)
    with pytest.raises(ValueError, match="features must be a list of 4 maps; got 3"):
        uper(pyramid()[:3])
    with pytest.raises(ValueError, match=r"feature map 1 must be \(B, 16, H, W\)"):
        uper(pyramid(C=(8, 12, 24, 32)))
