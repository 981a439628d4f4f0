"""The native CUDA kernels (backend="extension" on CUDA tensors) on a GPU,
marked ``gpu`` and skipped without one or without a CUDA build: the DESIGN.md
shapes and odd shapes against a float64 ground truth, absent upstream
gradients, output_mask, gradcheck, opcheck, torch.compile, bitwise
determinism, memory layouts, empty batches, huge logits, argument errors and
(marked ``slow`` too) more than 2**31 feature elements.
"""

import itertools
from functools import partial

import pytest
import torch

import condnet.ops as ops
from condnet.ops import backend, extension
from tests.opcases import make_inputs
from tests.test_ops_registration import classifier
from tests.test_ops_triton_gpu import (
    DESIGN_SHAPES,
    OPCHECK_SHAPES,
    _cuda_inputs,
    _forward_backward,
    _truth,
)

OPS = ("class_pool", "class_pool_backward", "dynamic_classify", "dynamic_classify_backward")


def _gpu_missing_reason():
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if not extension.has_kernel("class_pool", "cuda"):
        return extension.missing_kernel_message("class_pool", "cuda")
    return None


_reason = _gpu_missing_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_reason is not None, reason=_reason or "")]

# (rtol, atol as a fraction of the largest |truth| of the tensor). The truth is
# float64 math on the dtype-rounded inputs, so only the kernel's own error
# counts. bfloat16/float16 run on tensor cores with float32 accumulation: one
# rounding of the output plus the rounding of p (or dgt) to the dtype before
# the products, and the backward recomputes p from the rounded guide logits.
# float32 and float64 are plain FMA: only the summation order differs from the
# truth. The scaled atol keeps entries where many terms cancel to near zero
# from failing a purely relative test.
CUDA_TOLERANCES = {
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (4e-3, 2e-3),
    torch.float32: (2e-4, 1e-4),
    torch.float64: (1e-9, 1e-11),
}
LOW_PRECISION = [torch.bfloat16, torch.float16, torch.float32]

ODD_SHAPES = [  # B, C, K, H, W
    (1, 5, 1, 7, 9),
    (3, 17, 7, 1, 1),
    (1, 33, 19, 13, 31),
    (3, 100, 150, 7, 9),
    (1, 5, 150, 1, 1),
    (3, 33, 7, 13, 31),
    (1, 100, 19, 13, 31),
    (3, 100, 1, 1, 1),
    (1, 17, 1024, 13, 31),
    (3, 5, 1024, 7, 9),
]
MID_SHAPE = (3, 33, 19, 13, 31)


def _close(name, got, want, dtype, rtol=None, frac=None):
    default_rtol, default_frac = CUDA_TOLERANCES[dtype]
    rtol, frac = rtol or default_rtol, frac or default_frac
    assert got is not None, f"{name}: missing"
    assert got.dtype == dtype and got.device.type == "cuda", (name, got.dtype, got.device)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    atol = frac * want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(
        got.double(), want.double(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}"
    )


def _compare(got, truth, dtype, keys=None, **tol):
    for key in keys or truth:
        if truth[key] is None:
            assert got[key] is None, f"{key}: expected no gradient"
        else:
            _close(key, got[key], truth[key], dtype, **tol)


def _ext_run(*args, layout=None):
    """Forward and backward of both ops on the CUDA kernels; ``layout`` is
    applied to x inside the graph, so the kernels see that memory layout."""
    shaped = layout or (lambda t: t)
    return _forward_backward(
        lambda x, *a: ops.class_pool(shaped(x), *a, backend="extension"),
        lambda x, *a: ops.dynamic_classify(shaped(x), *a, backend="extension"),
        *args,
    )


def test_every_op_has_a_cuda_kernel():
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"condnet::{op}", "CUDA"), op
    assert backend.resolve("dynamic_classify", "cuda", "extension") == "extension"


@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_design_shapes_match_float64_truth(name, dtype):
    low, exact = _cuda_inputs(DESIGN_SHAPES[name], dtype)
    _compare(_ext_run(*low), _truth(*exact), dtype)


@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_two_pass_forward_matches_float64_truth(name, dtype, monkeypatch):
    """On sm_90 the 16-bit class_pool forward runs on thread-block clusters;
    CONDNET_CUDA_ONE_PASS=0 gives the two-pass path that other GPUs take."""
    monkeypatch.setenv("CONDNET_CUDA_ONE_PASS", "0")
    low, exact = _cuda_inputs(DESIGN_SHAPES[name], dtype)
    _compare(_ext_run(*low), _truth(*exact), dtype, keys=("g", "f"))


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", list(CUDA_TOLERANCES))
def test_odd_shapes_match_float64_truth(shape, dtype):
    low, exact = _cuda_inputs(shape, dtype, seed=sum(shape))
    _compare(_ext_run(*low), _truth(*exact), dtype)


@pytest.mark.parametrize("absent", ["dg", "df", "dy", "dg_and_df"])
@pytest.mark.parametrize("dtype", list(CUDA_TOLERANCES))
def test_absent_upstream_gradients(absent, dtype):
    low, exact = _cuda_inputs(MID_SHAPE, dtype)
    for name in absent.split("_and_"):
        index = 5 + ("dg", "df", "dy").index(name)
        low[index] = exact[index] = None
    _compare(_ext_run(*low), _truth(*exact), dtype)


@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=3)), ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_backward_ops_compute_only_the_masked_outputs(mask, dtype):
    low, _ = _cuda_inputs(MID_SHAPE, dtype)
    x, gw, gb, w, _, dg, df, dy = low
    cond, mask, full = torch.ops.condnet, list(mask), [True] * 3
    g, _ = cond.class_pool(x, gw, gb)
    pairs = [
        (
            cond.class_pool_backward(*ups, x, gw, g, full),
            cond.class_pool_backward(*ups, x, gw, g, mask),
        )
        for ups in ((dg, df), (None, df), (dg, None))
    ]
    pairs.append(
        (
            cond.dynamic_classify_backward(dy, x, w, full),
            cond.dynamic_classify_backward(dy, x, w, mask),
        )
    )
    for i, (want, got) in enumerate(pairs):
        for need, a, b in zip(mask, want, got, strict=True):
            assert (b is not None) == need, (i, mask)
            if need:
                _close(f"pair {i}", b, a, dtype)
    # No upstream gradient at all: the asked-for gradients are zeros.
    for need, out in zip(mask, cond.class_pool_backward(None, None, x, gw, g, mask), strict=True):
        assert (out is not None) == need
        assert out is None or (out.dtype == dtype and not out.any())


@pytest.mark.parametrize("shape", [(2, 5, 3, 3, 4), (1, 7, 1, 5, 3), (2, 9, 6, 11, 13)])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_float64(shape, bias):
    x, gw, gb, w, b = (
        None if t is None else t.cuda().requires_grad_(True)
        for t in make_inputs(*shape, bias=bias, seed=5)
    )
    check = partial(torch.autograd.gradcheck, fast_mode=shape[-1] * shape[-2] > 100)
    pool = partial(ops.class_pool, backend="extension")
    assert check(pool, (x, gw, gb))
    assert check(lambda *a: pool(*a)[0], (x, gw, gb))  # guide logits only
    assert check(lambda *a: pool(*a)[1], (x, gw, gb))  # class features only
    assert check(partial(ops.dynamic_classify, backend="extension"), (x, w, b))


@pytest.mark.parametrize("shape", OPCHECK_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_all_ops(shape, bias, channels_last):
    B, C, K, H, W = shape
    x, gw, gb, w, b = (
        None if t is None else t.to("cuda", torch.float32) for t in make_inputs(*shape, bias=bias)
    )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cond, opcheck = torch.ops.condnet, torch.library.opcheck
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in (x, gw, gb, w, b)]
    opcheck(cond.class_pool.default, tuple(leaves[:3]))
    opcheck(cond.dynamic_classify.default, (leaves[0], *leaves[3:]))
    g, _ = cond.class_pool(x, gw, gb)
    dg = torch.randn(B, K, H, W, device="cuda")
    df = torch.randn(B, K, C, device="cuda")
    masks = ([True, True, True], [True, False, True], [False, True, False])
    for ups, mask in zip(((dg, df), (None, df), (dg, None)), masks, strict=True):
        opcheck(cond.class_pool_backward.default, (*ups, x, gw, g, mask))
        opcheck(cond.dynamic_classify_backward.default, (dg, x, w, mask))


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(dynamic):
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    B, C, K, H, W = 2, 24, 7, 9, 11  # float64: eager and compiled differ only in rounding
    x, gw, gb = (t.cuda() for t in make_inputs(B, C, K, H, W)[:3])
    gen = torch.Generator().manual_seed(7)
    pw = torch.randn(C * K + K, C, 1, 1, generator=gen, dtype=torch.float64) * C**-0.5
    pb = torch.randn(C * K + K, generator=gen, dtype=torch.float64)
    params = [t.cuda().requires_grad_(True) for t in (x, gw, gb, pw, pb)]

    def step(fn):
        g, y = fn(*params, "extension")
        return g, y, torch.autograd.grad((g * g).sum() + (y * y).sum(), params)

    got, code = run_and_get_code(step, torch.compile(classifier, fullgraph=True, dynamic=dynamic))
    torch.testing.assert_close(got, step(classifier), rtol=1e-9, atol=1e-9)
    source = "\n".join(code)
    for op in OPS:
        assert f"condnet.{op}.default" in source, op


def test_bitwise_reproducible_also_in_deterministic_mode():
    low, _ = _cuda_inputs(DESIGN_SHAPES["ade"], torch.bfloat16)
    runs = [_ext_run(*low), _ext_run(*low)]
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        runs += [_ext_run(*low), _ext_run(*low)]
    finally:
        torch.use_deterministic_algorithms(was)
    for i, run in enumerate(runs[1:], start=1):
        for key, want in runs[0].items():
            assert torch.equal(run[key], want), f"run {i}: {key}"


LAYOUTS = {
    "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "hw_transposed": lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),
    "channel_stride_2": lambda x: torch.stack([x, x], dim=2).flatten(1, 2)[:, ::2],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_memory_layouts_of_x(layout, dtype):
    low, exact = _cuda_inputs(MID_SHAPE, dtype)
    assert not LAYOUTS[layout](low[0]).is_contiguous()
    _compare(_ext_run(*low, layout=LAYOUTS[layout]), _truth(*exact), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_empty_batch(dtype):
    B, C, K, H, W = shape = (0, 24, 7, 5, 6)
    low, exact = _cuda_inputs(shape, dtype)
    got = _ext_run(*low)
    expected = {
        "g": (B, K, H, W),
        "f": (B, K, C),
        "y": (B, K, H, W),
        "dx": (B, C, H, W),
        "d_guide_weight": (K, C),
        "d_guide_bias": (K,),
        "dw": (B, K, C),
        "dbeta": (B, K),
    }
    assert {key: tuple(t.shape) for key, t in got.items()} == expected
    _compare(got, _truth(*exact), dtype)  # d_guide_weight and d_guide_bias: exact zeros


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_large_logits_stay_finite_and_match(dtype):
    low, exact = _cuda_inputs((2, 64, 150, 16, 16), dtype)
    low[1] = low[1] * 100  # nearly one-hot softmax
    exact[1] = low[1].double()
    got = _ext_run(*low)
    assert all(torch.isfinite(t).all() for t in got.values())
    # bfloat16's softmax depends on the rounding of logits in the hundreds (and
    # the backward sees the rounded ones): only what does not go through it.
    keys = ("g", "y", "dw", "dbeta") if dtype == torch.bfloat16 else None
    _compare(got, _truth(*exact), dtype, keys, rtol=1e-3 if dtype == torch.float32 else None)


@pytest.mark.parametrize("direct", [False, True], ids=["public", "torch.ops"])
def test_mismatched_devices_and_dtypes_name_the_argument(direct):
    low, _ = _cuda_inputs((2, 8, 3, 4, 5), torch.float32)
    x, gw, gb, w, b, dg, df, dy = low
    cond = torch.ops.condnet
    pool = cond.class_pool if direct else partial(ops.class_pool, backend="extension")
    classify = (
        cond.dynamic_classify if direct else partial(ops.dynamic_classify, backend="extension")
    )
    cases = [
        (pool, (x, gw.cpu(), gb), "guide_weight"),
        (pool, (x.cpu(), gw, gb), "guide_weight"),
        (pool, (x, gw, gb.cpu()), "guide_bias"),
        (pool, (x, gw.half(), gb), "guide_weight"),
        (pool, (x, gw, gb.double()), "guide_bias"),
        (classify, (x, w.cpu(), b), "weight"),
        (classify, (x, w, b.cpu()), "bias"),
        (classify, (x, w.bfloat16(), b), "weight"),
    ]
    if direct:
        g, _ = cond.class_pool(x, gw, gb)
        cases += [
            (cond.class_pool_backward, (dg, df.cpu(), x, gw, g, [True] * 3), "grad_class_feats"),
            (cond.class_pool_backward, (dg.half(), df, x, gw, g, [True] * 3), "grad_guide_logits"),
            (cond.dynamic_classify_backward, (dy.cpu(), x, w, [True] * 3), "grad_logits"),
            (cond.dynamic_classify_backward, (dy, x, w.double(), [True] * 3), "weight"),
        ]
    for fn, args, name in cases:
        with pytest.raises((RuntimeError, ValueError, TypeError), match=name):
            fn(*args)
    torch.cuda.synchronize()  # a kernel that ran anyway would fault here


@pytest.mark.slow
def test_more_than_2_31_feature_elements():
    B, C, K, H, W = 1, 64, 2, 6000, 6000  # x is 4.6 GB in bfloat16
    N = H * W
    assert B * C * N > 2**31
    if torch.cuda.mem_get_info()[0] < 20 * 2**30:
        pytest.skip("needs 20 GiB of free GPU memory")
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=gen, device="cuda", dtype=torch.bfloat16)
        return t.mul_(scale)

    x = rnd(B, C, H, W).add_(0.25)  # an offset keeps f well away from zero
    gw, gb, w, b = rnd(K, C, scale=2 * C**-0.5), rnd(K), rnd(B, K, C, scale=C**-0.5), rnd(B, K)
    g, f = ops.class_pool(x, gw, gb, backend="extension")
    y = ops.dynamic_classify(x, w, b, backend="extension")
    # Truth in float32 on the GPU, a slice of pixels at a time.
    x2, gw32, w32 = x.view(C, N), gw.float(), w[0].float()
    f_sum = torch.zeros(K, C, dtype=torch.float64, device="cuda")
    step = 1 << 22
    for n0 in range(0, N, step):
        xs = x2[:, n0 : n0 + step].float()
        g_ref = torch.addmm(gb.float()[:, None], gw32, xs)
        _close(f"g[{n0}:]", g.view(K, N)[:, n0 : n0 + step], g_ref, torch.bfloat16)
        y_ref = torch.addmm(b[0].float()[:, None], w32, xs)
        _close(f"y[{n0}:]", y.view(K, N)[:, n0 : n0 + step], y_ref, torch.bfloat16)
        f_sum += (torch.softmax(g_ref, dim=0) @ xs.t()).double()
    _close("f", f[0], f_sum / N, torch.bfloat16)
