"""The C++ CPU kernels against the reference: values, gradients, gradcheck,
determinism. Shapes cover B=1, K=1, odd H and W, C not a multiple of 8, and
images large enough to span several pixel chunks."""

import sys

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.opcases import TOLERANCES, assert_subset_gradients, make_inputs, needs_extension

pytestmark = needs_extension


def _random_shapes(count, seed=2021):
    gen = torch.Generator().manual_seed(seed)

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    return [(draw(1, 4), draw(1, 40), draw(1, 30), draw(1, 45), draw(1, 45)) for _ in range(count)]


SHAPES = [  # B, C, K, H, W
    (2, 16, 5, 8, 8),
    (1, 13, 1, 7, 9),
    (3, 5, 7, 1, 1),
    (2, 21, 19, 33, 47),  # 1551 pixels: two chunks, a partial last tile
    (1, 3, 150, 5, 3),
    *_random_shapes(4),
]


def _ext(fn):
    return lambda *a: fn(*a, backend="extension")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_reference(shape, dtype, bias):
    x, gw, gb, w, b = make_inputs(*shape, dtype=dtype, bias=bias)
    g, f = ops.class_pool(x, gw, gb, backend="extension")
    g_ref, f_ref = reference.class_pool(x, gw, gb)
    torch.testing.assert_close(g, g_ref, **TOLERANCES[dtype])
    torch.testing.assert_close(f, f_ref, **TOLERANCES[dtype])
    y = ops.dynamic_classify(x, w, b, backend="extension")
    torch.testing.assert_close(y, reference.dynamic_classify(x, w, b), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_close_to_float64_truth(dtype):
    x, gw, gb, w, b = make_inputs(2, 24, 9, 11, 13)
    lo = [t.to(dtype) for t in (x, gw, gb, w, b)]
    g, f = ops.class_pool(*lo[:3], backend="extension")
    y = ops.dynamic_classify(lo[0], lo[3], lo[4], backend="extension")
    assert g.dtype == f.dtype == y.dtype == dtype
    # Truth from the dtype-rounded inputs, so only the kernel's error remains.
    exact = [t.double() for t in lo]
    g64, f64 = reference.class_pool(*exact[:3])
    y64 = reference.dynamic_classify(exact[0], exact[3], exact[4])
    for out, truth in ((g, g64), (f, f64), (y, y64)):
        torch.testing.assert_close(out.double(), truth, **TOLERANCES[dtype])


def _grads(fn, inputs, upstream):
    inputs = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, u) for o, u in zip(outs, upstream, strict=True) if u is not None]
    torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return list(outs), [t.grad if t is not None else None for t in inputs]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("which", ["both", "feats_only", "logits_only"])
def test_class_pool_gradients_match_reference(shape, dtype, which):
    B, C, K, H, W = shape
    x, gw, gb, _, _ = make_inputs(*shape, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64).to(dtype)
    df = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(dtype)
    upstream = {"both": (dg, df), "feats_only": (None, df), "logits_only": (dg, None)}[which]
    _, grads = _grads(_ext(ops.class_pool), (x, gw, gb), upstream)
    _, grads_ref = _grads(reference.class_pool, (x, gw, gb), upstream)
    for name, got, want in zip(("x", "guide_weight", "guide_bias"), grads, grads_ref, strict=True):
        torch.testing.assert_close(
            got, want, **TOLERANCES[dtype], msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dynamic_classify_gradients_match_reference(shape, dtype):
    B, C, K, H, W = shape
    x, _, _, w, b = make_inputs(*shape, dtype=dtype)
    dy = torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(4)).to(dtype)
    _, grads = _grads(_ext(ops.dynamic_classify), (x, w, b), (dy,))
    _, grads_ref = _grads(reference.dynamic_classify, (x, w, b), (dy,))
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_gradients(dtype):
    x, gw, gb, w, b = make_inputs(2, 24, 9, 11, 13)
    dg = torch.randn(2, 9, 11, 13, generator=torch.Generator().manual_seed(5))
    df = torch.randn(2, 9, 24, generator=torch.Generator().manual_seed(6))
    lo = [t.to(dtype) for t in (x, gw, gb, w, b, dg, df)]
    _, grads = _grads(_ext(ops.class_pool), lo[:3], lo[5:])
    _, truth = _grads(
        reference.class_pool, [t.double() for t in lo[:3]], [t.double() for t in lo[5:]]
    )
    for got, want in zip(grads, truth, strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), want, atol=6e-2, rtol=3e-2)


# The last shape spans two pixel chunks; at that size the full Jacobian is
# too slow, so it is checked along random directions (fast_mode).
GRADCHECK_SHAPES = [((2, 5, 3, 3, 4), False), ((1, 7, 1, 5, 3), False), ((2, 3, 4, 37, 30), True)]


@pytest.mark.parametrize("shape,fast", GRADCHECK_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_class_pool(shape, fast, bias):
    x, gw, gb, _, _ = make_inputs(*shape, bias=bias, requires_grad=True)
    inputs = (x, gw, gb)
    fn = _ext(ops.class_pool)
    check = lambda f: torch.autograd.gradcheck(f, inputs, fast_mode=fast)  # noqa: E731
    assert check(fn)  # upstream gradient on both outputs
    assert check(lambda *a: fn(*a)[1])  # class features only
    assert check(lambda *a: fn(*a)[0])  # guide logits only


@pytest.mark.parametrize("shape,fast", GRADCHECK_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_dynamic_classify(shape, fast, bias):
    x, _, _, w, b = make_inputs(*shape, bias=bias, requires_grad=True)
    assert torch.autograd.gradcheck(_ext(ops.dynamic_classify), (x, w, b), fast_mode=fast)


def test_backward_ops_without_any_upstream_gradient_return_zeros():
    x, gw, _, _, _ = make_inputs(2, 4, 3, 5, 5)
    g, _ = torch.ops.condnet.class_pool(x, gw, None)
    dx, dw, db = torch.ops.condnet.class_pool_backward(None, None, x, gw, g, [True] * 3)
    assert dx.shape == x.shape and dw.shape == gw.shape and db.shape == (3,)
    assert not dx.any() and not dw.any() and not db.any()


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_backward_output_mask_computes_only_what_is_asked(mask):
    B, C, K, H, W = 2, 6, 4, 33, 35
    x, gw, _, w, _ = make_inputs(B, C, K, H, W)
    g, _ = torch.ops.condnet.class_pool(x, gw, None)
    dg, df = torch.randn(B, K, H, W, dtype=x.dtype), torch.randn(B, K, C, dtype=x.dtype)
    full = torch.ops.condnet.class_pool_backward(dg, df, x, gw, g, [True] * 3)
    part = torch.ops.condnet.class_pool_backward(dg, df, x, gw, g, list(mask))
    full_dc = torch.ops.condnet.dynamic_classify_backward(dg, x, w, [True] * 3)
    part_dc = torch.ops.condnet.dynamic_classify_backward(dg, x, w, list(mask))
    for need, a, b, a_dc, b_dc in zip(mask, full, part, full_dc, part_dc, strict=True):
        if need:
            assert torch.equal(a, b) and torch.equal(a_dc, b_dc)
        else:
            assert b is None and b_dc is None


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_gradients_for_a_subset_of_inputs(needs):
    assert_subset_gradients("extension", needs)


def test_huge_logits_stay_finite():
    x, gw, gb, _, _ = make_inputs(2, 6, 4, 5, 5, dtype=torch.float32)
    g, f = ops.class_pool(x * 1e4, gw, gb, backend="extension")
    assert torch.isfinite(f).all()
    torch.testing.assert_close(f, reference.class_pool(x * 1e4, gw, gb)[1], atol=1e-2, rtol=1e-4)


def _run_everything(inputs):
    for t in inputs:
        t.grad = None
    x, gw, gb, w, b = inputs
    g, f = ops.class_pool(x, gw, gb, backend="extension")
    y = ops.dynamic_classify(x, w, b, backend="extension")
    (g.sum() + (f * f).sum() + (y * y).sum()).backward()
    return [g, f, y] + [t.grad.clone() for t in inputs]


def test_repeated_runs_are_bitwise_identical():
    inputs = make_inputs(4, 32, 10, 40, 41, dtype=torch.float32, requires_grad=True)
    first, second = _run_everything(inputs), _run_everything(inputs)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenMP is enabled on Linux")
def test_kernels_are_built_with_openmp():
    assert ops.build_info()["openmp"], "at::parallel_for would run on one thread"


def test_worker_threads_see_the_callers_grad_mode_and_dispatch_state():
    # Several work items per call, so OpenMP workers run some of them; their
    # ATen calls must not be recorded by autograd or reach ADInplaceOrView.
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        inputs = make_inputs(4, 16, 6, 40, 41, dtype=torch.float32, requires_grad=True)
        results = _run_everything(inputs)
        with torch.inference_mode():
            g, f = ops.class_pool(*inputs[:3], backend="extension")
            y = ops.dynamic_classify(inputs[0], *inputs[3:], backend="extension")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[:3], (g, f, y), strict=True):
        torch.testing.assert_close(a.detach(), b, **TOLERANCES[torch.float32])


def test_thread_count_changes_only_rounding():
    inputs = make_inputs(4, 32, 10, 40, 41, dtype=torch.float32, requires_grad=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _run_everything(inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, _run_everything(inputs), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float32])
