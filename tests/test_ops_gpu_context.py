"""CAC's ops on the GPU, one suite over both GPU backends: the native CUDA
kernels (backend="extension") and the Triton kernels (backend="triton").
Marked ``gpu``, skipped without a GPU (setup in gpu_cases.py;
``CONDNET_GPU_TESTS_ON_CPU=1`` runs them on the CPU at small shapes, to check
the tests themselves).

The fused context_aware_classifier at the datasets' training shapes and at
odd shapes against float64 math on the dtype-rounded inputs: forward and
backward (the gradient of every input) in float32, forward in amp-bfloat16
(float32 parameters under autocast). Its 16-bit backward is not compared
with a float64 truth: the generator's ReLU makes the gradient of the centres
jump where a hidden unit changes sign, and centres rounded to bfloat16 flip a
few. In 16 bits each primitive is checked instead: context_pool with a guide
weight per image and a gradient on each of its outputs, cosine_classify
forward and backward. Also cosine_classify's epsilon policy at a zero pixel
and bitwise repeatability. The kernels' tiles, tails and
splits are checked exhaustively on the CPU: the CUDA kernels under the
emulation (test_ops_cuda_emulated_context.py), the Triton ones in the
interpreter.
"""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.gpu_cases import (
    BACKENDS,
    DESIGN_SHAPES,
    DEVICE,
    MID_SHAPE,
    ODD_SHAPES,
    PRECISIONS,
    close,
)
from tests.opcases import make_inputs

pytestmark = pytest.mark.gpu

CAC_PRECISIONS = ["amp-bfloat16", "float32"]
_GRADS = ("dx", "d_seg_weight", "d_seg_bias", "d_proj_in", "d_proj_out", "d_proj_out_bias")


def cac_inputs(shape, precision, seed=0):
    """x, the static classifier, the generator's three tensors and the
    upstream gradients of (logits, static logits), on the device; with their
    float64 copies (the static classifier as autocast rounds it)."""
    dtype, param_dtype, _ = PRECISIONS[precision]
    B, C, K, H, W = shape
    x, gw, gb, _, _ = make_inputs(*shape, seed=seed)
    gen = torch.Generator().manual_seed(seed + 2)
    hidden = max(C // 2, 1)
    wi = torch.randn(hidden, 2 * C, generator=gen, dtype=torch.float64) * (2 * C) ** -0.5
    wo = torch.randn(C, hidden, generator=gen, dtype=torch.float64) * hidden**-0.5
    bo = torch.randn(C, generator=gen, dtype=torch.float64) * 0.1
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64)
    low = [x.to(DEVICE, dtype)] + [t.to(DEVICE, param_dtype) for t in (gw, gb, wi, wo, bo)]
    low += [t.to(DEVICE, dtype) for t in (dy, dg)]
    exact = [t.double() for t in low]
    if param_dtype != dtype:  # autocast casts x and the static classifier, not the generator
        exact[1], exact[2] = (t.to(dtype).double() for t in low[1:3])
    return low, exact


def cac_run(name, inputs, autocast=False):
    """The fused classifier forward and backward (``name`` None: the reference)."""
    *params, dy, dg = inputs
    leaves = [t.detach().clone().requires_grad_(True) for t in params]
    if name is None:  # the static classifier is the guide and the generator's prototypes
        x, sw, sb, *generator = leaves
        y, g = reference.context_aware_classifier(x, sw, sb, sw, *generator)
    else:
        with torch.autocast(DEVICE, dtype=params[0].dtype, enabled=autocast):
            y, g = ops.context_aware_classifier(*leaves, backend=name)
    torch.autograd.backward([y, g], [dy, dg])
    return {"y": y, "g": g, **{n: t.grad for n, t in zip(_GRADS, leaves, strict=True)}}


def compare_cac(got, truth, precision):
    """Every output and gradient in float32; the outputs alone in 16 bits
    (see the module's docstring)."""
    dtype, param_dtype, _ = PRECISIONS[precision]
    keys = list(truth) if dtype == torch.float32 else ["y", "g"]
    for key in keys:
        want = truth[key]
        # Gradients of float32 parameters come back in float32, summed from
        # 16-bit terms: held to the features' tolerance.
        expected = param_dtype if key.startswith("d_") and key != "dx" else dtype
        assert got[key].dtype == expected, (key, got[key].dtype)
        close(key, got[key].to(dtype), want, dtype)


@pytest.mark.parametrize("precision", CAC_PRECISIONS)
@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_design_shapes_match_float64_truth(backend_name, name, precision):
    low, exact = cac_inputs(DESIGN_SHAPES[name], precision)
    got = cac_run(backend_name, low, autocast=PRECISIONS[precision][2])
    compare_cac(got, cac_run(None, exact), precision)


@pytest.mark.parametrize("precision", CAC_PRECISIONS)
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_odd_shapes_match_float64_truth(backend_name, shape, precision):
    low, exact = cac_inputs(shape, precision, seed=1)
    got = cac_run(backend_name, low, autocast=PRECISIONS[precision][2])
    compare_cac(got, cac_run(None, exact), precision)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_context_pool_per_image_guide_and_every_upstream(backend_name, dtype):
    """A (B, K, C) guide weight (a Dropout2d mask folded in) and gradients on
    the static logits, the centres and the masses."""
    B, C, K, H, W = MID_SHAPE
    x, gw, gb, _, _ = make_inputs(*MID_SHAPE)
    gen = torch.Generator().manual_seed(5)
    gw = gw * (torch.rand(B, 1, C, generator=gen, dtype=torch.float64) > 0.1)
    upstream = [
        torch.randn(*s, generator=gen, dtype=torch.float64)
        for s in ((B, K, H, W), (B, K, C), (B, K))
    ]
    low = [t.to(DEVICE, dtype) for t in (x, gw, gb, *upstream)]
    results = []
    for fn, inputs in (
        (ops.context_pool, low),
        (reference.context_pool, [t.double() for t in low]),
    ):
        leaves = [t.clone().requires_grad_(True) for t in inputs[:3]]
        kwargs = {"backend": backend_name} if fn is ops.context_pool else {}
        outs = fn(*leaves, **kwargs)
        torch.autograd.backward(list(outs), list(inputs[3:]))
        results.append([*(o.detach() for o in outs), *(t.grad for t in leaves)])
    names = ("guide_logits", "centres", "mass", "dx", "d_guide_weight", "d_guide_bias")
    for key, got, want in zip(names, *results, strict=True):
        close(key, got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_cosine_classify_matches_float64_truth(backend_name, dtype):
    x, _, _, w, _ = make_inputs(*MID_SHAPE)
    dy = torch.randn(x.shape[0], w.shape[1], *x.shape[2:], dtype=torch.float64)
    low = [t.to(DEVICE, dtype) for t in (x, w, dy)]
    results = []
    for fn, (x_, w_, dy_) in (
        (ops.cosine_classify, low),
        (reference.cosine_classify, [t.double() for t in low]),
    ):
        leaves = [t.clone().requires_grad_(True) for t in (x_, w_)]
        kwargs = {"backend": backend_name} if fn is ops.cosine_classify else {}
        y = fn(*leaves, scale=15.0, **kwargs)
        y.backward(dy_)
        results.append([y.detach(), *(t.grad for t in leaves)])
    for key, got, want in zip(("logits", "dx", "dweight"), *results, strict=True):
        close(key, got, want, dtype)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_cosine_classify_epsilon_at_a_zero_pixel(backend_name):
    x, _, _, w, _ = make_inputs(*MID_SHAPE, dtype=torch.float32)
    x, w = x.to(DEVICE), w.to(DEVICE)
    x[0, :, 1, 2] = 0
    leaf = x.clone().requires_grad_(True)
    y = ops.cosine_classify(leaf, w, scale=15.0, backend=backend_name)
    y.sum().backward()
    assert (y[0, :, 1, 2] == 0).all() and torch.isfinite(leaf.grad).all()
    released = ops.cosine_classify(x, w, scale=15.0, eps=0.0, backend=backend_name)
    assert torch.isnan(released[0, :, 1, 2]).all() and torch.isfinite(released[1]).all()


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bitwise_reproducible(backend_name):
    """No atomics: the same inputs give the same bits, forward and backward."""
    low, _ = cac_inputs(MID_SHAPE, "amp-bfloat16")
    first, second = (cac_run(backend_name, low, autocast=True) for _ in range(2))
    for key in first:
        assert torch.equal(first[key], second[key]), key
