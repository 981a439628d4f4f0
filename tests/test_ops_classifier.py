"""The whole conditional classifier as one op (``conditional_classifier``,
forward and backward each one registered op) against the reference, on every
kernel backend this machine runs; the single dx of its backward; autocast
with float32 master weights and no cast copy of the projection; opcheck,
gradcheck and torch.compile."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import condnet.ops as ops
from condnet.nn import ConditionalClassifier
from condnet.ops import layouts, reference
from tests.opcases import (
    KERNEL_BACKENDS,
    TOLERANCES,
    assert_close_all,
    grads,
    make_inputs,
    needs_extension,
)

SHAPES = [(2, 17, 5, 6, 7), (1, 5, 1, 3, 4), (3, 8, 19, 5, 2)]  # B, C, K, H, W
LAYOUTS = ["grouped_conv", "per_class"]
NAMES = ("x", "guide_weight", "guide_bias", "proj_weight", "proj_bias")


def _projection(C, K, layout, dtype=torch.float64, seed=7):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64) * 0.1
    if layout == "grouped_conv":
        A, a = A.reshape(K * (C + 1), C, 1, 1), a.reshape(-1)
    return A.to(dtype), a.to(dtype)


def _inputs(shape, layout, dtype=torch.float64, param_dtype=None, bias=True):
    B, C, K, H, W = shape
    x, gw, gb, _, _ = make_inputs(B, C, K, H, W, bias=bias)
    A, a = _projection(C, K, layout)
    param_dtype = param_dtype or dtype
    return (
        x.to(dtype),
        gw.to(param_dtype),
        gb.to(param_dtype) if bias else None,
        A.to(param_dtype),
        a.to(param_dtype) if bias else None,
    )


def _classifier(layout, backend):
    return lambda *t: ops.conditional_classifier(*t, layout=layout, backend=backend)


def _upstream(shape, dtype, guide=True, seed=3):
    B, C, K, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64).to(dtype)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64).to(dtype)
    return dy, dg if guide else None


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("guide", [True, False], ids=["both-outputs", "logits-only"])
def test_values_and_gradients_match_reference(backend, layout, dtype, shape, guide):
    inputs = _inputs(shape, layout, dtype)
    upstream = _upstream(shape, dtype, guide)
    outs, got = grads(_classifier(layout, backend), inputs, upstream)
    want_outs, want = grads(
        lambda *t: reference.conditional_classifier(*t, layout), inputs, upstream
    )
    assert_close_all(outs, want_outs, dtype, ("logits", "guide_logits"))
    assert_close_all(got, want, dtype, NAMES)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_without_biases(backend, layout):
    shape = (2, 6, 4, 3, 5)
    inputs = _inputs(shape, layout, bias=False)
    upstream = _upstream(shape, torch.float64)
    outs, got = grads(_classifier(layout, backend), inputs, upstream)
    want_outs, want = grads(
        lambda *t: reference.conditional_classifier(*t, layout), inputs, upstream
    )
    present = [0, 1, 3]  # x, guide_weight, proj_weight
    assert_close_all(
        outs + [got[i] for i in present],
        want_outs + [want[i] for i in present],
        torch.float64,
        ("logits", "guide_logits", "x", "guide_weight", "proj_weight"),
    )
    assert got[2] is None and got[4] is None


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck(backend, layout):
    # Small enough for the full Jacobian under the Triton interpreter.
    inputs = tuple(t.requires_grad_() for t in _inputs((1, 3, 2, 2, 3), layout))
    assert torch.autograd.gradcheck(_classifier(layout, backend), inputs)
    logits_only = lambda *t: _classifier(layout, backend)(*t)[0]  # noqa: E731
    assert torch.autograd.gradcheck(logits_only, inputs, fast_mode=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("layout", ["grouped_conv", "per_class"])
def test_gradcheck_of_every_output_of_the_raw_op(backend, layout):
    """The raw op also returns the class features and theta (what its backward
    needs); gradients that reach them are handled too."""
    x, gw, gb, A, a = _inputs((2, 4, 3, 2, 3), layout)
    if layout == "grouped_conv":
        A, a = layouts.canonical_projection(A, a, "grouped_conv", 3)
    inputs = tuple(t.detach().requires_grad_() for t in (x, gw, gb, A, a))
    namespace = torch.ops.condnet if backend == "extension" else torch.ops.condnet_triton
    fn = lambda *t: tuple(namespace.conditional_classifier(*t, layout))  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize(
    "needs",
    [
        (True, False, False, False, False),
        (False, True, True, False, False),
        (False,) * 3 + (True,) * 2,
    ],
)
def test_gradients_for_a_subset_of_inputs(backend, needs):
    inputs = _inputs((2, 7, 5, 4, 3), "grouped_conv")
    results = []
    for fn in (_classifier("grouped_conv", backend), reference.conditional_classifier):
        leaves = [t.clone().requires_grad_(n) for t, n in zip(inputs, needs, strict=True)]
        y, g = fn(*leaves)
        (y.square().sum() + g.square().sum()).backward()
        results.append([t.grad for t in leaves])
    for got, want, need in zip(*results, needs, strict=True):
        assert (got is None) == (not need)
        if need:
            torch.testing.assert_close(got, want, **TOLERANCES[torch.float64].absolute)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("master", [True, False], ids=["float32-weights", "same-dtype"])
def test_low_precision_close_to_float64_truth(backend, dtype, master):
    """16-bit features with float32 parameters (what autocast hands the op:
    the guide weights cast, the projection's not) or all 16-bit."""
    shape = (2, 24, 9, 5, 6)
    x, gw, gb, A, a = _inputs(shape, "grouped_conv", dtype, torch.float32 if master else dtype)
    gw, gb = gw.to(dtype), gb.to(dtype)  # as ops.conditional_classifier's autocast does
    inputs = (x, gw, gb, A, a)
    upstream = _upstream(shape, dtype)
    outs, got = grads(_classifier("grouped_conv", backend), inputs, upstream)
    truth_outs, truth = grads(
        reference.conditional_classifier,
        [t.double() for t in inputs],
        [u.double() for u in upstream],
    )
    assert [t.dtype for t in got] == [t.dtype for t in inputs]
    for name, out, want in zip(("y", "g") + NAMES, outs + got, truth_outs + truth, strict=True):
        torch.testing.assert_close(
            out.double(), want, atol=6e-2, rtol=3e-2, msg=lambda m, n=name: f"{n}: {m}"
        )


# -- the backward writes dx once -------------------------------------------------------------


class _Recorder(TorchDispatchMode):
    """Every op that reaches the Python dispatcher, with the shapes and dtypes
    of the outputs it allocated (views of its inputs are left out)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        seen = {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        flat = out if isinstance(out, (tuple, list)) else (out,)
        shapes = [
            (tuple(t.shape), t.dtype)
            for t in flat
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen
        ]
        self.calls.append((str(func), shapes))
        return out


def _backward_calls(backend, inputs, layout="grouped_conv"):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y, g = ops.conditional_classifier(*leaves, layout=layout, backend=backend)
    loss = y.square().sum() + g.square().sum()
    with _Recorder() as rec:
        loss.backward()
    return rec.calls


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_is_one_op_and_adds_no_second_dx(backend):
    inputs = _inputs((2, 6, 4, 5, 5), "grouped_conv", torch.float32)
    x_shape = tuple(inputs[0].shape)
    calls = _backward_calls(backend, inputs)
    condnet = [name for name, _ in calls if "condnet" in name]
    assert len(condnet) == 1 and "conditional_classifier_backward" in condnet[0], condnet
    adds = [name for name, shapes in calls if "add" in name and (x_shape, torch.float32) in shapes]
    assert not adds, adds


def test_reference_backward_adds_two_dx():
    """The check above can fail: autograd over the separate reference ops adds two dx."""
    inputs = _inputs((2, 6, 4, 5, 5), "grouped_conv", torch.float32)
    x_shape = tuple(inputs[0].shape)
    calls = _backward_calls("reference", inputs)
    assert any("add" in name and (x_shape, torch.float32) in shapes for name, shapes in calls)


@needs_extension
def test_module_forward_and_backward_are_one_op_each():
    clf = ConditionalClassifier(8, 3, dropout=0.0)
    x = torch.randn(2, 8, 4, 5, requires_grad=True)
    with _Recorder() as rec:
        logits, guide = clf(x, return_guide=True)
    assert [n for n, _ in rec.calls if "condnet" in n] == ["condnet.conditional_classifier.default"]
    with _Recorder() as rec:
        (logits.sum() + guide.sum()).backward()
    names = [n for n, _ in rec.calls if "condnet" in n]
    assert names == ["condnet.conditional_classifier_backward.default"]


# -- autocast: float32 master weights, no cast copy of the projection ------------------------


def _a_sized(calls, numel):
    return [(n, s) for n, shapes in calls for s in shapes if int(torch.Size(s[0]).numel()) == numel]


@pytest.mark.parametrize(
    "backend",
    [pytest.param("extension", marks=needs_extension), "reference"],
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_autocast_reads_float32_projection_weights_as_they_are(backend, layout):
    """Under bf16 autocast the fused op gets the float32 projection weight
    itself: no bf16 copy of it is made in the forward or the backward, and
    its gradient comes back once, in float32. Plain PyTorch (the reference
    backend) makes the copy, which shows that the check sees one."""
    C, K = 24, 5
    clf = ConditionalClassifier(C, K, layout=layout, dropout=0.0)
    clf.backend = backend
    weight = clf.projection_parameters()[0]
    x = torch.randn(2, C, 6, 6, requires_grad=True)
    with _Recorder() as rec, torch.autocast("cpu", dtype=torch.bfloat16):
        logits, guide = clf(x, return_guide=True)
        (logits.float().square().sum() + guide.float().square().sum()).backward()
    sized = _a_sized(rec.calls, weight.numel())
    copies = [(n, s) for n, s in sized if s[1] != torch.float32]
    if backend == "reference":
        assert copies, sized
        return
    assert logits.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    assert not copies, copies
    # The only tensor the size of the weight is its gradient, written once.
    assert [n for n, _ in sized] == ["condnet.conditional_classifier_backward.default"], sized


@needs_extension
def test_autocast_allocates_far_less_than_a_weight_copy():
    """The kernels themselves (which a dispatch mode cannot see into) allocate
    no copy of the weight either: the forward allocates far less than half of
    the float32 weight, which a bf16 copy would be."""
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    C, K = 64, 40
    clf = ConditionalClassifier(C, K, dropout=0.0)
    x = torch.randn(1, C, 4, 4)
    weight_bytes = clf.filter_project.weight.numel() * 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the profiler sees the calling thread only
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                clf(x)
    finally:
        torch.set_num_threads(threads)
    allocated = sum(
        e.nbytes()
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU and e.nbytes() > 0
    )
    # A bf16 copy of the weight alone would be weight_bytes / 2; the kernels'
    # own temporaries (16-bit products and their float32 sums) stay far below.
    assert 0 < allocated < weight_bytes / 4, (allocated, weight_bytes)


# -- the classifier term of class_pool's backward ---------------------------------------------


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("upstream", ["both", "feats_only", "logits_only", "none"])
def test_class_pool_backward_adds_the_classifier_dx(backend, upstream):
    """class_pool_backward(..., grad_logits=dy, classifier_weight=w) gives dx
    = class_pool's dx + w^T dy, and the same dWg and dbg."""
    B, C, K, H, W = 2, 9, 20, 5, 4
    x, gw, _, w, _ = make_inputs(B, C, K, H, W)
    namespace = torch.ops.condnet if backend == "extension" else torch.ops.condnet_triton
    g, _ = namespace.class_pool(x, gw, None)
    gen = torch.Generator().manual_seed(8)
    dg, df = torch.randn(B, K, H, W, generator=gen), torch.randn(B, K, C, generator=gen)
    dy = torch.randn(B, K, H, W, generator=gen)
    dg, df, dy = (t.double() for t in (dg, df, dy))
    dg = dg if upstream in ("both", "logits_only") else None
    df = df if upstream in ("both", "feats_only") else None
    mask = [True, True, True]
    dx, dw, db = namespace.class_pool_backward(dg, df, x, gw, g, mask, dy, w)
    want_dx, want_dw, want_db = torch.ops.condnet.class_pool_backward(dg, df, x, gw, g, mask)
    want_dx = want_dx + torch.einsum("bkc,bkn->bcn", w, dy.flatten(2)).reshape(x.shape)
    assert_close_all((dx, dw, db), (want_dx, want_dw, want_db), torch.float64, ("dx", "dw", "db"))


@needs_extension
def test_class_pool_backward_needs_both_classifier_arguments():
    x, gw, _, w, _ = make_inputs(1, 3, 2, 2, 2)
    g, _ = torch.ops.condnet.class_pool(x, gw, None)
    with pytest.raises(
        ValueError, match="grad_logits and classifier_weight must be given together"
    ):
        torch.ops.condnet.class_pool_backward(None, None, x, gw, g, [True] * 3, g, None)
    with pytest.raises(ValueError, match="classifier_weight must have shape"):
        torch.ops.condnet.class_pool_backward(None, None, x, gw, g, [True] * 3, g, w[:, :, :2])


# -- dispatcher contract ------------------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize("layout", ["grouped_conv", "per_class"])
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(layout, bias):
    x, gw, gb, A, a = _inputs((2, 5, 3, 4, 3), layout, torch.float32, bias=bias)
    if layout == "grouped_conv":
        A, a = layouts.canonical_projection(A, a, "grouped_conv", 3)
    args = [t.requires_grad_() if t is not None else None for t in (x, gw, gb, A, a)]
    torch.library.opcheck(torch.ops.condnet.conditional_classifier.default, (*args, layout))
    y, g, f, theta = torch.ops.condnet.conditional_classifier(*args, layout)
    saved = [t.detach() for t in (args[0], args[1], g, f, args[3], theta)]
    dy, dg = torch.randn_like(y), torch.randn_like(g)
    op = torch.ops.condnet.conditional_classifier_backward.default
    for upstream, mask in (
        ((dy, dg, None, None), [True] * 5),
        ((dy, None, None, None), [True, False, False, True, False]),
        ((None, dg, None, None), [True, True, True, False, False]),
        ((dy, None, torch.randn_like(f), torch.randn_like(theta)), [True] * 5),
    ):
        torch.library.opcheck(op, (*upstream, *saved, layout, mask))


@needs_extension
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(dynamic):
    torch._dynamo.reset()
    clf = ConditionalClassifier(8, 5, dropout=0.0)
    x = torch.randn(2, 8, 6, 7, requires_grad=True)

    def loss(x):
        logits, guide = clf(x, return_guide=True)
        return logits.square().sum() + guide.square().sum()

    compiled = torch.compile(loss, fullgraph=True, dynamic=dynamic)
    got = compiled(x)
    got_grads = torch.autograd.grad(got, [x, *clf.parameters()])
    want = loss(x)
    want_grads = torch.autograd.grad(want, [x, *clf.parameters()])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grads, want_grads, atol=1e-5, rtol=1e-5)


def test_layout_and_projection_shape_are_checked():
    x, gw, gb, A, a = _inputs((2, 5, 3, 4, 3), "grouped_conv")
    with pytest.raises(ValueError, match="layout must be one of"):
        ops.conditional_classifier(x, gw, gb, A, a, layout="grouped")
    with pytest.raises(ValueError, match=r"for K=3 classes \(guide_weight\) of C=5 channels"):
        ops.conditional_classifier(x, gw, gb, A, a, layout="per_class")
    with pytest.raises(ValueError, match="proj_weight must have shape"):
        ops.conditional_classifier(x, gw[:2], gb[:2], A, a)
