"""The Triton kernels against the reference, in Triton's interpreter on CPU
(conftest.py sets TRITON_INTERPRET=1 when there is no GPU): values, every
gradient, gradcheck, determinism, the fake kernels and torch.compile tracing.
The choice of backend is tested in test_ops_triton_backend.py.

Under the interpreter the tiles are 16 classes x 16 channels x 32 pixels
(condnet/ops/triton/config.py), so K=37 and K=70, C=33 and 7x9 images span
several tiles, with partial last tiles, on every axis. The GPU tests are in
test_ops_gpu.py.
"""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from condnet.ops import triton as triton_kernels
from tests.opcases import TOLERANCES, assert_subset_gradients, make_inputs, needs_interpreter

SHAPES = [  # B, C, K, H, W
    (2, 33, 37, 7, 9),  # 3 class, 3 channel and 2 pixel tiles, all partial
    (1, 5, 1, 7, 9),  # one class
    (2, 5, 3, 3, 4),  # K=3, one pixel tile
    (1, 6, 70, 5, 8),  # 5 class tiles
    (2, 17, 4, 1, 1),  # one pixel
]
DTYPES = [torch.float64, torch.float32]
UPSTREAM = ["both", "feats_only", "logits_only"]


def _triton(fn):
    return lambda *a: fn(*a, backend="triton")


def _grads(fn, inputs, upstream):
    """Outputs and input gradients of ``fn`` for the given upstream gradients."""
    inputs = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, u) for o, u in zip(outs, upstream, strict=True) if u is not None]
    torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return list(outs), [t.grad if t is not None else None for t in inputs]


def _upstream(shape, dtype, which, seed=3):
    B, C, K, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64).to(dtype)
    df = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(dtype)
    return {"both": (dg, df), "feats_only": (None, df), "logits_only": (dg, None)}[which]


def _assert_all_close(got, want, dtype, names):
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m, n=name: f"{n}: {m}")


@needs_interpreter
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_reference(shape, dtype, bias):
    x, gw, gb, w, b = make_inputs(*shape, dtype=dtype, bias=bias)
    g, f = ops.class_pool(x, gw, gb, backend="triton")
    assert g.dtype == f.dtype == dtype
    _assert_all_close((g, f), reference.class_pool(x, gw, gb), dtype, ("g", "f"))
    y = ops.dynamic_classify(x, w, b, backend="triton")
    _assert_all_close((y,), (reference.dynamic_classify(x, w, b),), dtype, ("y",))


@needs_interpreter
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", UPSTREAM)
def test_class_pool_gradients_match_reference(shape, dtype, which):
    x, gw, gb, _, _ = make_inputs(*shape, dtype=dtype)
    upstream = _upstream(shape, dtype, which)
    _, grads = _grads(_triton(ops.class_pool), (x, gw, gb), upstream)
    _, want = _grads(reference.class_pool, (x, gw, gb), upstream)
    _assert_all_close(grads, want, dtype, ("x", "guide_weight", "guide_bias"))


@needs_interpreter
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dynamic_classify_gradients_match_reference(shape, dtype):
    B, C, K, H, W = shape
    x, _, _, w, b = make_inputs(*shape, dtype=dtype)
    dy = torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(4)).to(dtype)
    _, grads = _grads(_triton(ops.dynamic_classify), (x, w, b), (dy,))
    _, want = _grads(reference.dynamic_classify, (x, w, b), (dy,))
    _assert_all_close(grads, want, dtype, ("x", "weight", "bias"))


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[3]])
def test_low_precision_close_to_float64_truth(shape, dtype):
    """bfloat16 and float16 in the interpreter, every output and gradient,
    against float64 math on the dtype-rounded inputs. (bfloat16 products are
    widened to float32 there, see tiles.dot; loads, stores and every
    rounding to bfloat16 are the GPU kernel's own.)"""
    B, C, K, H, W = shape
    x, gw, gb, w, b = (t.to(dtype) for t in make_inputs(*shape))
    up = [u.to(dtype) for u in _upstream(shape, torch.float64, "both")]
    dy = torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(4)).to(dtype)
    cases = (
        (ops.class_pool, reference.class_pool, (x, gw, gb), up),
        (ops.dynamic_classify, reference.dynamic_classify, (x, w, b), [dy]),
    )
    for op, ref, inputs, upstream in cases:
        outs, got = _grads(_triton(op), inputs, upstream)
        truth_outs, truth = _grads(
            ref, [t.double() for t in inputs], [u.double() for u in upstream]
        )
        for out, want in zip(outs + got, truth_outs + truth, strict=True):
            assert out.dtype == dtype
            # The backward recomputes p from the guide logits saved in the
            # dtype, and dWg sums such terms over every pixel: the absolute
            # tolerance scales with the largest entry.
            atol = 2e-2 * want.abs().max().item()
            torch.testing.assert_close(out.double(), want, atol=atol, rtol=2e-2)


# The second shape crosses tiles on every axis; there the full Jacobian is too
# slow for the interpreter, so it is checked along random directions.
GRADCHECK_SHAPES = [((1, 3, 2, 2, 3), False), ((2, 17, 17, 5, 7), True)]


@needs_interpreter
@pytest.mark.parametrize("shape,fast", GRADCHECK_SHAPES)
def test_gradcheck_class_pool(shape, fast):
    x, gw, gb, _, _ = make_inputs(*shape, requires_grad=True)
    fn = _triton(ops.class_pool)
    assert torch.autograd.gradcheck(fn, (x, gw, gb), fast_mode=fast)
    # One output at a time: the other's gradient arrives as None.
    for output in (0, 1):
        one = lambda *a, i=output: fn(*a)[i]  # noqa: E731
        assert torch.autograd.gradcheck(one, (x, gw, gb), fast_mode=True)


@needs_interpreter
@pytest.mark.parametrize("shape,fast", GRADCHECK_SHAPES)
def test_gradcheck_dynamic_classify(shape, fast):
    x, _, _, w, b = make_inputs(*shape, requires_grad=True)
    assert torch.autograd.gradcheck(_triton(ops.dynamic_classify), (x, w, b), fast_mode=fast)


@needs_interpreter
def test_backward_without_any_upstream_gradient_returns_zeros():
    x, gw, _, _, _ = make_inputs(2, 4, 3, 5, 5)
    g, _ = torch.ops.condnet_triton.class_pool(x, gw, None)
    dx, dw, db = torch.ops.condnet_triton.class_pool_backward(None, None, x, gw, g, [True] * 3)
    assert dx.shape == x.shape and dw.shape == gw.shape and db.shape == (3,)
    assert not dx.any() and not dw.any() and not db.any()


@needs_interpreter
@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_backward_output_mask_computes_only_what_is_asked(mask):
    B, C, K, H, W = 2, 6, 20, 6, 7
    x, gw, _, w, _ = make_inputs(B, C, K, H, W)
    g, _ = torch.ops.condnet_triton.class_pool(x, gw, None)
    dg, df = torch.randn(B, K, H, W, dtype=x.dtype), torch.randn(B, K, C, dtype=x.dtype)
    full = torch.ops.condnet_triton.class_pool_backward(dg, df, x, gw, g, [True] * 3)
    part = torch.ops.condnet_triton.class_pool_backward(dg, df, x, gw, g, list(mask))
    full_dc = torch.ops.condnet_triton.dynamic_classify_backward(dg, x, w, [True] * 3)
    part_dc = torch.ops.condnet_triton.dynamic_classify_backward(dg, x, w, list(mask))
    for need, a, b, a_dc, b_dc in zip(mask, full, part, full_dc, part_dc, strict=True):
        if need:
            torch.testing.assert_close(a, b, **TOLERANCES[torch.float64])
            assert torch.equal(a_dc, b_dc)
        else:
            assert b is None and b_dc is None


@needs_interpreter
@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_gradients_for_a_subset_of_inputs(needs):
    assert_subset_gradients("triton", needs)


@needs_interpreter
def test_huge_logits_stay_finite():
    shape = (2, 6, 20, 5, 7)
    x, gw, gb, _, _ = make_inputs(*shape, dtype=torch.float32)
    x = x * 1e4
    upstream = _upstream(shape, x.dtype, "both")
    (_, f), grads = _grads(_triton(ops.class_pool), (x, gw, gb), upstream)
    (_, f_ref), grads_ref = _grads(reference.class_pool, (x, gw, gb), upstream)
    assert torch.isfinite(f).all() and all(torch.isfinite(t).all() for t in grads)
    torch.testing.assert_close(f, f_ref, atol=1e-2, rtol=1e-4)
    torch.testing.assert_close(grads[0], grads_ref[0], atol=1e-2, rtol=1e-4)


@needs_interpreter
@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_non_contiguous_inputs(layout):
    shape = (2, 9, 20, 6, 7)
    x, gw, gb, w, b = make_inputs(*shape)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    else:  # every other column of a wider image: H and W do not flatten into one stride
        x = torch.cat([x, x], dim=3)[..., ::2]
        gw = gw.t().contiguous().t()  # column-major weights
    assert not x.is_contiguous()
    upstream = _upstream(shape, x.dtype, "both")
    outs, grads = _grads(_triton(ops.class_pool), (x, gw, gb), upstream)
    outs_ref, grads_ref = _grads(reference.class_pool, (x, gw, gb), upstream)
    _assert_all_close(outs + grads, outs_ref + grads_ref, x.dtype, ("g", "f", "dx", "dw", "db"))
    dy = upstream[0]
    outs, grads = _grads(_triton(ops.dynamic_classify), (x, w, b), (dy,))
    outs_ref, grads_ref = _grads(reference.dynamic_classify, (x, w, b), (dy,))
    _assert_all_close(outs + grads, outs_ref + grads_ref, x.dtype, ("y", "dx", "dw", "db"))


@needs_interpreter
def test_larger_tiles(monkeypatch):
    """The GPU's larger tiles: several tiles wider than the tensor's extent."""
    from condnet.ops.triton import config

    monkeypatch.setattr(config, "_INTERPRETED", config.Blocks(64, 32, 64))
    shape = (2, 40, 70, 9, 9)  # K spans 2 class tiles, C 2 channel tiles, 81 pixels 2 pixel tiles
    x, gw, gb, w, b = make_inputs(*shape)
    upstream = _upstream(shape, x.dtype, "both")
    outs, grads = _grads(_triton(ops.class_pool), (x, gw, gb), upstream)
    outs_ref, grads_ref = _grads(reference.class_pool, (x, gw, gb), upstream)
    _assert_all_close(outs + grads, outs_ref + grads_ref, x.dtype, ("g", "f", "dx", "dw", "db"))
    outs, grads = _grads(_triton(ops.dynamic_classify), (x, w, b), (upstream[0],))
    outs_ref, grads_ref = _grads(reference.dynamic_classify, (x, w, b), (upstream[0],))
    _assert_all_close(outs + grads, outs_ref + grads_ref, x.dtype, ("y", "dx", "dw", "db"))


@needs_interpreter
def test_empty_batch():
    x, gw, gb, w, b = make_inputs(0, 4, 3, 5, 6, requires_grad=True)
    g, f = ops.class_pool(x, gw, gb, backend="triton")
    y = ops.dynamic_classify(x, w, b, backend="triton")
    assert g.shape == (0, 3, 5, 6) and f.shape == (0, 3, 4) and y.shape == (0, 3, 5, 6)
    (g.sum() + f.sum() + y.sum()).backward()
    assert not gw.grad.any() and not gb.grad.any() and x.grad.shape == x.shape


def _run_everything(inputs):
    for t in inputs:
        t.grad = None
    x, gw, gb, w, b = inputs
    g, f = ops.class_pool(x, gw, gb, backend="triton")
    y = ops.dynamic_classify(x, w, b, backend="triton")
    (g.sum() + (f * f).sum() + (y * y).sum()).backward()
    return [g, f, y] + [t.grad.clone() for t in inputs]


@needs_interpreter
def test_deterministic_mode_adds_partial_sums_in_a_fixed_order(monkeypatch):
    from condnet.ops.triton import class_pool, class_pool_backward

    chosen = []
    real = class_pool.reduce_with_atomics

    def spy(programs):
        chosen.append(real(programs))
        return chosen[-1]

    monkeypatch.setattr(class_pool, "reduce_with_atomics", spy)
    monkeypatch.setattr(class_pool_backward, "reduce_with_atomics", spy)
    inputs = make_inputs(2, 17, 17, 5, 7, dtype=torch.float32, requires_grad=True)
    with_atomics = _run_everything(inputs)
    assert chosen == [True, True]  # forward, backward: several pixel tiles
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        first, second = _run_everything(inputs), _run_everything(inputs)
    finally:
        torch.use_deterministic_algorithms(was)
    assert chosen[2:] == [False] * 4
    for a, b, c in zip(first, second, with_atomics, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, **TOLERANCES[torch.float32])


@needs_interpreter
def test_fake_kernels_and_registration():
    """Schema, autograd registration and fake (shape) kernels; compiling the
    ops for real (test_aot_dispatch_dynamic) needs a GPU, see the GPU tests."""
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    shape = (2, 6, 20, 5, 7)
    B, C, K, H, W = shape
    x, gw, gb, w, b = make_inputs(*shape, dtype=torch.float32)
    for t in (x, gw, gb, w, b):
        t.requires_grad_(True)
    opcheck = torch.library.opcheck
    opcheck(torch.ops.condnet_triton.class_pool.default, (x, gw, gb), test_utils=utils)
    opcheck(torch.ops.condnet_triton.dynamic_classify.default, (x, w, b), test_utils=utils)
    x, gw, w = x.detach(), gw.detach(), w.detach()
    g, _ = torch.ops.condnet_triton.class_pool(x, gw, None)
    dg, df = torch.randn(B, K, H, W), torch.randn(B, K, C)
    for grads, mask in (((dg, df), [True] * 3), ((None, df), [True, False, True])):
        args = (*grads, x, gw, g, mask)
        opcheck(torch.ops.condnet_triton.class_pool_backward.default, args, test_utils=utils)
    args = (dg, x, w, [False, True, True])
    opcheck(torch.ops.condnet_triton.dynamic_classify_backward.default, args, test_utils=utils)
    f, A, a = torch.randn(B, K, C), torch.randn(K, C + 1, C), torch.randn(K, C + 1)
    opcheck(torch.ops.condnet_triton.project.default, (f, A, a), test_utils=utils)
    args = (torch.randn(B, K, C + 1), f, A, [True, True, False])
    opcheck(torch.ops.condnet_triton.project_backward.default, args, test_utils=utils)
    for official in (True, False):
        args = (x, gw, None, A, a, official)
        opcheck(torch.ops.condnet_triton.conditional_classifier.default, args, test_utils=utils)
    y, g, f, theta = torch.ops.condnet_triton.conditional_classifier(x, gw, None, A, a, False)
    args = (y, None, None, None, x, gw, g, f, A, theta, False, [True, True, False, True, True])
    op = torch.ops.condnet_triton.conditional_classifier_backward.default
    opcheck(op, args, test_utils=utils)


def _separate_ops(x, gw, gb, pw, pb):
    g, f = ops.class_pool(x, gw, gb)
    w, beta = ops.project_official(f, pw, pb)
    return g, ops.dynamic_classify(x, w, beta)


def _fused_op(x, gw, gb, pw, pb):
    y, g = ops.conditional_classifier(x, gw, gb, pw, pb)
    return g, y


@needs_interpreter
@pytest.mark.parametrize(
    "classifier,names",
    [
        (_separate_ops, ("class_pool", "project", "dynamic_classify")),
        (_fused_op, ("conditional_classifier",)),
    ],
    ids=["separate", "fused"],
)
def test_compile_fullgraph_traces_the_triton_ops(monkeypatch, classifier, names):
    """Dynamo traces through the backend choice into the Triton ops without a
    graph break (the interpreter's kernels run eagerly inside the graph)."""
    torch._dynamo.reset()
    # Not yet probed: Dynamo must take the probe's answer as a constant.
    monkeypatch.setattr(triton_kernels, "_REASONS", {})
    B, C, K, H, W = 2, 8, 5, 6, 7
    x, gw, gb, _, _ = make_inputs(B, C, K, H, W, dtype=torch.float32, requires_grad=True)
    pw = torch.randn(C * K + K, C, 1, 1, requires_grad=True)
    pb = torch.randn(C * K + K, requires_grad=True)
    params = (x, gw, gb, pw, pb)
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    def loss(*args):
        with ops.use_backend("triton"):
            g, y = classifier(*args)
        return (g * g).sum() + (y * y).sum()

    got = torch.compile(loss, backend=record, fullgraph=True)(*params)
    got_grads = torch.autograd.grad(got, params)
    want = loss(*params)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grads, torch.autograd.grad(want, params))
    for name in names:
        assert any(f"condnet_triton.{name}" in s for s in seen), (name, seen)
