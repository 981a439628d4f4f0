"""What is particular to the C++ CPU kernels: float16/bfloat16 against a
float64 truth, OpenMP threads (the callers' thread-local state, thread counts
changing only the rounding). The tests every kernel backend shares are in
test_ops_kernels.py."""

import sys

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.opcases import TOLERANCES, grads, make_inputs, needs_extension, run_everything

pytestmark = needs_extension


def _ext(fn):
    return lambda *a: fn(*a, backend="extension")


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
        torch.testing.assert_close(out.double(), truth, **TOLERANCES[dtype].absolute)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_gradients(dtype):
    x, gw, gb, w, b = make_inputs(2, 24, 9, 11, 13)
    dg = torch.randn(2, 9, 11, 13, generator=torch.Generator().manual_seed(5))
    df = torch.randn(2, 9, 24, generator=torch.Generator().manual_seed(6))
    lo = [t.to(dtype) for t in (x, gw, gb, w, b, dg, df)]
    _, got = grads(_ext(ops.class_pool), lo[:3], lo[5:])
    _, truth = grads(
        reference.class_pool, [t.double() for t in lo[:3]], [t.double() for t in lo[5:]]
    )
    for a, want in zip(got, truth, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), want, atol=6e-2, rtol=3e-2)


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
        results = run_everything("extension", inputs)
        with torch.inference_mode():
            g, f = ops.class_pool(*inputs[:3], backend="extension")
            y = ops.dynamic_classify(inputs[0], *inputs[3:], backend="extension")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(results[:3], (g, f, y), strict=True):
        torch.testing.assert_close(a.detach(), b, **TOLERANCES[torch.float32].absolute)


def test_thread_count_changes_only_rounding():
    inputs = make_inputs(4, 32, 10, 40, 41, dtype=torch.float32, requires_grad=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run_everything("extension", inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, run_everything("extension", inputs), strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float32].absolute)
