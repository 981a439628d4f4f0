"""The Triton kernels on a CUDA GPU (marked ``gpu``, skipped without one):
the DESIGN.md shapes in bfloat16, float16 and float32 against a float64
ground truth, K=1024, opcheck on every op, torch.compile (inductor) with
outputs and gradients equal to eager, and the deterministic mode.
"""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import backend, reference
from condnet.ops import triton as triton_kernels
from tests.opcases import make_inputs


def _gpu_missing_reason():
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    return triton_kernels.unavailable_reason("cuda")


_reason = _gpu_missing_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

# (rtol, atol as a fraction of the largest |truth| of the tensor). The truth is
# float64 math on the dtype-rounded inputs, so only the kernel's error counts:
# a rounding of the output plus the rounding of p (or of dgt) to the dtype
# before the tensor-core products. A scaled atol keeps entries that are sums
# of many terms cancelling to near zero from failing on a relative test.
GPU_TOLERANCES = {
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (4e-3, 2e-3),
    torch.float32: (2e-4, 1e-4),
}

DESIGN_SHAPES = {  # B, C, K, H, W (DESIGN.md section 2)
    "ade": (8, 512, 150, 64, 64),
    "pc59": (8, 512, 59, 60, 60),
    "cityscapes": (8, 512, 19, 128, 256),
}


def _cuda_inputs(shape, dtype, seed=0):
    """Inputs rounded to ``dtype`` on the GPU, and their exact float64 copies."""
    B, C, K, H, W = shape
    x, gw, gb, w, b = make_inputs(*shape, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    df = torch.randn(B, K, C, generator=gen, dtype=torch.float64)
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    low = [t.to("cuda", dtype) for t in (x, gw, gb, w, b, dg, df, dy)]
    return low, [t.double() for t in low]


def _close(name, got, truth, dtype):
    rtol, frac = GPU_TOLERANCES[dtype]
    assert got.dtype == dtype, name
    atol = frac * truth.abs().max().item()
    torch.testing.assert_close(
        got.double(), truth, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}"
    )


def _forward_backward(class_pool, dynamic_classify, x, gw, gb, w, b, dg, df, dy):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, gw, gb, w, b)]
    x, gw, gb, w, b = leaves
    g, f = class_pool(x, gw, gb)
    y = dynamic_classify(x, w, b)
    pairs = [(o, u) for o, u in ((g, dg), (f, df), (y, dy)) if u is not None]
    torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return {
        "g": g,
        "f": f,
        "y": y,
        "dx": x.grad,
        "d_guide_weight": gw.grad,
        "d_guide_bias": gb.grad,
        "dw": w.grad,
        "dbeta": b.grad,
    }


def _triton_run(*args):
    return _forward_backward(
        lambda *a: ops.class_pool(*a, backend="triton"),
        lambda *a: ops.dynamic_classify(*a, backend="triton"),
        *args,
    )


def _truth(*args):
    return _forward_backward(reference.class_pool, reference.dynamic_classify, *args)


@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCES))
def test_design_shapes_match_float64_truth(name, dtype):
    low, exact = _cuda_inputs(DESIGN_SHAPES[name], dtype)
    got, truth = _triton_run(*low), _truth(*exact)
    for key in truth:
        _close(key, got[key], truth[key], dtype)


@pytest.mark.parametrize("which", ["feats_only", "logits_only"])
def test_one_upstream_gradient(which):
    dtype = torch.bfloat16
    low, exact = _cuda_inputs(DESIGN_SHAPES["ade"], dtype)
    for args in (low, exact):
        args[5 if which == "feats_only" else 6] = None
    got, truth = _triton_run(*low), _truth(*exact)
    for key in ("dx", "d_guide_weight", "d_guide_bias"):
        _close(key, got[key], truth[key], dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_thousand_classes(dtype):
    low, exact = _cuda_inputs((2, 256, 1024, 32, 33), dtype)
    got, truth = _triton_run(*low), _truth(*exact)
    for key in truth:
        _close(key, got[key], truth[key], dtype)


def test_huge_logits_stay_finite():
    low, _ = _cuda_inputs((2, 64, 150, 16, 16), torch.float32)
    low[0] = low[0] * 1e4
    got = _triton_run(*low)
    assert all(torch.isfinite(t).all() for t in got.values())


def test_channels_last_matches_contiguous():
    low, _ = _cuda_inputs((4, 128, 59, 30, 31), torch.bfloat16)
    want = _triton_run(*low)
    low[0] = low[0].contiguous(memory_format=torch.channels_last)
    got = _triton_run(*low)
    for key in want:
        _close(key, got[key], want[key].double(), torch.bfloat16)


def test_deterministic_mode_is_bitwise_reproducible():
    low, _ = _cuda_inputs(DESIGN_SHAPES["ade"], torch.bfloat16)
    with_atomics = _triton_run(*low)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        first, second = _triton_run(*low), _triton_run(*low)
    finally:
        torch.use_deterministic_algorithms(was)
    for key in first:
        assert torch.equal(first[key], second[key]), key
        _close(key, first[key], with_atomics[key].double(), torch.bfloat16)


OPCHECK_SHAPES = [(2, 40, 37, 9, 11), (1, 3, 1, 1, 3)]


@pytest.mark.parametrize("shape", OPCHECK_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_forward_ops(shape, bias, channels_last):
    x, gw, gb, w, b = (
        t.cuda() if t is not None else None
        for t in make_inputs(*shape, dtype=torch.float32, bias=bias)
    )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for t in (x, gw, gb, w, b):
        if t is not None:
            t.requires_grad_(True)
    torch.library.opcheck(torch.ops.condnet_triton.class_pool.default, (x, gw, gb))
    torch.library.opcheck(torch.ops.condnet_triton.dynamic_classify.default, (x, w, b))


@pytest.mark.parametrize("shape", OPCHECK_SHAPES)
def test_opcheck_backward_ops(shape):
    B, C, K, H, W = shape
    x, gw, _, w, _ = make_inputs(*shape, dtype=torch.float32, bias=False)
    x, gw, w = x.cuda(), gw.cuda(), w.cuda()
    g, _ = torch.ops.condnet_triton.class_pool(x, gw, None)
    dg = torch.randn(B, K, H, W, device="cuda")
    df = torch.randn(B, K, C, device="cuda")
    masks = ([True, True, True], [True, False, True], [False, True, False])
    for grads, mask in zip(((dg, df), (None, df), (dg, None)), masks, strict=True):
        torch.library.opcheck(
            torch.ops.condnet_triton.class_pool_backward.default, (*grads, x, gw, g, mask)
        )
    for mask in masks:
        torch.library.opcheck(
            torch.ops.condnet_triton.dynamic_classify_backward.default, (dg, x, w, mask)
        )


def _classifier_loss(x, gw, gb, pw, pb):
    g, f = ops.class_pool(x, gw, gb, backend="triton")
    w, beta = ops.project_official(f, pw, pb)
    y = ops.dynamic_classify(x, w, beta, backend="triton")
    return (g * g).sum() + (y * y).sum()


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(dynamic):
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    B, C, K, H, W = 2, 64, 19, 12, 13
    x, gw, gb, _, _ = (t.cuda() for t in make_inputs(B, C, K, H, W, dtype=torch.float32)[:3])
    gen = torch.Generator().manual_seed(7)
    pw = (torch.randn(C * K + K, C, 1, 1, generator=gen) * C**-0.5).cuda()
    pb = torch.randn(C * K + K, generator=gen).cuda()
    params = [t.requires_grad_(True) for t in (x, gw, gb, pw, pb)]

    compiled = torch.compile(_classifier_loss, fullgraph=True, dynamic=dynamic)

    def step(fn):
        loss = fn(*params)
        return loss, torch.autograd.grad(loss, params)

    (got, got_grads), code = run_and_get_code(step, compiled)
    want, want_grads = step(_classifier_loss)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(got_grads, want_grads, atol=1e-4, rtol=1e-4)
    # Inductor launched the Triton kernels themselves, not an opaque op.
    source = "\n".join(code)
    for kernel in ("_class_pool_fwd_kernel", "_class_pool_bwd_kernel"):
        assert kernel in source, kernel
    for kernel in ("_dynamic_classify_fwd_kernel", "_dynamic_classify_dw_kernel"):
        assert kernel in source, kernel


def test_auto_picks_triton_on_this_gpu():
    assert triton_kernels.available("cuda")
    assert backend.resolve("class_pool", "cuda") == "triton"
    assert backend.resolve("dynamic_classify", "cuda", "auto") == "triton"
