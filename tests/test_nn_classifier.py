"""condnet.nn.ConditionalClassifier: shapes, parameters and their
initialisation, the released head's math, drop-in use in small networks and
on a timm backbone, backends and torch.compile."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import condnet.ops as ops
from condnet.models import build_model
from condnet.models.losses import CondNetLoss
from condnet.nn import LAYOUTS, ConditionalClassifier, set_backend
from tests.opcases import needs_extension


def released_cls_seg(clf, feat):
    """The released head's ``cls_seg`` (dropout aside), transcribed op by op
    from its description: guidance 1x1 conv, softmax, class features scaled by
    1/(h*w), the grouped ``filter_project`` conv on (B, C*K, 1, 1), its output
    split into (B*K, C, 1, 1) kernels and (B*K,) biases, and one grouped conv
    over the batch."""
    B, C, h, w = feat.shape
    K = clf.num_classes
    guidance = F.conv2d(feat, clf.guidance_project.weight, clf.guidance_project.bias)
    mask = F.softmax(guidance, dim=1).reshape(B, K, -1)
    key = feat.reshape(B, C, -1).permute(0, 2, 1)
    cond = torch.matmul(mask, key) * (h * w) ** -1
    proj = clf.filter_project
    cond = F.conv2d(cond.reshape(B, -1, 1, 1), proj.weight, proj.bias, groups=K).reshape(B, -1)
    weights, biases = torch.split(cond, [C * K, K], dim=1)
    weights = weights.reshape(B * K, -1, 1, 1)
    biases = biases.reshape(B * K)
    out = F.conv2d(feat.reshape(1, B * C, h, w), weights, biases, groups=B)
    return out.view(B, K, h, w), guidance


def features(B=2, C=6, H=5, W=7, dtype=torch.float32, seed=0):
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shapes_and_return_guide(layout):
    clf = ConditionalClassifier(6, 4, layout=layout)
    feat = features()
    logits = clf(feat)
    assert logits.shape == (2, 4, 5, 7)
    logits2, guide = clf.eval()(feat, return_guide=True)
    assert logits2.shape == guide.shape == (2, 4, 5, 7)
    torch.testing.assert_close(clf(feat), logits2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_parameter_count(layout):
    C, K = 7, 5
    clf = ConditionalClassifier(C, K, layout=layout)
    guidance = K * C + K
    projection = (C * K + K) * C + (C * K + K)
    assert sum(p.numel() for p in clf.parameters()) == guidance + projection
    names = {n for n, _ in clf.named_parameters()}
    if layout == "grouped_conv":
        # The released head's names, so its checkpoints load unchanged.
        assert names == {
            "guidance_project.weight",
            "guidance_project.bias",
            "filter_project.weight",
            "filter_project.bias",
        }
    else:
        assert names == {
            "guidance_project.weight",
            "guidance_project.bias",
            "filter_weight",
            "filter_bias",
        }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_statistics(layout):
    torch.manual_seed(0)
    C, K = 32, 20
    clf = ConditionalClassifier(C, K, layout=layout)
    guide_std = math.sqrt(2 / K)  # kaiming normal, fan_out = K outputs of a 1x1 conv
    proj_std = math.sqrt(2 / (C * K + K))  # the grouped conv's C*K + K outputs
    assert clf.guidance_project.weight.std().item() == pytest.approx(guide_std, rel=0.1)
    assert (clf.guidance_project.bias == 0).all()
    if layout == "grouped_conv":
        weight, bias = clf.filter_project.weight, clf.filter_project.bias
    else:
        weight, bias = clf.filter_weight, clf.filter_bias
    assert weight.std().item() == pytest.approx(proj_std, rel=0.1)
    assert weight.mean().abs().item() < 0.1 * proj_std
    assert (bias == 0).all()


def test_grouped_conv_layout_reproduces_the_released_head():
    torch.manual_seed(0)
    C, K = 6, 4
    clf = ConditionalClassifier(C, K).double().eval()
    # Non-zero biases everywhere, so the bias split is exercised too.
    for p in clf.parameters():
        nn.init.normal_(p, std=0.3)
    feat = features(C=C, dtype=torch.float64)
    logits, guide = clf(feat, return_guide=True)
    want_logits, want_guide = released_cls_seg(clf, feat)
    torch.testing.assert_close(guide, want_guide, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, want_logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_reference_backend_gives_the_same_outputs_and_gradients(layout):
    torch.manual_seed(0)
    default = ConditionalClassifier(6, 4, layout=layout, dropout=0.0)
    reference = ConditionalClassifier(6, 4, layout=layout, dropout=0.0)
    set_backend(reference, "reference")
    reference.load_state_dict(default.state_dict())
    feat = features().requires_grad_()
    results = []
    for clf in (default, reference):
        logits, guide = clf(feat, return_guide=True)
        grads = torch.autograd.grad((logits**2).sum() + guide.sum(), [feat, *clf.parameters()])
        results.append((logits, guide, *grads))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    clf = ConditionalClassifier(6, 4, dropout=0.5)
    feat = features()
    assert not torch.equal(clf(feat), clf(feat))
    clf.eval()
    torch.testing.assert_close(clf(feat), clf(feat), rtol=0, atol=0)


class TinyFCN(nn.Module):
    """Conv-BN-ReLU blocks, as decoders end, then a 1x1 conv classifier.
    (Without normalisation the generated kernels, cubic in the features,
    make plain SGD unstable.)"""

    def __init__(self, num_classes=3, channels=16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.classifier(self.body(x))


def test_drop_in_replacement_in_a_small_fcn_learns():
    torch.manual_seed(0)
    model = TinyFCN()
    model.classifier = ConditionalClassifier(16, 3, dropout=0.0)
    # The class of a pixel is its brightest colour channel.
    img = torch.rand(4, 3, 12, 12)
    label = img.argmax(1)
    criterion = CondNetLoss(aux_weight=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses, accs = [], []
    for _ in range(20):
        logits, guide = model.classifier(model.body(img), return_guide=True)
        out = criterion(label, logits, guide)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        accs.append(out["acc_seg"].item())
    assert losses[-1] < 0.5 * losses[0]
    assert accs[-1] > 80 > accs[0]
    assert model(img).shape == (4, 3, 12, 12)


def test_drop_in_on_a_timm_backbone():
    torch.manual_seed(0)
    backbone = timm.create_model("resnet18", features_only=True, out_indices=(4,), pretrained=False)
    channels = backbone.feature_info.channels()[-1]
    clf = ConditionalClassifier(channels, 5)
    img = torch.randn(2, 3, 64, 64)
    (feat,) = backbone(img)
    logits, guide = clf(feat, return_guide=True)
    assert logits.shape == guide.shape == (2, 5, 2, 2)
    label = torch.randint(0, 5, (2, 64, 64))
    CondNetLoss()(label, logits, guide)["loss"].backward()
    first_conv = next(backbone.parameters())
    for p in (first_conv, clf.guidance_project.weight, clf.filter_project.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_torch_compile_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    clf = ConditionalClassifier(8, 5, dropout=0.0)
    feat = features(C=8).requires_grad_()
    compiled = torch.compile(clf)
    results = []
    for fn in (compiled, clf):
        logits, guide = fn(feat, return_guide=True)
        grads = torch.autograd.grad((logits**2).sum() + guide.sum(), [feat, *clf.parameters()])
        results.append((logits, guide, *grads))
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels must be a positive int"),
        ({"num_classes": True}, "num_classes must be a positive int"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"layout": "grouped"}, "layout must be one of"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    args = {"in_channels": 6, "num_classes": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        ConditionalClassifier(**args)


def test_backend_is_set_after_building():
    with pytest.raises(TypeError, match="backend"):
        ConditionalClassifier(6, 4, backend="reference")  # not a constructor argument
    with torch.device("meta"):
        model = build_model("condnet_r50-d8_ade20k", channels=16, c1_channels=8)
    (clf,) = set_backend(model, "reference")
    assert clf is model.decode_head.classifier and clf.backend == "reference"
    with pytest.raises(ValueError, match="backend must be None or one of"):
        set_backend(model, "bogus")
    assert set_backend(model, None)[0].backend is None
    with torch.device("meta"):
        plain = build_model("condnet_r50-d8_ade20k-plain", channels=16, c1_channels=8)
    with pytest.raises(ValueError, match="no ConditionalClassifier: its plain classifier"):
        set_backend(plain, "reference")


class _OpCalls(TorchFunctionMode):
    """The torch.ops.condnet calls made inside it."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if str(func).startswith("condnet."):
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


@needs_extension
def test_set_backend_wins_over_use_backend_and_the_environment(monkeypatch):
    clf = ConditionalClassifier(6, 4)
    monkeypatch.setenv("CONDNET_BACKEND", "extension")
    with _OpCalls() as seen:
        clf(features())
    assert seen.calls == ["condnet.conditional_classifier"]  # the fused op
    set_backend(clf, "reference")
    with _OpCalls() as seen, ops.use_backend("extension"):
        clf(features())
    assert seen.calls == []  # the reference ran: no compiled op was called


def test_bad_features():
    clf = ConditionalClassifier(6, 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) tensor; got \(6, 5, 7\)"):
        clf(features()[0])
    with pytest.raises(ValueError, match="5 channels; this classifier expects in_channels=6"):
        clf(features(C=5))


def test_readme_example():
    # The same code as the README section "Use it in your model".
    import torch

    from condnet.models.losses import cross_entropy, dice_guidance_loss
    from condnet.nn import ConditionalClassifier

    feats = torch.randn(2, 512, 32, 32)  # your decoder's output at 1/8 of the image
    label = torch.randint(0, 150, (2, 256, 256))  # int64 class indices, 255 = ignore

    classifier = ConditionalClassifier(512, 150)  # was: nn.Conv2d(512, 150, 1)
    logits, guide_logits = classifier(feats, return_guide=True)
    loss = cross_entropy(logits, label) + 0.2 * dice_guidance_loss(guide_logits, label)
    loss.backward()
    pred = classifier.eval()(feats).argmax(1)  # inference: logits only

    assert logits.shape == guide_logits.shape == (2, 150, 32, 32)
    assert pred.shape == (2, 32, 32) and torch.isfinite(loss)
