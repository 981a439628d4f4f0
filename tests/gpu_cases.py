"""Shared setup of the GPU op tests (test_ops_gpu.py, test_ops_gpu_classifier.py):
the backends, device and shapes, inputs rounded to a dtype with their float64
copies, forward + backward runs, and comparisons against a float64 truth.

``CONDNET_GPU_TESTS_ON_CPU=1`` runs those tests on the CPU at small shapes
(the C++ kernels for "extension", the Triton interpreter for "triton"), to
check the tests themselves where no GPU is lent; the few that only mean
something on a GPU skip then (``NEEDS_GPU``).
"""

import os
from functools import partial

import pytest
import torch

import condnet.ops as ops
from condnet.ops import extension, reference
from condnet.ops import triton as triton_kernels
from tests.opcases import assert_close_to_truth, make_inputs

ON_CPU = os.environ.get("CONDNET_GPU_TESTS_ON_CPU") == "1"
DEVICE = "cpu" if ON_CPU else "cuda"
NEEDS_GPU = pytest.mark.skipif(ON_CPU, reason="means something on a GPU only")


def missing_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run the GPU tests here, or None."""
    if not ON_CPU and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if name == "extension":
        missing = [op for op in extension.OPS if not extension.has_kernel(op, DEVICE)]
        return extension.missing_kernel_message(missing[0], DEVICE) if missing else None
    return triton_kernels.unavailable_reason(DEVICE)


def _backend_param(name: str):
    reason = missing_reason(name)
    return pytest.param(name, marks=pytest.mark.skipif(reason is not None, reason=str(reason)))


BACKENDS = [_backend_param(name) for name in ("extension", "triton")]

# Tolerances: tests/opcases.TOLERANCES' rtol and frac (an atol as a fraction
# of the largest |truth|), against float64 math on the dtype-rounded inputs,
# so only the kernel's own error counts. bfloat16/float16 products run on
# tensor cores with float32 accumulation: a rounding of the output plus the
# rounding of p (or dgt) to the dtype before the products, and the backward
# recomputes p from the rounded guide logits. float32 and float64 products
# are IEEE (no TF32): only the summation order differs from the truth.
LOW_PRECISION = [torch.bfloat16, torch.float16, torch.float32]
ALL_DTYPES = [*LOW_PRECISION, torch.float64]

if ON_CPU:  # small enough for the Triton interpreter
    DESIGN_SHAPES = {
        "ade": (2, 24, 15, 8, 8),
        "pc59": (2, 24, 6, 6, 6),
        "cityscapes": (2, 16, 3, 4, 8),
    }
    ODD_SHAPES = [(1, 5, 1, 7, 9), (3, 17, 7, 1, 1), (1, 33, 19, 5, 7)]
    MID_SHAPE, THOUSAND = (2, 17, 9, 5, 7), (1, 16, 70, 4, 4)
else:
    # B, C, K, H, W: ADE20K, Pascal Context 59 and Cityscapes on the stride-4
    # map at the released per-GPU batch, as benchmarks/kernel_cases.py's SHAPES.
    DESIGN_SHAPES = {
        "ade": (2, 512, 150, 128, 128),
        "pc59": (4, 512, 59, 120, 120),
        "cityscapes": (2, 512, 19, 128, 256),
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


def namespace(name: str):
    return torch.ops.condnet if name == "extension" else torch.ops.condnet_triton


def close(name, got, want, dtype, rtol=None, frac=None):
    assert got is not None, f"{name}: missing"
    assert got.device.type == DEVICE, (name, got.device)
    assert_close_to_truth(name, got, want.to(got.device), dtype, rtol, frac)


def compare(got, truth, dtype, keys=None, **tol):
    for key in keys or truth:
        if truth[key] is None:
            assert got[key] is None, f"{key}: expected no gradient"
        else:
            close(key, got[key], truth[key], dtype, **tol)


def gpu_inputs(shape, dtype, seed=0):
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


def forward_backward(class_pool, dynamic_classify, x, gw, gb, w, b, dg, df, dy, layout=None):
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


def run_ops(name, *args, layout=None):
    return forward_backward(
        partial(ops.class_pool, backend=name),
        partial(ops.dynamic_classify, backend=name),
        *args,
        layout=layout,
    )


def truth(*args):
    return forward_backward(reference.class_pool, reference.dynamic_classify, *args)


# name -> (features' dtype, parameters' dtype, autocast)
PRECISIONS = {
    "bfloat16": (torch.bfloat16, torch.bfloat16, False),
    "amp-bfloat16": (torch.bfloat16, torch.float32, True),
    "float32": (torch.float32, torch.float32, False),
}


def classifier_inputs(shape, precision, layout, seed=0):
    """x, the guide and the projection (as ``layout`` stores it), and the two
    upstream gradients, on the device; with their float64 copies."""
    dtype, param_dtype, _ = PRECISIONS[precision]
    B, C, K, H, W = shape
    x, gw, gb, _, _ = make_inputs(*shape, seed=seed)
    gen = torch.Generator().manual_seed(seed + 2)
    A = torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64) * 0.1
    if layout == "grouped_conv":
        A, a = A.reshape(K * (C + 1), C, 1, 1), a.reshape(-1)
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    low = [x.to(DEVICE, dtype)] + [t.to(DEVICE, param_dtype) for t in (gw, gb, A, a)]
    low += [t.to(DEVICE, dtype) for t in (dy, dg)]
    exact = [t.double() for t in low]
    if param_dtype != dtype:  # autocast casts the guide, never the projection
        exact[1], exact[2] = (t.to(dtype).double() for t in low[1:3])
    return low, exact


def classifier_run(name, inputs, layout, autocast=False):
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


def compare_classifier(got, truth, precision):
    dtype, param_dtype, _ = PRECISIONS[precision]
    for key, want in truth.items():
        # Gradients of float32 master weights come back in float32, summed in
        # float32 from 16-bit terms: held to the features' tolerance.
        expected = param_dtype if key.startswith("d_") else dtype
        assert got[key].dtype == expected, (key, got[key].dtype)
        close(key, got[key].to(dtype) if expected != dtype else got[key], want, dtype)
