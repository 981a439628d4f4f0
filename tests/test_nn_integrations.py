"""make_conditional and guidance_loss on the real host libraries' models
(torchvision, segmentation_models_pytorch, transformers), randomly initialised
from configurations built here: nothing is downloaded.

Each model: conversion finds the expected conv(s); the warm start gives the
plain model's logits in float64; one training step with the host's loss plus
the guidance loss; eval output shape and dtype; a state-dict round trip. Two of
them also run under torch.compile.
"""

import copy
import io
import os
import sys

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from condnet.nn import DropInConditionalClassifier, guidance_loss, make_conditional  # noqa: E402

K, SIZE = 5, 32


def _need(module: str):
    """The integrations extra is installed by `make test`: in CI a missing
    package fails; elsewhere its tests are skipped."""
    if os.environ.get("CI"):
        __import__(module)
        return sys.modules[module]
    return pytest.importorskip(module)


def torchvision_model(builder, **kwargs):
    segmentation = _need("torchvision.models.segmentation")
    return getattr(segmentation, builder)(
        weights=None, weights_backbone=None, num_classes=K, **kwargs
    )


def smp_model(arch):
    smp = _need("segmentation_models_pytorch")
    return getattr(smp, arch)("resnet18", encoder_weights=None, classes=K)


def segformer():
    transformers = _need("transformers")
    config = transformers.SegformerConfig(
        num_labels=K,
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=32,
    )
    return transformers.SegformerForSemanticSegmentation(config)


def upernet():
    transformers = _need("transformers")
    backbone = transformers.ConvNextConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 32, 64],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.UperNetConfig(
        num_labels=K, hidden_size=32, auxiliary_channels=16, backbone_config=backbone
    )
    return transformers.UperNetForSemanticSegmentation(config)


def torchvision_loss(model, img, label):
    out = model(img)  # {"out": ..., "aux": ...} at image size
    loss = F.cross_entropy(out["out"], label, ignore_index=255)
    if "aux" in out:
        loss = loss + 0.5 * F.cross_entropy(out["aux"], label, ignore_index=255)
    return loss


def smp_loss(model, img, label):
    return F.cross_entropy(model(img), label, ignore_index=255)  # logits tensor


def transformers_loss(model, img, label):
    return model(pixel_values=img, labels=label).loss  # CE (+ auxiliary) on upsampled logits


def main_logits(out):
    if isinstance(out, torch.Tensor):
        return out
    return out["out"] if "out" in out else out["logits"]


# name: (build, make_conditional kwargs, expected targets, host loss, eval output size)
MODELS = {
    "tv_deeplabv3_resnet50": (
        lambda: torchvision_model("deeplabv3_resnet50", aux_loss=True),
        dict(auxiliary=True),
        ["classifier.4", "aux_classifier.4"],
        torchvision_loss,
        SIZE,
    ),
    "tv_fcn_resnet50": (
        lambda: torchvision_model("fcn_resnet50", aux_loss=True),
        {},  # the auxiliary head stays plain
        ["classifier.4"],
        torchvision_loss,
        SIZE,
    ),
    "tv_lraspp_mobilenet_v3_large": (
        lambda: torchvision_model("lraspp_mobilenet_v3_large"),
        {},
        ["classifier.high_classifier"],  # low_classifier (added to it) stays plain
        torchvision_loss,
        SIZE,
    ),
    "smp_unet": (lambda: smp_model("Unet"), {}, ["segmentation_head.0"], smp_loss, SIZE),
    "smp_deeplabv3plus": (
        lambda: smp_model("DeepLabV3Plus"),
        dict(layout="per_class"),
        ["segmentation_head.0"],
        smp_loss,
        SIZE,
    ),
    "smp_fpn": (lambda: smp_model("FPN"), {}, ["segmentation_head.0"], smp_loss, SIZE),
    "hf_segformer": (segformer, {}, ["decode_head.classifier"], transformers_loss, SIZE // 4),
    "hf_upernet": (upernet, {}, ["decode_head.classifier"], transformers_loss, SIZE),
}


def data(n, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 3, SIZE, SIZE, generator=g, dtype=dtype)
    label = torch.randint(0, K, (n, SIZE, SIZE), generator=g)
    label[:, :, :3] = 255
    return img, label


def build(name):
    torch.manual_seed(0)
    model = MODELS[name][0]()
    with torch.no_grad():  # a "trained" classifier: non-zero biases
        for target in MODELS[name][2]:
            model.get_submodule(target).bias.normal_()
    return model


@pytest.mark.parametrize("name", MODELS)
def test_host_model(name):
    _, kwargs, targets, host_loss, out_size = MODELS[name]
    plain = build(name)
    model = make_conditional(copy.deepcopy(plain), **kwargs)
    converted = [n for n, m in model.named_modules() if isinstance(m, DropInConditionalClassifier)]
    assert converted == targets

    # Warm start: the plain logits, in float64.
    img, label = data(1, torch.float64)
    plain.double().eval(), model.double().eval()
    with torch.no_grad():
        want, got = main_logits(plain(img)), main_logits(model(img))
    assert (want - got).abs().max() <= 1e-12 * want.abs().max()
    del plain
    model.float()

    # One training step with the host's loss and the guidance loss.
    img, label = data(2)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = host_loss(model, img, label) + 0.2 * guidance_loss(model, label)
    assert loss.isfinite()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for target in targets:
        clf = model.get_submodule(target)
        assert clf.guide_logits is None
        assert clf.guidance_project.weight.grad.abs().sum() > 0
        projection = clf.filter_project if clf.layout == "grouped_conv" else clf
        weight = projection.weight if clf.layout == "grouped_conv" else clf.filter_weight
        assert weight.abs().sum() > 0  # moved off the warm start's 0

    # Eval output: shape and dtype.
    model.eval()
    with torch.no_grad():
        logits = main_logits(model(img))
    assert logits.shape == (2, K, out_size, out_size) and logits.dtype == torch.float32

    # State-dict round trip into a freshly built, randomly initialised twin.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_conditional(MODELS[name][0](), targets, init="random", **_layout(kwargs))
    fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(main_logits(fresh.eval()(img)), logits)


def _layout(kwargs):
    return {k: v for k, v in kwargs.items() if k == "layout"}


@pytest.mark.parametrize("name", ["hf_segformer", "smp_unet"])
def test_torch_compile(name):
    """Dynamo and AOTAutograd see through the recorded guide logits (no graph
    break: fullgraph=True); aot_eager keeps the test fast, the generated code
    is covered by the ops' own compile tests."""
    torch._dynamo.reset()
    _, kwargs, _, host_loss, _ = MODELS[name]
    eager = make_conditional(build(name), **kwargs).train()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    img, label = data(2)
    losses = []
    for model, fn in ((eager, eager), (compiled_model, compiled)):
        torch.manual_seed(1)  # the same dropout masks
        loss = host_loss(fn, img, label) + 0.2 * guidance_loss(fn, label)
        loss.backward()
        losses.append(loss.detach())
        assert all(m.guide_logits is None for m in model.modules() if hasattr(m, "guide_logits"))
    torch.testing.assert_close(losses[1], losses[0])
    grads = [
        [p.grad for p in m.parameters() if p.grad is not None] for m in (eager, compiled_model)
    ]
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        want = main_logits(eager.eval()(img))
        got = main_logits(compiled.eval()(img))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
