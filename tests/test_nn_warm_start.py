"""condnet.nn.warm_start_: the projection generates the plain classifier for
every image, in both layouts (the released grouped-conv one with its quirky split)."""

import pytest
import torch

from condnet import ops
from condnet.nn import LAYOUTS, ConditionalClassifier, warm_start_, warm_start_tensors

C, K = 6, 4


def plain(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(K, C, generator=g, dtype=dtype), torch.randn(K, generator=g, dtype=dtype)


def test_grouped_conv_bias_is_the_weights_class_major_then_the_biases():
    weight, bias = plain()
    state = warm_start_tensors(weight.reshape(K, C, 1, 1), bias, "grouped_conv")
    assert state["filter_project.weight"].shape == (C * K + K, C, 1, 1)
    assert not state["filter_project.weight"].any()
    # Group k of the grouped conv owns outputs k*(C+1) ... k*(C+1)+C, so the
    # group boundaries cut across classes; the split reads class-major weights.
    assert torch.equal(state["filter_project.bias"][: C * K], weight.flatten())
    assert torch.equal(state["filter_project.bias"][C * K :], bias)
    feats = torch.randn(3, K, C, dtype=torch.float64)
    w, b = ops.project_grouped_conv(
        feats, state["filter_project.weight"], state["filter_project.bias"]
    )
    assert torch.equal(w, weight.expand(3, K, C)) and torch.equal(b, bias.expand(3, K))


def test_per_class_bias_holds_each_class_weight_and_bias():
    weight, bias = plain()
    state = warm_start_tensors(weight, bias, "per_class")
    assert not state["filter_weight"].any()
    feats = torch.randn(3, K, C, dtype=torch.float64)
    w, b = ops.project_per_class(feats, state["filter_weight"], state["filter_bias"])
    assert torch.equal(w, weight.expand(3, K, C)) and torch.equal(b, bias.expand(3, K))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_warm_started_classifier_is_the_plain_conv(layout):
    weight, bias = plain()
    clf = warm_start_(ConditionalClassifier(C, K, layout, dropout=0.0).double(), weight, bias)
    assert torch.equal(clf.guidance_project.weight.flatten(1), weight)
    x = torch.randn(2, C, 5, 7, dtype=torch.float64)
    logits, guide = clf(x, return_guide=True)
    want = torch.nn.functional.conv2d(x, weight[:, :, None, None], bias)
    torch.testing.assert_close(logits, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(guide, want, rtol=0, atol=1e-12)


def test_missing_bias_is_zero_and_the_tensors_are_copies():
    weight, _ = plain()
    state = warm_start_tensors(weight, None, "grouped_conv")
    assert not state["guidance_project.bias"].any()
    weight.add_(1)
    assert not torch.equal(state["guidance_project.weight"].flatten(1), weight)


def test_errors():
    weight, bias = plain()
    with pytest.raises(ValueError, match="layout must be one of"):
        warm_start_tensors(weight, bias, "grouped")
    with pytest.raises(ValueError, match=r"\(K, C\) or \(K, C, 1, 1\)"):
        warm_start_tensors(weight[None], bias)
    with pytest.raises(ValueError, match=r"bias must be None or a \(4,\) tensor"):
        warm_start_tensors(weight, bias[:3])
    with pytest.raises(ValueError, match="dtype and device of weight"):
        warm_start_tensors(weight, bias.float())
    with pytest.raises(TypeError, match="floating-point tensor"):
        warm_start_tensors(weight.long(), bias)
    with pytest.raises(ValueError, match=r"needs \(K, C\) = \(4, 5\)"):
        warm_start_(ConditionalClassifier(5, K), weight.float(), bias.float())
    with pytest.raises(TypeError, match="must be a ConditionalClassifier"):
        warm_start_(torch.nn.Conv2d(C, K, 1), weight, bias)
