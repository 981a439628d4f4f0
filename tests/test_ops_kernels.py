"""class_pool and dynamic_classify on every kernel backend this machine runs
(the C++ CPU kernels, and the Triton kernels in Triton's interpreter; see
opcases.KERNEL_BACKENDS) against the reference: values, every gradient,
gradcheck, the backward ops' output masks, absent upstream gradients, huge
logits, memory layouts, empty batches and repeatability. Low precision, whose
tolerances differ (the Triton kernels round more intermediates to the dtype),
is in the per-backend files.
What is particular to one backend is in test_ops_cpu.py and test_ops_triton.py;
the projection and the fused classifier are in test_ops_project.py and
test_ops_classifier.py.

Shapes cover B=1, K=1, odd H and W and C not a multiple of 8 on both. On the
CPU they also span several pixel chunks (1551 pixels); under the interpreter
the tiles are 16 classes x 16 channels x 32 pixels, so K=37 and K=70, C=33 and
7x9 images span several tiles, with partial last tiles, on every axis, while
the interpreter, slow for big tensors, stays fast.
"""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.opcases import (
    BACKEND_MARKS,
    KERNEL_BACKENDS,
    TOLERANCES,
    assert_close_all,
    assert_subset_gradients,
    grads,
    make_inputs,
    run_everything,
    upstream_grads,
)


def _random_shapes(count, seed=2021):
    gen = torch.Generator().manual_seed(seed)

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    return [(draw(1, 4), draw(1, 40), draw(1, 30), draw(1, 45), draw(1, 45)) for _ in range(count)]


SHAPES = {  # B, C, K, H, W
    "extension": [
        (2, 16, 5, 8, 8),
        (1, 13, 1, 7, 9),
        (3, 5, 7, 1, 1),
        (2, 21, 19, 33, 47),  # 1551 pixels: two chunks, a partial last tile
        (1, 3, 150, 5, 3),
        *_random_shapes(4),
    ],
    "triton": [
        (2, 33, 37, 7, 9),  # 3 class, 3 channel and 2 pixel tiles, all partial
        (1, 5, 1, 7, 9),  # one class
        (2, 5, 3, 3, 4),  # K=3, one pixel tile
        (1, 6, 70, 5, 8),  # 5 class tiles
        (2, 17, 4, 1, 1),  # one pixel
    ],
}
# Where the full Jacobian is too slow (the interpreter; the CPU's two pixel
# chunks) gradcheck goes along random directions (fast_mode).
GRADCHECK_SHAPES = {
    "extension": [((2, 5, 3, 3, 4), False), ((1, 7, 1, 5, 3), False), ((2, 3, 4, 37, 30), True)],
    "triton": [((1, 3, 2, 2, 3), False), ((2, 17, 17, 5, 7), True)],
}
# A shape for the tests that need one: several tiles (interpreter) or chunks (CPU).
ONE_SHAPE = {"extension": (2, 6, 4, 33, 35), "triton": (2, 6, 20, 6, 7)}
DTYPES = [torch.float64, torch.float32]
UPSTREAM = ["both", "feats_only", "logits_only"]


def _per_backend(table):
    """pytest params (backend, case) for every case of each backend."""
    return [
        pytest.param(name, case, marks=BACKEND_MARKS[name], id=f"{name}-{i}")
        for name, cases in table.items()
        for i, case in enumerate(cases)
    ]


def _on(backend, fn):
    return lambda *a: fn(*a, backend=backend)


def _namespace(backend):
    return torch.ops.condnet if backend == "extension" else torch.ops.condnet_triton


@pytest.mark.parametrize("backend,shape", _per_backend(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_reference(backend, shape, dtype, bias):
    x, gw, gb, w, b = make_inputs(*shape, dtype=dtype, bias=bias)
    g, f = ops.class_pool(x, gw, gb, backend=backend)
    assert g.dtype == f.dtype == dtype
    assert_close_all((g, f), reference.class_pool(x, gw, gb), dtype, ("g", "f"))
    y = ops.dynamic_classify(x, w, b, backend=backend)
    assert_close_all((y,), (reference.dynamic_classify(x, w, b),), dtype, ("y",))


@pytest.mark.parametrize("backend,shape", _per_backend(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", UPSTREAM)
def test_class_pool_gradients_match_reference(backend, shape, dtype, which):
    x, gw, gb, _, _ = make_inputs(*shape, dtype=dtype)
    upstream = upstream_grads(shape, dtype, which)
    _, got = grads(_on(backend, ops.class_pool), (x, gw, gb), upstream)
    _, want = grads(reference.class_pool, (x, gw, gb), upstream)
    assert_close_all(got, want, dtype, ("x", "guide_weight", "guide_bias"))


@pytest.mark.parametrize("backend,shape", _per_backend(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_dynamic_classify_gradients_match_reference(backend, shape, dtype):
    B, C, K, H, W = shape
    x, _, _, w, b = make_inputs(*shape, dtype=dtype)
    dy = torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(4)).to(dtype)
    _, got = grads(_on(backend, ops.dynamic_classify), (x, w, b), (dy,))
    _, want = grads(reference.dynamic_classify, (x, w, b), (dy,))
    assert_close_all(got, want, dtype, ("x", "weight", "bias"))


@pytest.mark.parametrize("backend,case", _per_backend(GRADCHECK_SHAPES))
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_class_pool(backend, case, bias):
    shape, fast = case
    x, gw, gb, _, _ = make_inputs(*shape, bias=bias, requires_grad=True)
    inputs = tuple(t for t in (x, gw, gb) if t is not None)
    fn = lambda *a: ops.class_pool(*a, backend=backend)  # noqa: E731
    check = lambda f: torch.autograd.gradcheck(f, inputs, fast_mode=fast)  # noqa: E731
    assert check(fn)  # upstream gradient on both outputs
    # One output at a time: the other's gradient arrives as None. (Along
    # random directions in the interpreter, where the full Jacobian is slow.)
    one = lambda f: torch.autograd.gradcheck(f, inputs, fast_mode=fast or backend == "triton")  # noqa: E731
    assert one(lambda *a: fn(*a)[1])  # class features only
    assert one(lambda *a: fn(*a)[0])  # guide logits only


@pytest.mark.parametrize("backend,case", _per_backend(GRADCHECK_SHAPES))
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_dynamic_classify(backend, case, bias):
    shape, fast = case
    x, _, _, w, b = make_inputs(*shape, bias=bias, requires_grad=True)
    inputs = tuple(t for t in (x, w, b) if t is not None)
    fn = _on(backend, ops.dynamic_classify)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_without_any_upstream_gradient_returns_zeros(backend):
    x, gw, _, _, _ = make_inputs(2, 4, 3, 5, 5)
    ns = _namespace(backend)
    g, _ = ns.class_pool(x, gw, None)
    dx, dw, db = ns.class_pool_backward(None, None, x, gw, g, [True] * 3)
    assert dx.shape == x.shape and dw.shape == gw.shape and db.shape == (3,)
    assert not dx.any() and not dw.any() and not db.any()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_backward_output_mask_computes_only_what_is_asked(backend, mask):
    B, C, K, H, W = ONE_SHAPE[backend]
    x, gw, _, w, _ = make_inputs(B, C, K, H, W)
    ns = _namespace(backend)
    g, _ = ns.class_pool(x, gw, None)
    dg, df = torch.randn(B, K, H, W, dtype=x.dtype), torch.randn(B, K, C, dtype=x.dtype)
    full = ns.class_pool_backward(dg, df, x, gw, g, [True] * 3)
    part = ns.class_pool_backward(dg, df, x, gw, g, list(mask))
    full_dc = ns.dynamic_classify_backward(dg, x, w, [True] * 3)
    part_dc = ns.dynamic_classify_backward(dg, x, w, list(mask))
    for need, a, b, a_dc, b_dc in zip(mask, full, part, full_dc, part_dc, strict=True):
        if need:
            # Triton's partial sums may be added by atomics in any order.
            torch.testing.assert_close(a, b, **TOLERANCES[torch.float64].absolute)
            assert torch.equal(a_dc, b_dc)
        else:
            assert b is None and b_dc is None


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_gradients_for_a_subset_of_inputs(backend, needs):
    assert_subset_gradients(backend, needs)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_huge_logits_stay_finite(backend):
    shape = ONE_SHAPE[backend]
    x, gw, gb, _, _ = make_inputs(*shape, dtype=torch.float32)
    x = x * 1e4
    upstream = upstream_grads(shape, x.dtype, "both")
    (_, f), got = grads(_on(backend, ops.class_pool), (x, gw, gb), upstream)
    (_, f_ref), want = grads(reference.class_pool, (x, gw, gb), upstream)
    assert torch.isfinite(f).all() and all(torch.isfinite(t).all() for t in got)
    torch.testing.assert_close(f, f_ref, atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(got[0], want[0], atol=1e-2, rtol=1e-4)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_inputs(backend, layout):
    shape = (2, 9, 20, 6, 7)
    x, gw, gb, w, b = make_inputs(*shape)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:  # every other column of a wider image: H and W do not flatten into one stride
        x = torch.cat([x, x], dim=3)[..., ::2]
        gw = gw.t().contiguous().t()  # column-major weights
    assert not x.is_contiguous()
    upstream = upstream_grads(shape, x.dtype, "both")
    outs, got = grads(_on(backend, ops.class_pool), (x, gw, gb), upstream)
    outs_ref, want = grads(reference.class_pool, (x, gw, gb), upstream)
    assert_close_all(outs + got, outs_ref + want, x.dtype, ("g", "f", "dx", "dw", "db"))
    dy = upstream[0]
    outs, got = grads(_on(backend, ops.dynamic_classify), (x, w, b), (dy,))
    outs_ref, want = grads(reference.dynamic_classify, (x, w, b), (dy,))
    assert_close_all(outs + got, outs_ref + want, x.dtype, ("y", "dx", "dw", "db"))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_empty_batch(backend):
    x, gw, gb, w, b = make_inputs(0, 4, 3, 5, 6, requires_grad=True)
    g, f = ops.class_pool(x, gw, gb, backend=backend)
    y = ops.dynamic_classify(x, w, b, backend=backend)
    assert g.shape == (0, 3, 5, 6) and f.shape == (0, 3, 4) and y.shape == (0, 3, 5, 6)
    (g.sum() + f.sum() + y.sum()).backward()
    assert not gw.grad.any() and not gb.grad.any() and x.grad.shape == x.shape


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_repeated_runs_are_bitwise_identical(backend):
    """Bitwise repeatable: the CPU kernels always (fixed chunking), the Triton
    kernels under torch.use_deterministic_algorithms (no atomics then; see
    test_ops_triton.py for the switch itself)."""
    shape = (4, 32, 10, 40, 41) if backend == "extension" else (2, 17, 17, 5, 7)
    inputs = make_inputs(*shape, dtype=torch.float32, requires_grad=True)
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(backend == "triton" or was)
        first, second = run_everything(backend, inputs), run_everything(backend, inputs)
    finally:
        torch.use_deterministic_algorithms(was)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
