"""condnet.nn.make_conditional on small networks: which conv it finds, the
errors when none or several qualify, and the exact warm start."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condnet.nn import (
    LAYOUTS,
    ConditionalClassifier,
    DropInConditionalClassifier,
    conditional_classifiers,
    find_classifiers,
    make_conditional,
)

K = 5


class Net(nn.Module):
    """A stem, a main head ending in ``head.cls`` and an auxiliary head
    ``aux.cls``; ``forward`` returns torchvision's ``{"out", "aux"}`` dict."""

    def __init__(self, kernel=1, k=K):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential()
        self.head.add_module("conv", nn.Conv2d(8, 8, 1))  # 1x1 but not K channels
        self.head.add_module("relu", nn.ReLU())
        self.head.add_module("cls", nn.Conv2d(8, k, kernel, padding=kernel // 2))
        self.aux = nn.Sequential()
        self.aux.add_module("cls", nn.Conv2d(8, k, 1))

    def forward(self, x):
        feats = self.stem(x)
        out = F.interpolate(self.head(feats), size=x.shape[-2:], mode="bilinear")
        return {"out": out, "aux": self.aux(feats)}


class TwoBranch(nn.Module):
    """LR-ASPP's shape: two classifier convs side by side, summed."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.low_classifier = nn.Conv2d(3, K, 1)
        self.high_classifier = nn.Conv2d(6, K, 1)

    def forward(self, x):
        return self.low_classifier(x) + self.high_classifier(self.stem(x))


class Shared(nn.Module):
    """One classifier conv applied at two scales (deep supervision style)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.cls = nn.Conv2d(6, K, 1)

    def forward(self, x):
        f = self.stem(x)
        small = self.cls(F.avg_pool2d(f, 2))
        return self.cls(f) + F.interpolate(small, size=f.shape[-2:])


def image(dtype=torch.float32, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, size, size, generator=g, dtype=dtype)


def randomize_(model):
    """Non-zero biases everywhere, so the warm start is checked on them too."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.normal_()
    return model


def test_finds_the_main_classifier_not_the_auxiliary_one():
    assert find_classifiers(Net()) == ["head.cls"]
    assert find_classifiers(Net(), auxiliary=True) == ["head.cls", "aux.cls"]
    assert find_classifiers(Net(), output="aux") == ["aux.cls"]


def test_side_by_side_classifiers_take_the_last_one():
    assert find_classifiers(TwoBranch()) == ["high_classifier"]


def test_probe_restores_training_flags_and_leaves_batchnorm_alone():
    model = Net().train()
    model.head.eval()
    stats = model.stem[1].running_mean.clone()
    find_classifiers(model, image())
    assert model.training and model.stem.training and not model.head.training
    assert torch.equal(model.stem[1].running_mean, stats)


def test_frozen_model_and_keyword_example_input():
    model = Net().requires_grad_(False)
    assert find_classifiers(model) == ["head.cls"]

    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Net()

        def forward(self, pixel_values):
            return (self.net(pixel_values)["out"],)

    model = Keyword().requires_grad_(False)
    assert find_classifiers(model, {"pixel_values": image()}) == ["net.head.cls"]
    with pytest.raises(TypeError, match="example_input must be a tensor, a tuple"):
        find_classifiers(model, [image()])


def test_no_candidate_lists_the_convs_seen():
    class Concat(nn.Module):  # K = 5 channels, but from two convs of 3 and 2
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], dim=1)

    with pytest.raises(ValueError, match="found no nn.Conv2d") as info:
        make_conditional(Concat())
    message = str(info.value)
    assert "main output has K=5 channels" in message
    assert "a: Conv2d(3, 3, 1x1) (on the way to the main output)" in message
    assert "b: Conv2d(3, 2, 3x3) (on the way to the main output)" in message

    class Grouped(nn.Module):  # K channels, but from a grouped conv
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 1)
            self.grouped = nn.Conv2d(4, 6, 1, groups=2)

        def forward(self, x):
            return self.grouped(self.stem(x))

    with pytest.raises(ValueError, match=r"grouped: Conv2d\(4, 6, 1x1\)"):
        make_conditional(Grouped())


def test_shared_classifier_is_ambiguous():
    with pytest.raises(ValueError, match="'cls' ran 2 times"):
        make_conditional(Shared())
    # Naming it is allowed: the guide logits of the last call are kept.
    model = make_conditional(Shared(), "cls")
    assert isinstance(model.cls, DropInConditionalClassifier)


def test_main_output_errors():
    class Unnamed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, K, 1), nn.Conv2d(3, K, 1)

        def forward(self, x):
            return {"first": self.a(x), "second": self.b(x)}

    with pytest.raises(ValueError, match="pass output=<key>"):
        find_classifiers(Unnamed())
    assert find_classifiers(Unnamed(), output="second") == ["b"]
    with pytest.raises(ValueError, match="output='third' does not select"):
        find_classifiers(Unnamed(), output="third")
    with pytest.raises(ValueError, match="auxiliary=True, but no nn.Conv2d"):
        find_classifiers(TwoBranch(), auxiliary=True)


def test_target_errors():
    with pytest.raises(ValueError, match="'head.nope' is not a submodule.*head.cls"):
        make_conditional(Net(), "head.nope")
    with pytest.raises(ValueError, match="must be an nn.Conv2d; it is a ReLU"):
        make_conditional(Net(), "head.relu")
    with pytest.raises(TypeError, match="target must be None, a module name"):
        make_conditional(Net(), 3)
    with pytest.raises(ValueError, match="auxiliary=True applies only to target=None"):
        make_conditional(Net(), "head.cls", auxiliary=True)
    model = make_conditional(Net())
    with pytest.raises(ValueError, match="already a conditional classifier"):
        make_conditional(model, "head.cls")
    with pytest.raises(ValueError, match="layout must be one of"):
        make_conditional(Net(), layout="grouped")
    with pytest.raises(ValueError, match="init must be one of"):
        make_conditional(Net(), init="zeros")
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        make_conditional(Net(), dropout=1.0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        make_conditional(lambda x: x)
    with pytest.raises(ValueError, match="groups=1"):
        make_conditional(nn.Sequential(nn.Conv2d(4, 4, 1, groups=2)), "0")
    with pytest.raises(ValueError, match="is the model itself"):
        make_conditional(nn.Conv2d(3, K, 1), "")
    with pytest.raises(TypeError, match="convert the plain model first"):
        make_conditional(torch.compile(Net()))
    with pytest.raises(TypeError, match="convert the plain model first"):
        make_conditional(nn.DataParallel(Net()))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", [1, 3])
def test_warm_start_gives_the_plain_logits_in_float64(layout, kernel):
    plain = randomize_(Net(kernel=kernel)).double().eval()
    model = make_conditional(copy.deepcopy(plain), layout=layout)
    ((name, module),) = conditional_classifiers(model)
    assert name == "head.cls" and module.layout == layout
    assert module.patches == (kernel > 1)
    x = image(torch.float64)
    with torch.no_grad():
        want, got = plain(x)["out"], model(x)["out"]
    assert got.dtype == torch.float64
    assert (want - got).abs().max() <= 1e-12 * want.abs().max()
    # Training mode too (no dropout in this net): the same logits, and the guide
    # logits are the plain classifier's logits at feature size.
    model.train(), plain.train()
    torch.testing.assert_close(model(x)["out"], plain(x)["out"], rtol=0, atol=1e-12)
    feats = plain.head[:2](plain.stem(x))
    torch.testing.assert_close(module.guide_logits, plain.head.cls(feats), rtol=0, atol=1e-12)


def test_random_init_and_both_classifiers_converted():
    plain = randomize_(TwoBranch()).eval()
    model = make_conditional(copy.deepcopy(plain), ["low_classifier", "high_classifier"])
    assert [n for n, _ in conditional_classifiers(model)] == ["low_classifier", "high_classifier"]
    with torch.no_grad():
        torch.testing.assert_close(model(image()), plain(image()))
    model = make_conditional(copy.deepcopy(plain), init="random", layout="per_class").eval()
    clf = model.high_classifier
    assert not torch.equal(clf.guidance_project.weight.flatten(1), plain.high_classifier.weight)
    assert clf.filter_weight.abs().sum() > 0 and clf.filter_bias.abs().sum() == 0


def test_conversion_keeps_device_dtype_training_flag_and_shared_references():
    net = Net().to(torch.float64).eval()
    alias = nn.Module()
    alias.cls = net.head.cls
    net.alias = alias  # the same conv registered twice
    make_conditional(net, "head.cls", dropout=0.2)
    clf = net.head.cls
    assert net.alias.cls is clf and not clf.training
    assert clf.guidance_project.weight.dtype == torch.float64
    assert isinstance(clf, ConditionalClassifier) and clf.input_dropout.p == 0.2
    assert clf.feature_channels == 8 and clf.num_classes == K
    assert "feature_channels=8" in repr(clf)


def test_bias_free_conv_and_meta_device():
    net = Net()
    net.head.cls = nn.Conv2d(8, K, 1, bias=False)
    plain = copy.deepcopy(net).eval()
    model = make_conditional(net).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(image())["out"], plain(image())["out"])
    with torch.device("meta"):
        meta = Net()
    make_conditional(meta, "head.cls")
    assert meta.head.cls.filter_project.weight.is_meta
