"""The projection layouts (condnet/ops/layouts.py): the views to the canonical
per-class form, the reading of theta, its gradient, the former name."""

import pytest
import torch
import torch.nn.functional as F

from condnet.nn import ConditionalClassifier
from condnet.ops import layouts

B, K, C = 3, 4, 5


def test_the_layouts_and_their_former_name():
    assert layouts.LAYOUTS == ("grouped_conv", "per_class")
    for name in layouts.LAYOUTS:
        assert layouts.check_layout(name) == name
    with pytest.warns(FutureWarning, match="'official' is now called 'grouped_conv'"):
        assert layouts.check_layout("official") == "grouped_conv"
    with pytest.raises(ValueError, match=r"mode must be one of \('grouped_conv', 'per_class'\)"):
        layouts.check_layout("Official", name="mode")
    with pytest.raises(ValueError, match="layout must be one of"):
        layouts.check_layout(None)


def test_the_former_name_builds_the_released_storage():
    with pytest.warns(FutureWarning):
        clf = ConditionalClassifier(C, K, layout="official")
    assert clf.layout == "grouped_conv"
    assert clf.filter_project.weight.shape == (C * K + K, C, 1, 1)


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_canonical_projection_is_a_view(layout):
    shapes = layouts.stored_projection_shapes(layout, K, C)
    for shape in shapes.weight:
        weight, bias = torch.randn(shape), torch.randn(shapes.bias)
        A, a = layouts.canonical_projection(weight, bias, layout, K)
        assert A.shape == (K, C + 1, C) and a.shape == (K, C + 1)
        assert A.data_ptr() == weight.data_ptr() and a.data_ptr() == bias.data_ptr()
        assert layouts.canonical_projection(weight, None, layout, K)[1] is None


def test_stored_shapes_spell_themselves_out():
    grouped = layouts.stored_projection_shapes("grouped_conv", K, C)
    assert grouped.weight == [(C * K + K, C, 1, 1), (C * K + K, C)] and grouped.bias == (24,)
    assert "(C*K + K, C, 1, 1) = (24, 5, 1, 1)" in grouped.weight_meaning
    per_class = layouts.stored_projection_shapes("per_class", K, C)
    assert per_class.weight == [(K, C + 1, C)] and per_class.bias_meaning == "(K, C+1) = (4, 6)"


def test_the_grouped_conv_reading_is_the_released_conv():
    """theta read as "grouped_conv" equals the grouped conv's output split as the
    released code splits it: the first C*K channels class-major, then K biases."""
    feats = torch.randn(B, K, C, dtype=torch.float64)
    weight = torch.randn(C * K + K, C, 1, 1, dtype=torch.float64)
    bias = torch.randn(C * K + K, dtype=torch.float64)
    out = F.conv2d(feats.reshape(B, K * C, 1, 1), weight, bias, groups=K).flatten(1)
    A, a = layouts.canonical_projection(weight, bias, "grouped_conv", K)
    theta = torch.einsum("kjc,bkc->bkj", A, feats) + a
    w, beta = layouts.split_theta(theta, "grouped_conv")
    torch.testing.assert_close(w, out[:, : K * C].reshape(B, K, C))
    torch.testing.assert_close(beta, out[:, K * C :])


@pytest.mark.parametrize("layout", layouts.LAYOUTS)
def test_split_views_theta_and_join_places_the_gradient(layout):
    theta = torch.randn(B, K, C + 1, dtype=torch.float64, requires_grad=True)
    w, beta = layouts.split_theta(theta, layout)
    assert w.shape == (B, K, C) and beta.shape == (B, K)
    assert w.data_ptr() == theta.data_ptr()  # a view, not a copy
    dw, dbeta = torch.randn_like(w), torch.randn_like(beta)
    (want,) = torch.autograd.grad((w * dw).sum() + (beta * dbeta).sum(), theta)
    torch.testing.assert_close(layouts.join_theta(dw, dbeta, layout), want, rtol=0, atol=0)
    # Together the two views cover theta exactly once.
    w2, beta2 = layouts.split_theta(theta.detach(), layout)
    assert w2.numel() + beta2.numel() == theta.numel()
    assert set(w2.flatten().tolist()) | set(beta2.flatten().tolist()) == set(
        theta.detach().flatten().tolist()
    )


@pytest.mark.parametrize(
    "fn",
    [
        lambda: layouts.split_theta(torch.zeros(1, 2, 3), "official"),
        lambda: layouts.join_theta(torch.zeros(1, 2, 2), torch.zeros(1, 2), "rows"),
        lambda: layouts.canonical_projection(torch.zeros(6, 2), None, "rows", 2),
        lambda: layouts.stored_projection_shapes("rows", 2, 2),
    ],
)
def test_the_kernel_helpers_refuse_other_names(fn):
    with pytest.raises(ValueError, match="layout must be one of"):
        fn()
