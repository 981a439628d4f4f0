"""The projection op (``torch.ops.condnet.project`` and its Triton twin)
against the reference, on every kernel backend this machine runs: values and
gradients in float64 (tight) and float32, both layouts, B=1, K=1, C not a
multiple of 8; gradcheck; the output mask; float16/bfloat16 features with
float32 master weights and without; and the argument checks.

Under the interpreter the Triton tiles are 16 rows x 16 channels x 2 images,
so C=40 (41 rows) and B=3 cross tiles on every axis; on the CPU, K=1 splits
each class across the threads.
"""

import re

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.opcases import (
    KERNEL_BACKENDS,
    TOLERANCES,
    assert_close_all,
    grads,
    needs_extension,
)


def _random_shapes(count, seed=14):
    gen = torch.Generator().manual_seed(seed)

    def draw(lo, hi):
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    return [(draw(1, 4), draw(1, 6), draw(1, 40)) for _ in range(count)]


# B, K, C; B=7 covers a block of 4 images and a tail of 3.
SHAPES = [(2, 5, 13), (1, 1, 7), (3, 4, 16), (2, 3, 40), (1, 2, 1), (7, 3, 9), *_random_shapes(3)]
LAYOUTS = ["per_class", "grouped_conv"]
PROJECT = {"per_class": ops.project_per_class, "grouped_conv": ops.project_grouped_conv}
REFERENCE = {
    "per_class": reference.project_per_class,
    "grouped_conv": reference.project_grouped_conv,
}


def _inputs(B, K, C, dtype=torch.float64, weight_dtype=None, layout="per_class", seed=0):
    """Class features and the projection's parameters as ``layout`` stores them."""
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(B, K, C, generator=gen, dtype=torch.float64)
    A = torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64) * 0.1
    if layout == "grouped_conv":
        A, a = A.reshape(K * (C + 1), C, 1, 1), a.reshape(-1)
    weight_dtype = weight_dtype or dtype
    return f.to(dtype), A.to(weight_dtype), a.to(weight_dtype)


def _project(layout, backend):
    return lambda *t: PROJECT[layout](*t, backend=backend)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_gradients_match_reference(backend, layout, dtype, shape):
    B, K, C = shape
    inputs = _inputs(*shape, dtype=dtype, layout=layout)
    gen = torch.Generator().manual_seed(1)
    upstream = (
        torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(dtype),
        torch.randn(B, K, generator=gen, dtype=torch.float64).to(dtype),
    )
    outs, got = grads(_project(layout, backend), inputs, upstream)
    want_outs, want = grads(REFERENCE[layout], inputs, upstream)
    assert [o.dtype for o in outs] == [dtype, dtype]
    assert_close_all(outs, want_outs, dtype, ("weight", "bias"))
    assert_close_all(got, want, dtype, ("class_feats", "proj_weight", "proj_bias"))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(backend, layout, bias):
    f, A, a = _inputs(2, 3, 5, layout=layout)
    inputs = [t.requires_grad_() for t in (f, A, a if bias else None) if t is not None]
    fn = _project(layout, backend)
    assert torch.autograd.gradcheck(lambda *t: fn(*t), tuple(inputs))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_backward_output_mask_computes_only_what_is_asked(backend, mask):
    B, K, C = 3, 2, 40
    f, A, _ = _inputs(B, K, C)
    dtheta = torch.randn(B, K, C + 1, dtype=torch.float64)
    namespace = torch.ops.condnet if backend == "extension" else torch.ops.condnet_triton
    full = namespace.project_backward(dtheta, f, A, [True] * 3)
    part = namespace.project_backward(dtheta, f, A, list(mask))
    for need, a, b in zip(mask, full, part, strict=True):
        if need:
            assert torch.equal(a, b)
        else:
            assert b is None


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("needs", [(True, False, False), (False, True, True), (False, False, True)])
def test_gradients_for_a_subset_of_inputs(backend, needs):
    inputs = _inputs(2, 3, 18)
    results = []
    for fn in (_project("per_class", backend), reference.project_per_class):
        leaves = [t.clone().requires_grad_(n) for t, n in zip(inputs, needs, strict=True)]
        w, b = fn(*leaves)
        (w.square().sum() + b.square().sum()).backward()
        results.append([t.grad for t in leaves])
    for got, want, need in zip(*results, needs, strict=True):
        assert (got is None) == (not need)
        if need:
            torch.testing.assert_close(got, want, **TOLERANCES[torch.float64].absolute)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("master", [True, False], ids=["float32-weights", "same-dtype"])
def test_low_precision_close_to_float64_truth(backend, dtype, master):
    """16-bit features with float32 master weights (autocast training) or with
    16-bit weights: every sum in float32, against float64 math on the
    dtype-rounded inputs. theta and df come back in the features' dtype, dA
    and da in the weights'."""
    B, K, C = 3, 4, 40
    weight_dtype = torch.float32 if master else dtype
    inputs = _inputs(B, K, C, dtype=dtype, weight_dtype=weight_dtype)
    gen = torch.Generator().manual_seed(2)
    upstream = (
        torch.randn(B, K, C, generator=gen).to(dtype),
        torch.randn(B, K, generator=gen).to(dtype),
    )
    outs, got = grads(_project("per_class", backend), inputs, upstream)
    truth_outs, truth = grads(
        reference.project_per_class, [t.double() for t in inputs], [u.double() for u in upstream]
    )
    assert [o.dtype for o in outs] == [dtype, dtype]
    assert [g.dtype for g in got] == [dtype, weight_dtype, weight_dtype]
    for out, want in zip(outs + got, truth_outs + truth, strict=True):
        torch.testing.assert_close(out.double(), want, **TOLERANCES[dtype].absolute)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_empty_batch(backend):
    f, A, a = (t.requires_grad_() for t in _inputs(0, 3, 5))
    w, b = ops.project_per_class(f, A, a, backend=backend)
    assert w.shape == (0, 3, 5) and b.shape == (0, 3)
    (w.sum() + b.sum()).backward()
    assert f.grad.shape == f.shape and not A.grad.any() and not a.grad.any()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_class_feats(backend):
    f, A, a = _inputs(3, 4, 9)
    f = torch.cat([f, f], dim=2)[..., ::2]  # every other channel of a wider tensor
    assert not f.is_contiguous()
    got = ops.project_per_class(f, A, a, backend=backend)
    want = reference.project_per_class(f, A, a)
    assert_close_all(got, want, torch.float64, ("weight", "bias"))


def test_reference_mixed_precision_rounds_once():
    """The specification of 16-bit features with float32 weights: the
    product in float32, rounded once to the features' dtype."""
    f, A, a = _inputs(2, 3, 8, dtype=torch.bfloat16, weight_dtype=torch.float32)
    theta = reference.project(f, A, a)
    assert theta.dtype == torch.bfloat16
    exact = torch.einsum("kjc,bkc->bkj", A, f.float()) + a
    assert torch.equal(theta, exact.to(torch.bfloat16))


# -- argument checks ------------------------------------------------------------------------


BAD = [
    # (what is wrong, class_feats, proj_weight, proj_bias, error, text in the message)
    ("feats rank", (2, 3), (3, 4, 3), None, ValueError, "class_feats must have shape (B, K, C)"),
    ("weight rows", (2, 3, 4), (3, 4, 4), None, ValueError, "(K, C+1, C) = (3, 5, 4)"),
    ("weight classes", (2, 3, 4), (2, 5, 4), None, ValueError, "proj_weight must have shape"),
    ("bias shape", (2, 3, 4), (3, 5, 4), (3, 4), ValueError, "proj_bias must have shape (K, C+1)"),
]


@pytest.mark.parametrize("what,f,w,b,error,text", BAD, ids=[b[0] for b in BAD])
def test_bad_shapes_name_the_argument(what, f, w, b, error, text):
    args = [torch.randn(*s) if s is not None else None for s in (f, w, b)]
    with pytest.raises(error, match=re.escape(text)):
        ops.project_per_class(*args)


@pytest.mark.parametrize(
    "feats,weight,bias,text",
    [
        (torch.float16, torch.bfloat16, None, "proj_weight must have the class features' dtype"),
        (torch.float32, torch.float64, None, "proj_weight must have the class features' dtype"),
        (torch.bfloat16, torch.float32, torch.bfloat16, "proj_bias must have proj_weight's dtype"),
    ],
)
def test_dtype_mixes_are_rejected(feats, weight, bias, text):
    f, A, a = _inputs(2, 3, 4, dtype=feats, weight_dtype=weight)
    if bias is not None:
        a = a.to(bias)
    with pytest.raises(TypeError, match=text):
        ops.project_per_class(f, A, a)


def test_device_mix_is_rejected():
    f, A, a = _inputs(2, 3, 4)
    with pytest.raises(ValueError, match="proj_weight must be on device"):
        ops.project_per_class(f, A.to("meta"), a)


def test_grouped_conv_weight_shape_is_checked():
    f = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"\(C\*K \+ K, C, 1, 1\) = \(15, 4, 1, 1\)"):
        ops.project_grouped_conv(f, torch.randn(14, 4, 1, 1))
    with pytest.raises(ValueError, match=r"proj_bias must have shape \(C\*K \+ K,\)"):
        ops.project_grouped_conv(f, torch.randn(15, 4), torch.randn(14))


def test_integer_class_feats_are_rejected():
    with pytest.raises(TypeError, match="class_feats must be a floating-point tensor"):
        ops.project_per_class(torch.ones(2, 3, 4, dtype=torch.int64), torch.randn(3, 5, 4))


@needs_extension
@pytest.mark.parametrize(
    "args,error,text",
    [
        (((2, 3, 4), (3, 4, 4), None), ValueError, "proj_weight must have shape (K, C+1, C)"),
        (((2, 3, 4), (3, 5, 4), (2, 5)), ValueError, "proj_bias must have shape (K, C+1)"),
    ],
)
def test_raw_op_checks_its_arguments(args, error, text):
    tensors = [torch.randn(*s) if s is not None else None for s in args]
    with pytest.raises(error, match=re.escape(text)):
        torch.ops.condnet.project(*tensors)


@needs_extension
def test_raw_op_rejects_a_weight_of_another_dtype():
    f, A, a = _inputs(2, 3, 4, dtype=torch.float16, weight_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="proj_weight must have class_feats' dtype"):
        torch.ops.condnet.project(f, A, None)


@needs_extension
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(bias):
    f, A, a = (t.float().requires_grad_() for t in _inputs(2, 3, 5))
    torch.library.opcheck(torch.ops.condnet.project.default, (f, A, a if bias else None))
    mixed = _inputs(2, 3, 5, dtype=torch.bfloat16, weight_dtype=torch.float32)
    torch.library.opcheck(torch.ops.condnet.project.default, mixed)
    dtheta = torch.randn(2, 3, 6)
    for mask in ([True, True, True], [False, True, False], [True, False, True]):
        args = (dtheta, f.detach(), A.detach(), mask)
        torch.library.opcheck(torch.ops.condnet.project_backward.default, args)
