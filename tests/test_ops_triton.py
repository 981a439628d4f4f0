"""What is particular to the Triton kernels, in Triton's interpreter on CPU
(conftest.py sets TRITON_INTERPRET=1 when there is no GPU): float16/bfloat16
against a float64 truth, the GPU's larger tiles, the atomic/ordered switch of
the deterministic mode, the fake kernels and torch.compile tracing. The
tests every kernel backend shares are in test_ops_kernels.py; the choice of
backend in test_ops_triton_backend.py.

Under the interpreter the tiles are 16 classes x 16 channels x 32 pixels
(condnet/ops/triton/config.py), so K=37 and K=70, C=33 and 7x9 images span
several tiles, with partial last tiles, on every axis. The GPU tests are in
test_ops_gpu.py and test_ops_gpu_classifier.py.
"""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from condnet.ops import triton as triton_kernels
from tests.opcases import (
    TOLERANCES,
    assert_close_all,
    grads,
    make_inputs,
    needs_interpreter,
    run_everything,
    upstream_grads,
)


def _triton(fn):
    return lambda *a: fn(*a, backend="triton")


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 33, 37, 7, 9), (1, 6, 70, 5, 8)])  # several tiles
def test_low_precision_close_to_float64_truth(shape, dtype):
    """bfloat16 and float16 in the interpreter, every output and gradient,
    against float64 math on the dtype-rounded inputs. (bfloat16 products are
    widened to float32 there, see tiles.dot; loads, stores and every
    rounding to bfloat16 are the GPU kernel's own.)"""
    B, C, K, H, W = shape
    x, gw, gb, w, b = (t.to(dtype) for t in make_inputs(*shape))
    up = [u.to(dtype) for u in upstream_grads(shape, torch.float64, "both")]
    dy = torch.randn(B, K, H, W, generator=torch.Generator().manual_seed(4)).to(dtype)
    cases = (
        (ops.class_pool, reference.class_pool, (x, gw, gb), up),
        (ops.dynamic_classify, reference.dynamic_classify, (x, w, b), [dy]),
    )
    for op, ref, inputs, upstream in cases:
        outs, got = grads(_triton(op), inputs, upstream)
        truth_outs, truth = grads(ref, [t.double() for t in inputs], [u.double() for u in upstream])
        for out, want in zip(outs + got, truth_outs + truth, strict=True):
            assert out.dtype == dtype
            # The backward recomputes p from the guide logits saved in the
            # dtype, and dWg sums such terms over every pixel: the absolute
            # tolerance scales with the largest entry (twice TOLERANCES' frac).
            tol = TOLERANCES[dtype]
            atol = 2 * tol.frac * want.abs().max().item()
            torch.testing.assert_close(out.double(), want, atol=atol, rtol=tol.rtol)


@needs_interpreter
def test_larger_tiles(monkeypatch):
    """The GPU's larger tiles: several tiles wider than the tensor's extent."""
    from condnet.ops.triton import config

    monkeypatch.setattr(config, "_INTERPRETED", config.Blocks(64, 32, 64))
    shape = (2, 40, 70, 9, 9)  # K spans 2 class tiles, C 2 channel tiles, 81 pixels 2 pixel tiles
    x, gw, gb, w, b = make_inputs(*shape)
    upstream = upstream_grads(shape, x.dtype, "both")
    outs, got = grads(_triton(ops.class_pool), (x, gw, gb), upstream)
    outs_ref, want = grads(reference.class_pool, (x, gw, gb), upstream)
    assert_close_all(outs + got, outs_ref + want, x.dtype, ("g", "f", "dx", "dw", "db"))
    outs, got = grads(_triton(ops.dynamic_classify), (x, w, b), (upstream[0],))
    outs_ref, want = grads(reference.dynamic_classify, (x, w, b), (upstream[0],))
    assert_close_all(outs + got, outs_ref + want, x.dtype, ("y", "dx", "dw", "db"))


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
    with_atomics = run_everything("triton", inputs)
    assert chosen == [True, True]  # forward, backward: several pixel tiles
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        first, second = run_everything("triton", inputs), run_everything("triton", inputs)
    finally:
        torch.use_deterministic_algorithms(was)
    assert chosen[2:] == [False] * 4
    for a, b, c in zip(first, second, with_atomics, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, **TOLERANCES[torch.float32].absolute)


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
    for ups, mask in (((dg, df), [True] * 3), ((None, df), [True, False, True])):
        args = (*ups, x, gw, g, mask)
        opcheck(torch.ops.condnet_triton.class_pool_backward.default, args, test_utils=utils)
    args = (dg, x, w, [False, True, True])
    opcheck(torch.ops.condnet_triton.dynamic_classify_backward.default, args, test_utils=utils)
    f, A, a = torch.randn(B, K, C), torch.randn(K, C + 1, C), torch.randn(K, C + 1)
    opcheck(torch.ops.condnet_triton.project.default, (f, A, a), test_utils=utils)
    args = (torch.randn(B, K, C + 1), f, A, [True, True, False])
    opcheck(torch.ops.condnet_triton.project_backward.default, args, test_utils=utils)
    for layout in ("grouped_conv", "per_class"):
        args = (x, gw, None, A, a, layout)
        opcheck(torch.ops.condnet_triton.conditional_classifier.default, args, test_utils=utils)
    y, g, f, theta = torch.ops.condnet_triton.conditional_classifier(x, gw, None, A, a, "per_class")
    args = (
        y,
        None,
        None,
        None,
        x,
        gw,
        g,
        f,
        A,
        theta,
        "per_class",
        [True, True, False, True, True],
    )
    op = torch.ops.condnet_triton.conditional_classifier_backward.default
    opcheck(op, args, test_utils=utils)


def _separate_ops(x, gw, gb, pw, pb):
    g, f = ops.class_pool(x, gw, gb)
    w, beta = ops.project_grouped_conv(f, pw, pb)
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
