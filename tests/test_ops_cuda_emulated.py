"""The CUDA kernels of csrc/cuda, run on the CPU: the same sources compiled
against a host emulation of the CUDA features they use
(csrc/cuda/emulate/host_shim.h: a host thread per CUDA thread, a barrier for
__syncthreads, WMMA fragments as whole tiles). The real launch code runs too
(tile counts, pixel splits, workspaces, the sums of the partials), so every output
and gradient is checked against the reference in float64, float32, bfloat16
and float16, at shapes that cover several class, channel and pixel tiles,
ragged tails and multi-split reductions. The emulated GPU is an sm_90, so the
float16/bfloat16 forward of class_pool runs the one-pass cluster kernel;
the two-pass path is checked too.

What only a GPU can show (timing, the memory model, fragment layouts, the
compiled code itself) is tested in test_ops_gpu.py and
test_ops_gpu_classifier.py.
"""

import pytest
import torch

from condnet.ops import reference
from tests.emulated_cuda import SHAPES, build_harness
from tests.emulated_cuda import close as _close
from tests.opcases import TOLERANCES, make_inputs

pytestmark = pytest.mark.slow

DTYPES = list(TOLERANCES)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    return build_harness(tmp_path_factory, "condnet_cuda_emulation", "harness.cpp")


def _inputs(shape, dtype, seed=0):
    """Inputs and upstream gradients rounded to dtype (the kernels' view) and
    the float64 copies the truth is computed from."""
    B, C, K, H, W = shape
    x, gw, gb, w, b = make_inputs(B, C, K, H, W, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    df = torch.randn(B, K, C, generator=gen, dtype=torch.float64)
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    low = [t.to(dtype) for t in (x, gw, gb, w, b, dg, df, dy)]
    return low, [t.double() for t in low]


def _class_pool_truth(x, gw, gb, dg, df):
    leaves = [t.clone().requires_grad_() for t in (x, gw, gb)]
    g, f = reference.class_pool(*leaves)
    pairs = [(o, u) for o, u in ((g, dg), (f, df)) if u is not None]
    torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return g.detach(), f.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_reference(emu, shape, dtype):
    (x, gw, gb, w, b, *_), (xd, gwd, gbd, wd, bd, *_) = _inputs(shape, dtype)
    g, f = emu.class_pool(x, gw, gb)
    tg, tf = reference.class_pool(xd, gwd, gbd)
    _close("guide_logits", g, tg, dtype)
    _close("class_feats", f, tf, dtype)
    _close("logits", emu.dynamic_classify(x, w, b), reference.dynamic_classify(xd, wd, bd), dtype)
    g, f = emu.class_pool(x, gw, None)
    _close("class_feats without bias", f, reference.class_pool(xd, gwd)[1], dtype)
    _close(
        "logits without bias",
        emu.dynamic_classify(x, w, None),
        reference.dynamic_classify(xd, wd),
        dtype,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_two_pass_forward_matches_reference(emu, monkeypatch, shape, dtype):
    """float16/bfloat16 take the one-pass cluster kernel (the emulated GPU is
    an sm_90); CONDNET_CUDA_ONE_PASS=0 selects the two-pass path of other GPUs."""
    (x, gw, gb, *_), (xd, gwd, gbd, *_) = _inputs(shape, dtype)
    one_pass = emu.class_pool(x, gw, gb)
    monkeypatch.setenv("CONDNET_CUDA_ONE_PASS", "0")
    two_pass = emu.class_pool(x, gw, gb)
    for name, got, want, truth in zip(
        ("guide_logits", "class_feats"),
        two_pass,
        one_pass,
        reference.class_pool(xd, gwd, gbd),
        strict=True,
    ):
        _close(name, got, truth, dtype)
        _close(name, got, want.double(), dtype)


@pytest.mark.parametrize("shape", [(1, 150, 2, 5, 7), (2, 130, 5, 9, 9)])
def test_cluster_of_three_blocks(emu, shape):
    """C > 128: clusters of 3 blocks; with K=2 one block owns no classes."""
    (x, gw, gb, *_), (xd, gwd, gbd, *_) = _inputs(shape, torch.bfloat16)
    for name, got, truth in zip(
        ("guide_logits", "class_feats"),
        emu.class_pool(x, gw, gb),
        reference.class_pool(xd, gwd, gbd),
        strict=True,
    ):
        _close(name, got, truth, torch.bfloat16)


@pytest.mark.parametrize("upstream", ["both", "feats_only", "logits_only"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_class_pool_backward_matches_reference(emu, shape, dtype, upstream):
    (x, gw, gb, _, _, dg, df, _), (xd, gwd, gbd, _, _, dgd, dfd, _) = _inputs(shape, dtype)
    if upstream == "feats_only":
        dg = dgd = None
    if upstream == "logits_only":
        df = dfd = None
    g, _ = emu.class_pool(x, gw, gb)
    _, _, truth = _class_pool_truth(xd, gwd, gbd, dgd, dfd)
    got = emu.class_pool_backward(dg, df, x, gw, g, [True, True, True])
    for name, a, t in zip(("dx", "d_guide_weight", "d_guide_bias"), got, truth, strict=True):
        _close(name, a, t, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_dynamic_classify_backward_matches_reference(emu, shape, dtype):
    (x, _, _, w, b, _, _, dy), (xd, _, _, wd, bd, _, _, dyd) = _inputs(shape, dtype)
    leaves = [t.clone().requires_grad_() for t in (xd, wd, bd)]
    reference.dynamic_classify(*leaves).backward(dyd)
    got = emu.dynamic_classify_backward(dy, x, w, [True, True, True])
    for name, a, t in zip(("dx", "dw", "dbeta"), got, leaves, strict=True):
        _close(name, a, t.grad, dtype)


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_output_mask_computes_only_what_is_asked(emu, mask):
    shape = (2, 40, 7, 7, 9)
    (x, gw, gb, w, _, dg, df, dy), (xd, gwd, gbd, *_) = _inputs(shape, torch.float64)
    g, _ = emu.class_pool(x, gw, gb)
    _, _, truth = _class_pool_truth(xd, gwd, gbd, dg, df)
    for got, want, need in zip(
        emu.class_pool_backward(dg, df, x, gw, g, list(mask)), truth, mask, strict=True
    ):
        assert (got is None) == (not need)
        if need:
            _close("class_pool_backward", got, want, torch.float64)
    full = emu.dynamic_classify_backward(dy, x, w, [True, True, True])
    for got, want, need in zip(
        emu.dynamic_classify_backward(dy, x, w, list(mask)), full, mask, strict=True
    ):
        assert (got is None) == (not need)
        if need:
            assert torch.equal(got, want)


def test_no_upstream_gradient_gives_zeros(emu):
    (x, gw, gb, *_), _ = _inputs((2, 40, 7, 7, 9), torch.float32)
    g, _ = emu.class_pool(x, gw, gb)
    dx, dw, db = emu.class_pool_backward(None, None, x, gw, g, [True, True, True])
    assert not dx.any() and not dw.any() and not db.any()
    assert (dx.shape, dw.shape, db.shape) == (x.shape, gw.shape, gb.shape)


def test_empty_batch(emu):
    (x, gw, gb, w, b, *_), _ = _inputs((1, 6, 3, 4, 5), torch.float32)
    x, w, b = x[:0], w[:0], b[:0]
    g, f = emu.class_pool(x, gw, gb)
    assert g.shape == (0, 3, 4, 5) and f.shape == (0, 3, 6)
    assert emu.dynamic_classify(x, w, b).shape == (0, 3, 4, 5)
    dx, dw, db = emu.class_pool_backward(g, f, x, gw, g, [True, True, True])
    assert dx.shape == x.shape and not dw.any() and not db.any()
    dx, dw, db = emu.dynamic_classify_backward(g, x, w, [True, True, True])
    assert (dx.shape, dw.shape, db.shape) == (x.shape, w.shape, b.shape)


def test_large_logits_stay_finite(emu):
    (x, gw, gb, *_), (xd, gwd, gbd, *_) = _inputs((2, 40, 7, 7, 9), torch.float32)
    g, f = emu.class_pool(x, gw * 100, gb)
    assert torch.isfinite(f).all()
    _close("class_feats", f, reference.class_pool(xd, gwd * 100, gbd)[1], torch.float32)


def test_channels_last_and_bad_inputs(emu):
    (x, gw, gb, w, b, *_), (xd, gwd, gbd, *_) = _inputs((2, 40, 7, 7, 9), torch.float32)
    g, f = emu.class_pool(x.to(memory_format=torch.channels_last), gw, gb)
    _close("class_feats", f, reference.class_pool(xd, gwd, gbd)[1], torch.float32)
    with pytest.raises(ValueError, match="guide_weight must have shape"):
        emu.class_pool(x, gw[:, :3], gb)
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        emu.dynamic_classify(x, w.double(), b)


# -- the projection and the whole classifier's single dx ------------------------------------

PROJECT_SHAPES = [  # B, K, C
    (2, 3, 70),  # two row tiles (71 rows) and two channel tiles, ragged
    (1, 1, 5),  # one class, one row tile
    (5, 2, 64),  # 5 images: a group of 8
    (33, 2, 9),  # 33 images: two passes of 32 (16 in float64)
]


def _project_inputs(shape, dtype, weight_dtype, seed=0):
    B, K, C = shape
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(dtype)
    A = (torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5).to(weight_dtype)
    a = (torch.randn(K, C + 1, generator=gen, dtype=torch.float64) * 0.1).to(weight_dtype)
    dtheta = torch.randn(B, K, C + 1, generator=gen, dtype=torch.float64).to(dtype)
    return f, A, a, dtheta


# Each float16/bfloat16 case with float32 master weights too: the autocast path.
PROJECT_DTYPES = [(d, d) for d in DTYPES] + [
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
]


@pytest.mark.parametrize("dtype,weight_dtype", PROJECT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", PROJECT_SHAPES)
def test_project_matches_reference(emu, shape, dtype, weight_dtype):
    f, A, a, dtheta = _project_inputs(shape, dtype, weight_dtype)
    leaves = [t.double().requires_grad_() for t in (f, A, a)]
    theta_truth = reference.project(*leaves)
    theta_truth.backward(dtheta.double())
    theta = emu.project(f, A, a)
    _close("theta", theta, theta_truth.detach(), dtype)
    _close(
        "theta without bias",
        emu.project(f, A, None),
        reference.project(*leaves[:2]).detach(),
        dtype,
    )
    df, dA, da = emu.project_backward(dtheta, f, A, [True, True, True])
    assert (df.dtype, dA.dtype, da.dtype) == (dtype, weight_dtype, weight_dtype)
    for name, got, leaf in zip(("df", "dA", "da"), (df, dA, da), leaves, strict=True):
        # dA and da in float32 from 16-bit inputs: float32 sums of exact products.
        _close(name, got, leaf.grad, got.dtype)


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_project_output_mask(emu, mask):
    f, A, _, dtheta = _project_inputs((3, 2, 70), torch.float64, torch.float64)
    full = emu.project_backward(dtheta, f, A, [True, True, True])
    for got, want, need in zip(
        emu.project_backward(dtheta, f, A, list(mask)), full, mask, strict=True
    ):
        assert (got is None) == (not need)
        if need:
            assert torch.equal(got, want)


def test_project_empty_batch_and_bad_inputs(emu):
    f, A, a, dtheta = _project_inputs((2, 3, 6), torch.float32, torch.float32)
    assert emu.project(f[:0], A, a).shape == (0, 3, 7)
    _, dA, da = emu.project_backward(dtheta[:0], f[:0], A, [True, True, True])
    assert not dA.any() and not da.any()
    with pytest.raises(ValueError, match="proj_weight must have shape"):
        emu.project(f, A[:, :6], a)
    with pytest.raises(TypeError, match="proj_weight must have class_feats' dtype"):
        emu.project(f.half(), A.bfloat16(), None)


@pytest.mark.parametrize("upstream", ["both", "feats_only", "logits_only", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_class_pool_backward_adds_the_classifier_dx(emu, dtype, upstream):
    """The whole classifier's backward passes grad_logits and the per-image
    weights to class_pool's backward, whose dx then includes w^T dy."""
    shape = (2, 70, 70, 5, 13)  # two class and two channel tiles
    (x, gw, gb, w, _, dg, df, dy), (xd, gwd, gbd, wd, _, dgd, dfd, dyd) = _inputs(shape, dtype)
    if upstream in ("feats_only", "none"):
        dg = dgd = None
    if upstream in ("logits_only", "none"):
        df = dfd = None
    g, _ = emu.class_pool(x, gw, gb)
    got = emu.class_pool_backward(dg, df, x, gw, g, [True, True, True], dy, w)
    B, C, H, W = x.shape
    classifier_dx = torch.einsum("bkc,bkn->bcn", wd, dyd.flatten(2)).reshape(B, C, H, W)
    if upstream == "none":
        truth = [classifier_dx, torch.zeros_like(gwd), torch.zeros_like(gbd)]
    else:
        _, _, truth = _class_pool_truth(xd, gwd, gbd, dgd, dfd)
        truth[0] = truth[0] + classifier_dx
    for name, a, t in zip(("dx", "d_guide_weight", "d_guide_bias"), got, truth, strict=True):
        _close(name, a, t, dtype)
