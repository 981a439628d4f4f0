"""The reference against an independent formulation: the released model's own
way of computing the conditional classifier (1x1 conv, softmax, matmul over a
permuted copy of x, grouped-conv projection, grouped conv2d with groups=B)."""

import pytest
import torch
import torch.nn.functional as F

from condnet.ops import reference
from tests.opcases import make_inputs


def released_condnet(x, guide_w, guide_b, proj_w, proj_b):
    """The released model's formulation, written from the paper and the released code."""
    B, C, H, W = x.shape
    guide = F.conv2d(x, guide_w[:, :, None, None], guide_b)
    K = guide.shape[1]
    mask = torch.softmax(guide.view(B, K, -1), dim=1)
    feats = x.view(B, C, -1).permute(0, 2, 1)
    class_feats = torch.matmul(mask, feats) / (H * W)
    params = F.conv2d(class_feats.reshape(B, K * C, 1, 1), proj_w, proj_b, groups=K).view(B, -1)
    kernels = params[:, : K * C].reshape(B * K, C, 1, 1)
    biases = params[:, K * C :].reshape(B * K)
    logits = F.conv2d(x.reshape(1, B * C, H, W), kernels, biases, groups=B)
    return guide, class_feats, logits.view(B, K, H, W)


@pytest.mark.parametrize("shape", [(2, 8, 5, 6, 7), (1, 3, 1, 4, 4), (3, 13, 7, 1, 9)])
def test_reference_matches_released_formulation(shape):
    B, C, K, H, W = shape
    x, gw, gb, _, _ = make_inputs(B, C, K, H, W)
    gen = torch.Generator().manual_seed(1)
    proj_w = torch.randn(C * K + K, C, 1, 1, generator=gen, dtype=torch.float64)
    proj_b = torch.randn(C * K + K, generator=gen, dtype=torch.float64)

    g_ref, f_ref, y_ref = released_condnet(x, gw, gb, proj_w, proj_b)
    g, f = reference.class_pool(x, gw, gb)
    w, beta = reference.project_grouped_conv(f, proj_w, proj_b)
    y = reference.dynamic_classify(x, w, beta)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(f, f_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)


def test_grouped_conv_projection_group_quirk():
    """All K biases come from the last group; weights straddle group edges."""
    B, K, C = 1, 3, 2
    f = torch.arange(1.0, K * C + 1, dtype=torch.float64).view(B, K, C)
    proj_w = torch.zeros(C * K + K, C, 1, 1, dtype=torch.float64)
    # Output channel j belongs to group j // (C + 1) and sees class_feats[group].
    for j in range(C * K + K):
        proj_w[j, j % C] = 1.0
    w, beta = reference.project_grouped_conv(f, proj_w)
    out = torch.tensor([f[0, j // (C + 1), j % C] for j in range(C * K + K)], dtype=f.dtype)
    torch.testing.assert_close(w.flatten(), out[: K * C])
    torch.testing.assert_close(beta.flatten(), out[K * C :])
    # The last group (class K-1) produces every bias.
    assert all(j // (C + 1) == K - 1 for j in range(K * C, K * C + K))


def test_grouped_conv_projection_accepts_2d_weight():
    f = torch.randn(2, 4, 3, dtype=torch.float64)
    wt = torch.randn(3 * 4 + 4, 3, dtype=torch.float64)
    a = reference.project_grouped_conv(f, wt)
    b = reference.project_grouped_conv(f, wt[:, :, None, None])
    torch.testing.assert_close(a, b)


def test_per_class_projection_matches_loop():
    B, K, C = 2, 4, 5
    f = torch.randn(B, K, C, dtype=torch.float64)
    A = torch.randn(K, C + 1, C, dtype=torch.float64)
    a = torch.randn(K, C + 1, dtype=torch.float64)
    w, beta = reference.project_per_class(f, A, a)
    for b in range(B):
        for k in range(K):
            theta = A[k] @ f[b, k] + a[k]
            torch.testing.assert_close(w[b, k], theta[:C])
            torch.testing.assert_close(beta[b, k], theta[C])


def test_class_pool_divides_by_pixel_count_not_mask_mass():
    x = torch.ones(1, 2, 3, 5, dtype=torch.float64)
    gw = torch.randn(4, 2, dtype=torch.float64)
    _, f = reference.class_pool(x, gw)
    p = torch.softmax(torch.einsum("kc,bcn->bkn", gw, x.view(1, 2, -1)), dim=1)
    torch.testing.assert_close(f[0, :, 0], p[0].sum(-1) / 15)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_reference_returns_input_dtype_and_stays_close(dtype):
    x, gw, gb, w, b = make_inputs(2, 16, 6, 5, 5)
    g64, f64 = reference.class_pool(x, gw, gb)
    g, f = reference.class_pool(x.to(dtype), gw.to(dtype), gb.to(dtype))
    y = reference.dynamic_classify(x.to(dtype), w.to(dtype), b.to(dtype))
    assert g.dtype == f.dtype == y.dtype == dtype
    torch.testing.assert_close(g.double(), g64, atol=5e-2, rtol=2e-2)
    torch.testing.assert_close(f.double(), f64, atol=5e-2, rtol=2e-2)


def test_softmax_is_stable_for_huge_logits():
    x, gw, _, _, _ = make_inputs(1, 4, 3, 4, 4)
    g, f = reference.class_pool(x * 1e4, gw)
    assert torch.isfinite(f).all() and torch.isfinite(g).all()
