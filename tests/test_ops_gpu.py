"""The GPU kernels, one suite over both GPU backends: the native CUDA kernels
(backend="extension") and the Triton kernels (backend="triton"). Marked
``gpu``, skipped without a GPU.

class_pool, dynamic_classify, the projection and the whole fused classifier
(also bfloat16 features with float32 parameters under autocast, as training
runs it) at the DESIGN.md shapes and at odd shapes, against float64 math on
the dtype-rounded inputs; absent upstream gradients; every output mask;
gradcheck; opcheck; torch.compile; determinism; memory layouts; empty
batches; huge logits; argument errors; more than 2**31 feature elements.

``CONDNET_GPU_TESTS_ON_CPU=1`` runs the same tests on the CPU at small shapes
(the C++ kernels for "extension", the Triton interpreter for "triton"), to
check the tests themselves where no GPU is lent; the few that only mean
something on a GPU skip then.
"""

import itertools
import os
from functools import partial

import pytest
import torch

import condnet.ops as ops
from condnet.nn import ConditionalClassifier
from condnet.ops import backend, extension, reference
from condnet.ops import triton as triton_kernels
from tests.opcases import make_inputs

ON_CPU = os.environ.get("CONDNET_GPU_TESTS_ON_CPU") == "1"
DEVICE = "cpu" if ON_CPU else "cuda"
NEEDS_GPU = pytest.mark.skipif(ON_CPU, reason="means something on a GPU only")


def _missing(name: str) -> str | None:
    if not ON_CPU and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if name == "extension":
        missing = [op for op in extension.OPS if not extension.has_kernel(op, DEVICE)]
        return extension.missing_kernel_message(missing[0], DEVICE) if missing else None
    return triton_kernels.unavailable_reason(DEVICE)


BACKENDS = [
    pytest.param(
        name, marks=pytest.mark.skipif(_missing(name) is not None, reason=str(_missing(name)))
    )
    for name in ("extension", "triton")
]
pytestmark = pytest.mark.gpu

# (rtol, atol as a fraction of the largest |truth| of the tensor). The truth is
# float64 math on the dtype-rounded inputs, so only the kernel's own error
# counts. bfloat16/float16 products run on tensor cores with float32
# accumulation: a rounding of the output plus the rounding of p (or dgt) to
# the dtype before the products, and the backward recomputes p from the
# rounded guide logits. float32 and float64 products are IEEE (no TF32): only
# the summation order differs from the truth. The scaled atol keeps entries
# where many terms cancel to near zero from failing a purely relative test.
TOLERANCES = {
    torch.bfloat16: (2e-2, 1e-2),
    torch.float16: (4e-3, 2e-3),
    torch.float32: (2e-4, 1e-4),
    torch.float64: (1e-9, 1e-11),
}
LOW_PRECISION = [torch.bfloat16, torch.float16, torch.float32]

if ON_CPU:  # small enough for the Triton interpreter
    DESIGN_SHAPES = {
        "ade": (2, 24, 15, 8, 8),
        "pc59": (2, 24, 6, 6, 6),
        "cityscapes": (2, 16, 3, 4, 8),
    }
    ODD_SHAPES = [(1, 5, 1, 7, 9), (3, 17, 7, 1, 1), (1, 33, 19, 5, 7)]
    MID_SHAPE, THOUSAND = (2, 17, 9, 5, 7), (1, 16, 70, 4, 4)
else:
    DESIGN_SHAPES = {  # B, C, K, H, W (DESIGN.md section 2)
        "ade": (8, 512, 150, 64, 64),
        "pc59": (8, 512, 59, 60, 60),
        "cityscapes": (8, 512, 19, 128, 256),
    }
    ODD_SHAPES = [
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
    MID_SHAPE, THOUSAND = (3, 33, 19, 13, 31), (2, 256, 1024, 32, 33)


def _namespace(name: str):
    return torch.ops.condnet if name == "extension" else torch.ops.condnet_triton


def _close(name, got, want, dtype, rtol=None, frac=None):
    default_rtol, default_frac = TOLERANCES[dtype]
    rtol, frac = rtol or default_rtol, frac or default_frac
    assert got is not None, f"{name}: missing"
    assert got.dtype == dtype and got.device.type == DEVICE, (name, got.dtype, got.device)
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


# -- class_pool and dynamic_classify -----------------------------------------------------------


def _inputs(shape, dtype, seed=0):
    """Inputs and upstream gradients rounded to ``dtype`` on the device, and
    their exact float64 copies: x, gw, gb, w, b, dg, df, dy."""
    B, C, K, H, W = shape
    x, gw, gb, w, b = make_inputs(*shape, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    df = torch.randn(B, K, C, generator=gen, dtype=torch.float64)
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    low = [t.to(DEVICE, dtype) for t in (x, gw, gb, w, b, dg, df, dy)]
    return low, [t.double() for t in low]


def _forward_backward(class_pool, dynamic_classify, x, gw, gb, w, b, dg, df, dy, layout=None):
    """Both ops forward and backward; ``layout`` is applied to x inside the
    graph, so the kernels see that memory layout."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, gw, gb, w, b)]
    x, gw, gb, w, b = leaves
    shaped = (layout or (lambda t: t))(x)
    g, f = class_pool(shaped, gw, gb)
    y = dynamic_classify(shaped, w, b)
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


def _run(name, *args, layout=None):
    return _forward_backward(
        partial(ops.class_pool, backend=name),
        partial(ops.dynamic_classify, backend=name),
        *args,
        layout=layout,
    )


def _truth(*args):
    return _forward_backward(reference.class_pool, reference.dynamic_classify, *args)


@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_design_shapes_match_float64_truth(backend_name, name, dtype):
    low, exact = _inputs(DESIGN_SHAPES[name], dtype)
    _compare(_run(backend_name, *low), _truth(*exact), dtype)


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_odd_shapes_match_float64_truth(backend_name, shape, dtype):
    low, exact = _inputs(shape, dtype, seed=sum(shape))
    _compare(_run(backend_name, *low), _truth(*exact), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_a_thousand_classes(backend_name, dtype):
    low, exact = _inputs(THOUSAND, dtype)
    _compare(_run(backend_name, *low), _truth(*exact), dtype)


@pytest.mark.parametrize("absent", ["dg", "df", "dy", "dg_and_df"])
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_absent_upstream_gradients(backend_name, absent, dtype):
    low, exact = _inputs(MID_SHAPE, dtype)
    for name in absent.split("_and_"):
        index = 5 + ("dg", "df", "dy").index(name)
        low[index] = exact[index] = None
    _compare(_run(backend_name, *low), _truth(*exact), dtype)


@NEEDS_GPU
@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_two_pass_forward_matches_float64_truth(name, dtype, monkeypatch):
    """On sm_90 the 16-bit class_pool forward of the CUDA kernels runs on
    thread-block clusters; CONDNET_CUDA_ONE_PASS=0 gives the two-pass path
    that other GPUs take."""
    if _missing("extension"):
        pytest.skip(_missing("extension"))
    monkeypatch.setenv("CONDNET_CUDA_ONE_PASS", "0")
    low, exact = _inputs(DESIGN_SHAPES[name], dtype)
    _compare(_run("extension", *low), _truth(*exact), dtype, keys=("g", "f"))


# -- the projection and the fused classifier --------------------------------------------------

# name -> (features' dtype, parameters' dtype, autocast)
PRECISIONS = {
    "bfloat16": (torch.bfloat16, torch.bfloat16, False),
    "amp-bfloat16": (torch.bfloat16, torch.float32, True),
    "float32": (torch.float32, torch.float32, False),
}


def _classifier_inputs(shape, precision, layout, seed=0):
    """x, the guide and the projection (as ``layout`` stores it), and the two
    upstream gradients, on the device; with their float64 copies."""
    dtype, param_dtype, _ = PRECISIONS[precision]
    B, C, K, H, W = shape
    x, gw, gb, _, _ = make_inputs(*shape, seed=seed)
    gen = torch.Generator().manual_seed(seed + 2)
    A = torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64) * 0.1
    if layout == "official":
        A, a = A.reshape(K * (C + 1), C, 1, 1), a.reshape(-1)
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    low = [x.to(DEVICE, dtype)] + [t.to(DEVICE, param_dtype) for t in (gw, gb, A, a)]
    low += [t.to(DEVICE, dtype) for t in (dy, dg)]
    exact = [t.double() for t in low]
    if param_dtype != dtype:  # autocast casts the guide, never the projection
        exact[1], exact[2] = (t.to(dtype).double() for t in low[1:3])
    return low, exact


def _classifier_run(name, inputs, layout, autocast=False):
    """The fused classifier forward and backward (``name`` None: the reference)."""
    x, gw, gb, A, a, dy, dg = inputs
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, gw, gb, A, a)]
    with torch.autocast(DEVICE, dtype=x.dtype, enabled=autocast):
        if name is None:
            y, g = reference.conditional_classifier(*leaves, layout)
        else:
            y, g = ops.conditional_classifier(*leaves, layout=layout, backend=name)
    torch.autograd.backward([y, g], [dy, dg])
    names = ("dx", "d_guide_weight", "d_guide_bias", "d_proj_weight", "d_proj_bias")
    return {"y": y, "g": g, **{n: t.grad for n, t in zip(names, leaves, strict=True)}}


def _compare_classifier(got, truth, precision):
    dtype, param_dtype, _ = PRECISIONS[precision]
    for key, want in truth.items():
        # Gradients of float32 master weights come back in float32, summed in
        # float32 from 16-bit terms: held to the features' tolerance.
        expected = param_dtype if key.startswith("d_") else dtype
        assert got[key].dtype == expected, (key, got[key].dtype)
        _close(key, got[key].to(dtype) if expected != dtype else got[key], want, dtype)


@pytest.mark.parametrize("layout", ["official", "per_class"])
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_design_shapes_match_float64_truth(backend_name, name, precision, layout):
    low, exact = _classifier_inputs(DESIGN_SHAPES[name], precision, layout)
    autocast = PRECISIONS[precision][2]
    got = _classifier_run(backend_name, low, layout, autocast)
    _compare_classifier(got, _classifier_run(None, exact, layout), precision)


@pytest.mark.parametrize("shape", ODD_SHAPES[:6], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("precision", ["amp-bfloat16", "float32"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_odd_shapes_match_float64_truth(backend_name, shape, precision):
    low, exact = _classifier_inputs(shape, precision, "official", seed=sum(shape))
    got = _classifier_run(backend_name, low, "official", PRECISIONS[precision][2])
    _compare_classifier(got, _classifier_run(None, exact, "official"), precision)


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("B", [1, 8, 33])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_project_matches_float64_truth(backend_name, B, precision):
    """The projection at C=512, K=150 (the ADE weight, 158 MB in float32) for
    1, 8 and 33 images (33: more than one image group of the CUDA kernels)."""
    dtype, param_dtype, _ = PRECISIONS[precision]
    K, C = (15, 24) if ON_CPU else (150, 512)
    gen = torch.Generator().manual_seed(B)
    f = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    A = (torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5).to(
        DEVICE, param_dtype
    )
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64).to(DEVICE, param_dtype)
    dtheta = torch.randn(B, K, C + 1, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    ns = _namespace(backend_name)
    exact = [t.double().requires_grad_(True) for t in (f, A, a)]
    theta = reference.project(*exact)
    truth = torch.autograd.grad(theta, exact, dtheta.double())
    _close("theta", ns.project(f, A, a), theta.detach(), dtype)
    for key, got, want in zip(
        ("df", "dA", "da"), ns.project_backward(dtheta, f, A, [True] * 3), truth, strict=True
    ):
        _close(key, got.to(dtype) if got.dtype != dtype else got, want, dtype)


# -- masks, gradcheck, opcheck, compile -------------------------------------------------------


@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=3)), ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_backward_ops_compute_only_the_masked_outputs(backend_name, mask, dtype):
    low, _ = _inputs(MID_SHAPE, dtype)
    x, gw, gb, w, _, dg, df, dy = low
    ns, mask, full = _namespace(backend_name), list(mask), [True] * 3
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
                _close(f"pair {i}", b, a, dtype)
    # No upstream gradient at all: the asked-for gradients are zeros.
    for need, out in zip(mask, ns.class_pool_backward(None, None, x, gw, g, mask), strict=True):
        assert (out is not None) == need
        assert out is None or (out.dtype == dtype and not out.any())


@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=5)), ids=str)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_backward_computes_only_the_masked_outputs(backend_name, mask):
    low, _ = _classifier_inputs(MID_SHAPE, "float32", "per_class")
    x, gw, gb, A, a, dy, dg = low
    ns = _namespace(backend_name)
    y, g, f, theta = ns.conditional_classifier(x, gw, gb, A, a, False)
    saved = (x, gw, g, f, A, theta, False)
    full = ns.conditional_classifier_backward(dy, dg, None, None, *saved, [True] * 5)
    part = ns.conditional_classifier_backward(dy, dg, None, None, *saved, list(mask))
    for i, (need, want, got) in enumerate(zip(mask, full, part, strict=True)):
        assert (got is not None) == need, (i, mask)
        if need:
            _close(f"gradient {i}", got, want, torch.float32)


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
    project = partial(ops.project_official, backend=backend_name)
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
    ns = _namespace(backend_name)
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
    for official in (True, False):
        opcheck(ns.conditional_classifier.default, (*leaves[:3], A, a, official))
    a = None if a is None else a.detach()
    y, g, f, theta = ns.conditional_classifier(x, gw, gb, A.detach(), a, False)
    saved = (x, gw, g, f, A.detach(), theta, False)
    opcheck(ns.conditional_classifier_backward.default, (dg, dg, None, None, *saved, [True] * 5))


@NEEDS_GPU
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compile_fullgraph_matches_eager(backend_name, dynamic):
    """torch.compile of the conditional classifier as a model runs it: one
    graph, outputs and gradients equal to eager. For the CUDA kernels the
    generated code calls the condnet ops; for Triton, Inductor launches the
    Triton kernels themselves, not an opaque op."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    C, K = (24, 7) if backend_name == "extension" else (64, 19)
    dtype = torch.float64 if backend_name == "extension" else torch.float32
    clf = ConditionalClassifier(C, K, dropout=0.0).to(DEVICE, dtype)
    clf.backend = backend_name
    x = torch.randn(2, C, 12, 13, device=DEVICE, dtype=dtype, requires_grad=True)

    def step(fn):
        logits, guide = fn(x, return_guide=True)
        loss = (logits * logits).sum() + (guide * guide).sum()
        return loss, torch.autograd.grad(loss, [x, *clf.parameters()])

    (got, got_grads), code = run_and_get_code(
        step, torch.compile(clf, fullgraph=True, dynamic=dynamic)
    )
    want, want_grads = step(clf)
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-3}
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(got_grads, want_grads, **tol)
    source = "\n".join(code)
    if backend_name == "extension":
        for op in ("conditional_classifier", "conditional_classifier_backward"):
            assert f"condnet.{op}.default" in source, op
    else:
        for kernel in ("_class_pool_fwd_kernel", "_project_fwd_kernel", "_class_pool_bwd_kernel"):
            assert kernel in source, kernel


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bitwise_reproducible(backend_name):
    """The CUDA kernels use no atomics: repeated runs are bitwise identical
    in any mode. The Triton kernels add partial sums with atomics unless
    torch.use_deterministic_algorithms is on; then they are bitwise identical
    too, and close to the atomic results."""
    low, _ = _inputs(DESIGN_SHAPES["ade"], torch.bfloat16)
    clf_inputs, _ = _classifier_inputs(DESIGN_SHAPES["ade"], "amp-bfloat16", "official")

    def both():
        return {
            **_run(backend_name, *low),
            **{
                f"clf_{k}": v
                for k, v in _classifier_run(backend_name, clf_inputs, "official", True).items()
            },
        }

    default = [both(), both()] if backend_name == "extension" else [both()]
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        deterministic = [both(), both()]
    finally:
        torch.use_deterministic_algorithms(was)
    for key, want in deterministic[0].items():
        assert torch.equal(deterministic[1][key], want), key
        if backend_name == "extension":
            assert torch.equal(default[0][key], want) and torch.equal(default[1][key], want), key
        else:
            _close(key, default[0][key], want.double(), want.dtype)


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
    low, exact = _inputs(MID_SHAPE, dtype)
    assert not LAYOUTS[layout](low[0]).is_contiguous()
    _compare(_run(backend_name, *low, layout=LAYOUTS[layout]), _truth(*exact), dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_empty_batch(backend_name, dtype):
    B, C, K, H, W = shape = (0, 24, 7, 5, 6)
    low, exact = _inputs(shape, dtype)
    got = _run(backend_name, *low)
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
    clf_low, _ = _classifier_inputs(shape, "float32", "official")
    clf = _classifier_run(backend_name, clf_low, "official")
    assert clf["y"].shape == (B, K, H, W) and not clf["d_proj_weight"].any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_large_logits_stay_finite_and_match(backend_name, dtype):
    shape = (2, 16, 15, 4, 4) if ON_CPU else (2, 64, 150, 16, 16)
    low, exact = _inputs(shape, dtype)
    low[1] = low[1] * 100  # nearly one-hot softmax
    exact[1] = low[1].double()
    got = _run(backend_name, *low)
    assert all(torch.isfinite(t).all() for t in got.values())
    # bfloat16's softmax depends on the rounding of logits in the hundreds (and
    # the backward sees the rounded ones): only what does not go through it.
    keys = ("g", "y", "dw", "dbeta") if dtype == torch.bfloat16 else None
    _compare(got, _truth(*exact), dtype, keys, rtol=1e-3 if dtype == torch.float32 else None)


@NEEDS_GPU
@pytest.mark.parametrize("direct", [False, True], ids=["public", "torch.ops"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_mismatched_devices_and_dtypes_name_the_argument(backend_name, direct):
    low, _ = _inputs((2, 8, 3, 4, 5), torch.float32)
    x, gw, gb, w, b, dg, df, dy = low
    ns = _namespace(backend_name)
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
        _close(f"g[{n0}:]", g.view(K, N)[:, n0 : n0 + step], g_ref, torch.bfloat16)
        y_ref = torch.addmm(b[0].float()[:, None], w32, xs)
        _close(f"y[{n0}:]", y.view(K, N)[:, n0 : n0 + step], y_ref, torch.bfloat16)
        f_sum += (torch.softmax(g_ref, dim=0) @ xs.t()).double()
    _close("f", f[0], f_sum / N, torch.bfloat16)


# -- which backend runs -------------------------------------------------------------------------


@NEEDS_GPU
def test_every_op_has_a_cuda_kernel():
    if _missing("extension"):
        pytest.skip(_missing("extension"))
    for op in (*extension.OPS, "class_pool_backward", "dynamic_classify_backward"):
        if op in extension.COMPOSITES:
            continue
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"condnet::{op}", "CUDA"), op
    assert backend.resolve("conditional_classifier", "cuda", "extension") == "extension"


@NEEDS_GPU
def test_auto_picks_triton_on_this_gpu():
    if _missing("triton"):
        pytest.skip(_missing("triton"))
    assert backend.resolve("class_pool", "cuda") == "triton"
    assert backend.resolve("conditional_classifier", "cuda", "auto") == "triton"
