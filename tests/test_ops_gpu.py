"""The GPU kernels, one suite over both GPU backends: the native CUDA kernels
(backend="extension") and the Triton kernels (backend="triton"). Marked
``gpu``, skipped without a GPU (setup in gpu_cases.py;
``CONDNET_GPU_TESTS_ON_CPU=1`` runs them on the CPU at small shapes).

class_pool and dynamic_classify at the datasets' training shapes
(gpu_cases.DESIGN_SHAPES) and at odd shapes against float64 math on the
dtype-rounded inputs; absent upstream gradients; every backward op's output
masks; gradcheck and opcheck of every op (the
projection's and the fused classifier's too); memory layouts; empty batches;
huge logits; argument errors; more than 2**31 feature elements. The
projection and the fused classifier's values, compile and determinism are in
test_ops_gpu_classifier.py.
"""

import itertools
from functools import partial

import pytest
import torch

import condnet.ops as ops
from condnet.ops import extension
from condnet.ops import registry as backend
from tests.gpu_cases import (
    ALL_DTYPES,
    BACKENDS,
    DESIGN_SHAPES,
    DEVICE,
    LOW_PRECISION,
    MID_SHAPE,
    NEEDS_GPU,
    ODD_SHAPES,
    ON_CPU,
    THOUSAND,
    classifier_inputs,
    classifier_run,
    close,
    compare,
    gpu_inputs,
    missing_reason,
    namespace,
    run_ops,
    truth,
)
from tests.opcases import make_inputs

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_design_shapes_match_float64_truth(backend_name, name, dtype):
    low, exact = gpu_inputs(DESIGN_SHAPES[name], dtype)
    compare(run_ops(backend_name, *low), truth(*exact), dtype)


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_odd_shapes_match_float64_truth(backend_name, shape, dtype):
    low, exact = gpu_inputs(shape, dtype, seed=sum(shape))
    compare(run_ops(backend_name, *low), truth(*exact), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_thousand_classes(backend_name, dtype):
    low, exact = gpu_inputs(THOUSAND, dtype)
    compare(run_ops(backend_name, *low), truth(*exact), dtype)


@pytest.mark.parametrize("absent", ["dg", "df", "dy", "dg_and_df"])
@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_absent_upstream_gradients(backend_name, absent, dtype):
    low, exact = gpu_inputs(MID_SHAPE, dtype)
    for name in absent.split("_and_"):
        index = 5 + ("dg", "df", "dy").index(name)
        low[index] = exact[index] = None
    compare(run_ops(backend_name, *low), truth(*exact), dtype)


@NEEDS_GPU
@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_two_pass_forward_matches_float64_truth(name, dtype, monkeypatch):
    """On sm_90 the 16-bit class_pool forward of the CUDA kernels runs on
    thread-block clusters; CONDNET_CUDA_ONE_PASS=0 gives the two-pass path
    that other GPUs take."""
    if missing_reason("extension"):
        pytest.skip(missing_reason("extension"))
    monkeypatch.setenv("CONDNET_CUDA_ONE_PASS", "0")
    low, exact = gpu_inputs(DESIGN_SHAPES[name], dtype)
    compare(run_ops("extension", *low), truth(*exact), dtype, keys=("g", "f"))


# -- masks, gradcheck, opcheck, compile -------------------------------------------------------


@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=3)), ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_backward_ops_compute_only_the_masked_outputs(backend_name, mask, dtype):
    low, _ = gpu_inputs(MID_SHAPE, dtype)
    x, gw, gb, w, _, dg, df, dy = low
    ns, mask, full = namespace(backend_name), list(mask), [True] * 3
    g, f = ns.class_pool(x, gw, gb)
    theta = torch.randn(*f.shape[:2], f.shape[2] + 1, device=DEVICE, dtype=dtype)
    A = torch.randn(f.shape[1], f.shape[2] + 1, f.shape[2], device=DEVICE, dtype=dtype)
    pairs = [
        (ns.class_pool_backward(*ups, x, gw, g, full), ns.class_pool_backward(*ups, x, gw, g, mask))
        for ups in ((dg, df), (None, df), (dg, None))
    ]
    pairs.append(  # with the fused classifier's dx term
        (
            ns.class_pool_backward(dg, df, x, gw, g, full, dy, w),
            ns.class_pool_backward(dg, df, x, gw, g, mask, dy, w),
        )
    )
    pairs.append(
        (ns.dynamic_classify_backward(dy, x, w, full), ns.dynamic_classify_backward(dy, x, w, mask))
    )
    pairs.append((ns.project_backward(theta, f, A, full), ns.project_backward(theta, f, A, mask)))
    for i, (want, got) in enumerate(pairs):
        for need, a, b in zip(mask, want, got, strict=True):
            assert (b is not None) == need, (i, mask)
            if need:
                close(f"pair {i}", b, a, dtype)
    # No upstream gradient at all: the asked-for gradients are zeros.
    for need, out in zip(mask, ns.class_pool_backward(None, None, x, gw, g, mask), strict=True):
        assert (out is not None) == need
        assert out is None or (out.dtype == dtype and not out.any())


@pytest.mark.parametrize("shape", [(2, 5, 3, 3, 4), (1, 7, 1, 5, 3), (2, 9, 6, 11, 13)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_gradcheck_float64(backend_name, shape, bias):
    x, gw, gb, w, b = (
        None if t is None else t.to(DEVICE).requires_grad_(True)
        for t in make_inputs(*shape, bias=bias, seed=5)
    )
    check = partial(torch.autograd.gradcheck, fast_mode=shape[-1] * shape[-2] > 100)
    pool = partial(ops.class_pool, backend=backend_name)
    assert check(pool, (x, gw, gb))
    assert check(lambda *a: pool(*a)[0], (x, gw, gb))  # guide logits only
    assert check(lambda *a: pool(*a)[1], (x, gw, gb))  # class features only
    assert check(partial(ops.dynamic_classify, backend=backend_name), (x, w, b))
    B, C, K = shape[:3]
    gen = torch.Generator().manual_seed(6)
    pw = torch.randn(C * K + K, C, 1, 1, generator=gen, dtype=torch.float64) * C**-0.5
    pb = torch.randn(C * K + K, generator=gen, dtype=torch.float64) if bias else None
    pw, pb = (None if t is None else t.to(DEVICE).requires_grad_(True) for t in (pw, pb))
    proj = [t for t in (pw, pb) if t is not None]
    clf = partial(ops.conditional_classifier, backend=backend_name)
    assert check(lambda x, gw, *p: clf(x, gw, gb, *p), (x, gw, *proj))
    project = partial(ops.project_grouped_conv, backend=backend_name)
    f = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_(True)
    assert check(project, (f, *proj))


OPCHECK_SHAPES = [(2, 40, 37, 9, 11), (1, 3, 1, 1, 3)]


@pytest.mark.parametrize("shape", OPCHECK_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_opcheck_all_ops(backend_name, shape, bias, channels_last):
    B, C, K, H, W = shape
    x, gw, gb, w, b = (
        None if t is None else t.to(DEVICE, torch.float32) for t in make_inputs(*shape, bias=bias)
    )
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ns = namespace(backend_name)
    # The interpreter's kernels cannot be traced by AOTAutograd.
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    kwargs = {"test_utils": utils} if ON_CPU and backend_name == "triton" else {}
    opcheck = partial(torch.library.opcheck, **kwargs)
    leaves = [None if t is None else t.clone().requires_grad_(True) for t in (x, gw, gb, w, b)]
    opcheck(ns.class_pool.default, tuple(leaves[:3]))
    opcheck(ns.dynamic_classify.default, (leaves[0], *leaves[3:]))
    g, f = ns.class_pool(x, gw, gb)
    dg = torch.randn(B, K, H, W, device=DEVICE)
    df = torch.randn(B, K, C, device=DEVICE)
    masks = ([True, True, True], [True, False, True], [False, True, False])
    for ups, mask in zip(((dg, df), (None, df), (dg, None)), masks, strict=True):
        opcheck(ns.class_pool_backward.default, (*ups, x, gw, g, mask))
        opcheck(ns.dynamic_classify_backward.default, (dg, x, w, mask))
    opcheck(ns.class_pool_backward.default, (dg, df, x, gw, g, masks[0], dg, w))
    A = torch.randn(K, C + 1, C, device=DEVICE, requires_grad=True)
    a = torch.randn(K, C + 1, device=DEVICE, requires_grad=True) if bias else None
    opcheck(ns.project.default, (f.detach().requires_grad_(True), A, a))
    dtheta = torch.randn(B, K, C + 1, device=DEVICE)
    opcheck(ns.project_backward.default, (dtheta, f, A.detach(), masks[1]))
    for layout in ("grouped_conv", "per_class"):
        opcheck(ns.conditional_classifier.default, (*leaves[:3], A, a, layout))
    a = None if a is None else a.detach()
    y, g, f, theta = ns.conditional_classifier(x, gw, gb, A.detach(), a, "per_class")
    saved = (x, gw, g, f, A.detach(), theta, "per_class")
    opcheck(ns.conditional_classifier_backward.default, (dg, dg, None, None, *saved, [True] * 5))


# -- memory layouts, empty batches, huge logits, errors, big tensors --------------------------

LAYOUTS = {
    "channels_last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "hw_transposed": lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),
    "channel_stride_2": lambda x: torch.stack([x, x], dim=2).flatten(1, 2)[:, ::2],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_memory_layouts_of_x(backend_name, layout, dtype):
    low, exact = gpu_inputs(MID_SHAPE, dtype)
    assert not LAYOUTS[layout](low[0]).is_contiguous()
    compare(run_ops(backend_name, *low, layout=LAYOUTS[layout]), truth(*exact), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_empty_batch(backend_name, dtype):
    B, C, K, H, W = shape = (0, 24, 7, 5, 6)
    low, exact = gpu_inputs(shape, dtype)
    got = run_ops(backend_name, *low)
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
    compare(got, truth(*exact), dtype)  # d_guide_weight and d_guide_bias: exact zeros
    clf_low, _ = classifier_inputs(shape, "float32", "grouped_conv")
    clf = classifier_run(backend_name, clf_low, "grouped_conv")
    assert clf["y"].shape == (B, K, H, W) and not clf["d_proj_weight"].any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_large_logits_stay_finite_and_match(backend_name, dtype):
    shape = (2, 16, 15, 4, 4) if ON_CPU else (2, 64, 150, 16, 16)
    low, exact = gpu_inputs(shape, dtype)
    low[1] = low[1] * 100  # nearly one-hot softmax
    exact[1] = low[1].double()
    got = run_ops(backend_name, *low)
    assert all(torch.isfinite(t).all() for t in got.values())
    # bfloat16's softmax depends on the rounding of logits in the hundreds (and
    # the backward sees the rounded ones): only what does not go through it.
    keys = ("g", "y", "dw", "dbeta") if dtype == torch.bfloat16 else None
    compare(got, truth(*exact), dtype, keys, rtol=1e-3 if dtype == torch.float32 else None)


@NEEDS_GPU
@pytest.mark.parametrize("direct", [False, True], ids=["public", "torch.ops"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_mismatched_devices_and_dtypes_name_the_argument(backend_name, direct):
    low, _ = gpu_inputs((2, 8, 3, 4, 5), torch.float32)
    x, gw, gb, w, b, dg, df, dy = low
    ns = namespace(backend_name)
    pool = ns.class_pool if direct else partial(ops.class_pool, backend=backend_name)
    classify = (
        ns.dynamic_classify if direct else partial(ops.dynamic_classify, backend=backend_name)
    )
    f = torch.randn(2, 3, 8, device=DEVICE)
    A = torch.randn(3, 9, 8, device=DEVICE)
    project = ns.project if direct else partial(ops.project_per_class, backend=backend_name)
    cases = [
        (pool, (x, gw.cpu(), gb), "guide_weight"),
        (pool, (x.cpu(), gw, gb), "guide_weight"),
        (pool, (x, gw, gb.cpu()), "guide_bias"),
        (pool, (x, gw.half(), gb), "guide_weight"),
        (pool, (x, gw, gb.double()), "guide_bias"),
        (classify, (x, w.cpu(), b), "weight"),
        (classify, (x, w, b.cpu()), "bias"),
        (classify, (x, w.bfloat16(), b), "weight"),
        (project, (f, A.cpu(), None), "proj_weight"),
        (project, (f.half(), A.bfloat16(), None), "proj_weight"),
    ]
    if direct and backend_name == "extension":  # the Triton ops check in Python only
        g, _ = ns.class_pool(x, gw, gb)
        cases += [
            (ns.class_pool_backward, (dg, df.cpu(), x, gw, g, [True] * 3), "grad_class_feats"),
            (ns.class_pool_backward, (dg.half(), df, x, gw, g, [True] * 3), "grad_guide_logits"),
            (ns.dynamic_classify_backward, (dy.cpu(), x, w, [True] * 3), "grad_logits"),
            (ns.dynamic_classify_backward, (dy, x, w.double(), [True] * 3), "weight"),
        ]
    if direct and backend_name == "triton":
        pytest.skip("the raw Triton ops take checked arguments; the public functions check them")
    for fn, args, name in cases:
        with pytest.raises((RuntimeError, ValueError, TypeError), match=name):
            fn(*args)
    torch.cuda.synchronize()  # a kernel that ran anyway would fault here


@NEEDS_GPU
@pytest.mark.slow
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_more_than_2_31_feature_elements(backend_name):
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
    g, f = ops.class_pool(x, gw, gb, backend=backend_name)
    y = ops.dynamic_classify(x, w, b, backend=backend_name)
    # Truth in float32 on the GPU, a slice of pixels at a time.
    x2, gw32, w32 = x.view(C, N), gw.float(), w[0].float()
    f_sum = torch.zeros(K, C, dtype=torch.float64, device="cuda")
    step = 1 << 22
    for n0 in range(0, N, step):
        xs = x2[:, n0 : n0 + step].float()
        g_ref = torch.addmm(gb.float()[:, None], gw32, xs)
        close(f"g[{n0}:]", g.view(K, N)[:, n0 : n0 + step], g_ref, torch.bfloat16)
        y_ref = torch.addmm(b[0].float()[:, None], w32, xs)
        close(f"y[{n0}:]", y.view(K, N)[:, n0 : n0 + step], y_ref, torch.bfloat16)
        f_sum += (torch.softmax(g_ref, dim=0) @ xs.t()).double()
    close("f", f[0], f_sum / N, torch.bfloat16)


# -- which backend runs -------------------------------------------------------------------------


@NEEDS_GPU
def test_every_op_has_a_cuda_kernel():
    if missing_reason("extension"):
        pytest.skip(missing_reason("extension"))
    for op in (*extension.OPS, "class_pool_backward", "dynamic_classify_backward"):
        if op in extension.COMPOSITES:
            continue
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"condnet::{op}", "CUDA"), op
    assert backend.resolve("conditional_classifier", "cuda", "extension") == "extension"


@NEEDS_GPU
def test_auto_picks_triton_on_this_gpu():
    if missing_reason("triton"):
        pytest.skip(missing_reason("triton"))
    assert backend.resolve("class_pool", "cuda") == "triton"
    assert backend.resolve("conditional_classifier", "cuda", "auto") == "triton"
