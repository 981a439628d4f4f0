"""CAC's ops (context_pool, cosine_classify, context_aware_classifier) on every
kernel backend against the specification, condnet.ops.reference: values and
gradients in float64 and float32, the primitive backward ops against autograd
of the specification, gradcheck, opcheck, torch.compile, autocast, the epsilon
policy, the fused backward writing dx once, and the errors for bad input."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from condnet import ops
from condnet.ops import cac, context_composite, reference, registry
from tests.opcases import KERNEL_BACKENDS, TOLERANCES, needs_extension, needs_interpreter

SHAPES = [  # B, C, K, H, W
    (2, 6, 5, 3, 4),
    (1, 9, 3, 5, 7),
    (3, 4, 1, 2, 2),  # one class
]
NAMESPACES = [
    pytest.param("condnet", marks=needs_extension),
    pytest.param("condnet_triton", marks=needs_interpreter),
]
_BACKEND_OF = {"condnet": "extension", "condnet_triton": "triton"}


def make_cac_inputs(B, C, K, H, W, dtype=torch.float64, bias=True, seed=0):
    """x, seg_weight, seg_bias, proj_in_weight, proj_out_weight, proj_out_bias
    (hidden C // 2, at least 1), scaled so the softmax is neither flat nor one-hot."""
    gen = torch.Generator().manual_seed(seed)
    hidden = max(C // 2, 1)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    return (
        rnd(B, C, H, W),
        rnd(K, C, scale=2 * C**-0.5),
        rnd(K) if bias else None,
        rnd(hidden, 2 * C, scale=(2 * C) ** -0.5),
        rnd(C, hidden, scale=hidden**-0.5),
        rnd(C) if bias else None,
    )


def _leaves(tensors):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]


def _grads(outputs, inputs, seed=5):
    """Gradients of a random projection of ``outputs`` with respect to ``inputs``."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)).sum()
        for o in outputs
    )
    present = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(loss, present, allow_unused=True))
    return [next(grads) if t is not None else None for t in inputs]


def _assert_close(name, got, want, dtype):
    assert (got is None) == (want is None), name
    if got is not None:
        torch.testing.assert_close(
            got, want, **TOLERANCES[dtype].absolute, msg=lambda m: f"{name}: {m}"
        )


# -- the truth of the primitive backward ops: autograd over the specification -----------------


def pool_backward_truth(grads, x, guide_weight, guide_bias, classifier=None, eps=0.0):
    """(dx, dWg, dbg) of context_pool for upstream (dg, d centres, d mass), plus,
    when ``grads`` has a fourth entry (d logits), the cosine classifier's dx."""
    leaves = _leaves([x, guide_weight, guide_bias])
    outs = list(reference.context_pool(*leaves))
    if len(grads) == 4:
        outs.append(reference.cosine_logits(leaves[0], classifier, eps))
    pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None]
    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    return [t.grad if t is not None else None for t in leaves]


def cosine_backward_truth(grad_logits, x, classifier, eps):
    leaves = _leaves([x, classifier])
    reference.cosine_logits(leaves[0], leaves[1], eps).backward(grad_logits)
    return [t.grad for t in leaves]


def _truth_parts() -> context_composite.ContextParts:
    """The composite's four primitives as the specification and its autograd."""

    def cosine(x, classifier, eps):
        return reference.cosine_logits(x, classifier, eps), x.norm(dim=1)

    def pool_backward(dg, dc, dm, x, gw, g, c, m, mask, dy=None, v=None, y=None, r=None, eps=0.0):
        grads = (dg, dc, dm) if dy is None else (dg, dc, dm, dy)
        # The op gets the guide logits, not the bias: read the bias back from them.
        bias = g[0, :, 0, 0] - (gw if gw.dim() == 2 else gw[0]) @ x[0, :, 0, 0]
        dx, dgw, dgb = pool_backward_truth(grads, x, gw, bias, v, eps)
        return tuple(t if need else None for t, need in zip((dx, dgw, dgb), mask, strict=True))

    def cosine_backward(dy, x, v, y, r, eps, mask):
        dx, dv = cosine_backward_truth(dy, x, v, eps)
        return tuple(t if need else None for t, need in zip((dx, dv), mask, strict=True))

    return context_composite.ContextParts(
        context_pool=reference.context_pool,
        cosine_classify=cosine,
        context_pool_backward=pool_backward,
        cosine_classify_backward=cosine_backward,
    )


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_image_guide", [False, True])
def test_the_composite_and_the_generator_backward_match_autograd(shape, per_image_guide):
    """context_composite (what every kernel backend's fused op runs) and
    cac.generate_backward, over exact primitives, equal autograd of the spec."""
    x, W, b, wi, wo, bo = make_cac_inputs(*shape)
    mask = torch.rand(shape[0], shape[1], dtype=torch.float64) + 0.5
    guide = W * mask[:, None, :] if per_image_guide else W
    inputs = [x, guide, b, W, wi, wo, bo]
    leaves = _leaves(inputs)
    want_out = reference.context_aware_classifier(*leaves, 15.0, 1e-12)
    want = _grads(want_out, leaves)
    parts = _truth_parts()
    outs = context_composite.forward(parts, *inputs, 15.0, 1e-12)
    logits, guide_logits, centres, mass, classifier, x_norm = outs
    _assert_close("logits", logits, want_out[0], torch.float64)
    _assert_close("guide_logits", guide_logits, want_out[1], torch.float64)
    gen = torch.Generator().manual_seed(5)
    dy = torch.randn(logits.shape, generator=gen, dtype=torch.float64)
    dg = torch.randn(guide_logits.shape, generator=gen, dtype=torch.float64)
    got = context_composite.backward(
        parts, dy, dg, x, guide, guide_logits, centres, mass, W, wi, wo, bo,
        logits, classifier, x_norm, 15.0, 1e-12, [True] * 7,
    )  # fmt: skip
    names = ["x", "guide_weight", "guide_bias", "class_weight", "proj_in", "proj_out", "proj_b"]
    for name, g, w in zip(names, got, want, strict=True):
        _assert_close(name, g, w, torch.float64)


# -- the primitive ops of each kernel namespace ---------------------------------------------


def _namespace(ns):
    registry.kernel("context_pool", "cpu", _BACKEND_OF[ns])  # loads the backend's ops
    return getattr(torch.ops, ns)


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_image_guide", [False, True])
def test_primitive_ops_match_the_specification(ns, shape, dtype, per_image_guide):
    nsops = _namespace(ns)
    x, W, b, *_ = make_cac_inputs(*shape, dtype=dtype)
    guide = W.expand(shape[0], -1, -1).contiguous() * 0.7 if per_image_guide else W
    got = nsops.context_pool(x, guide, b)
    want = reference.context_pool(x, guide, b)
    for name, g, w in zip(["guide_logits", "centres", "mass"], got, want, strict=True):
        _assert_close(name, g, w, dtype)
    g, centres, mass = got
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(shape[0], shape[2], shape[1], generator=gen, dtype=torch.float64).to(dtype)
    for eps in (1e-12, 0.0):
        logits, x_norm = nsops.cosine_classify(x, v, eps)
        _assert_close("logits", logits, reference.cosine_logits(x, v, eps), dtype)
        _assert_close("x_norm", x_norm, x.norm(dim=1), dtype)
        dy = torch.randn(logits.shape, generator=gen, dtype=torch.float64).to(dtype)
        dx, dv = nsops.cosine_classify_backward(dy, x, v, logits, x_norm, eps, [True, True])
        want_dx, want_dv = cosine_backward_truth(dy, x, v, eps)
        _assert_close("cosine dx", dx, want_dx, dtype)
        _assert_close("cosine dweight", dv, want_dv, dtype)
    upstream = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype) for t in got]
    for which in ([0], [1], [2], [0, 1, 2]):
        grads = [u if i in which else None for i, u in enumerate(upstream)]
        dx, dgw, dgb = nsops.context_pool_backward(*grads, x, guide, g, centres, mass, [True] * 3)
        for name, a, w in zip(
            ["dx", "dguide_weight", "dguide_bias"],
            (dx, dgw, dgb),
            pool_backward_truth(grads, x, guide, b),
            strict=True,
        ):
            _assert_close(f"{name} from {which}", a, w, dtype)
    # With the cosine classifier's upstream, dx holds both parts.
    grads = [*upstream, dy]
    dx, dgw, dgb = nsops.context_pool_backward(
        *upstream, x, guide, g, centres, mass, [True] * 3, dy, v, logits, x_norm, 0.0
    )
    want = pool_backward_truth(grads, x, guide, b, v, 0.0)
    for name, a, w in zip(
        ["dx", "dguide_weight", "dguide_bias"], (dx, dgw, dgb), want, strict=True
    ):
        _assert_close(f"{name} with the cosine term", a, w, dtype)


# -- the public ops on every backend ----------------------------------------------------------


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_context_aware_classifier_matches_reference(backend, shape, dtype, bias):
    inputs = make_cac_inputs(*shape, dtype=dtype, bias=bias)
    mask = (torch.rand(shape[0], shape[1]) > 0.3).to(dtype) / 0.7
    results = []
    for name in (backend, "reference"):
        leaves = _leaves(inputs)
        outs = ops.context_aware_classifier(*leaves, channel_mask=mask, backend=name)
        results.append((outs, _grads(outs, leaves)))
    (got, got_grads), (want, want_grads) = results
    for name, a, w in zip(["logits", "static_logits"], got, want, strict=True):
        _assert_close(name, a, w, dtype)
    names = ["x", "seg_weight", "seg_bias", "proj_in", "proj_out", "proj_bias"]
    for name, a, w in zip(names, got_grads, want_grads, strict=True):
        _assert_close(f"d{name}", a, w, dtype)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_context_pool_and_cosine_classify_match_reference(backend):
    x, W, b, *_ = make_cac_inputs(2, 6, 4, 3, 5)
    per_image = W * torch.linspace(0.5, 1.5, 2, dtype=torch.float64)[:, None, None]
    for guide in (W, per_image):
        results = []
        for name in (backend, "reference"):
            leaves = _leaves([x, guide, b])
            outs = ops.context_pool(*leaves, backend=name)
            results.append((outs, _grads(outs, leaves)))
        got, want = (r[0] + tuple(r[1]) for r in results)
        for a, w in zip(got, want, strict=True):
            _assert_close("context_pool", a, w, torch.float64)
    for weight in (W, per_image):
        results = []
        for name in (backend, "reference"):
            leaves = _leaves([x, weight])
            y = ops.cosine_classify(*leaves, scale=15.0, backend=name)
            results.append((y, _grads([y], leaves)))
        _assert_close("cosine logits", results[0][0], results[1][0], torch.float64)
        for a, w in zip(results[0][1], results[1][1], strict=True):
            _assert_close("cosine grads", a, w, torch.float64)


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "reference"])
def test_gradcheck(backend):
    inputs = _leaves(make_cac_inputs(2, 4, 3, 2, 3))
    mask = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 1.5, 1.0, 1.0]], dtype=torch.float64)

    def fused(*args):
        return ops.context_aware_classifier(*args, channel_mask=mask, backend=backend)

    assert torch.autograd.gradcheck(fused, inputs)
    x, W, b = inputs[:3]
    assert torch.autograd.gradcheck(lambda *a: ops.context_pool(*a, backend=backend), (x, W, b))
    per_image = _leaves([W.detach().expand(2, -1, -1) * 1.3])[0]
    assert torch.autograd.gradcheck(
        lambda x, w: ops.cosine_classify(x, w, scale=15.0, backend=backend), (x, per_image)
    )


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(ns, bias):
    nsops = _namespace(ns)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if ns != "condnet_triton" or torch.cuda.is_available():
        utils += ("test_aot_dispatch_dynamic",)  # not for the interpreter's eager launches

    def opcheck(op, args):
        torch.library.opcheck(op, args, test_utils=utils)

    x, W, b, wi, wo, bo = _leaves(make_cac_inputs(2, 4, 3, 3, 2, dtype=torch.float32, bias=bias))
    args = (x, W, b, W, wi, wo, bo, 15.0, 1e-12)
    opcheck(nsops.context_aware_classifier.default, args)
    opcheck(nsops.context_pool.default, (x, W, b))
    v = torch.randn(2, 3, 4, requires_grad=True)
    opcheck(nsops.cosine_classify.default, (x, v, 1e-12))
    y, g, c, m, cls, r = (t.detach() for t in nsops.context_aware_classifier(*args))
    saved = (x.detach(), W.detach(), g, c, m, W.detach(), wi.detach(), wo.detach())
    saved += (bo.detach() if bo is not None else None, y, cls, r, 15.0, 1e-12)
    dy, dg = torch.randn_like(y), torch.randn_like(g)
    backward = nsops.context_aware_classifier_backward.default
    for upstream, mask in (
        ((dy, dg), [True, True, bias, True, True, True, bias]),
        ((dy, None), [True, False, False, True, True, False, False]),
        ((None, dg), [True, True, bias, False, False, False, False]),
    ):
        opcheck(backward, (*upstream, *saved, mask))


@pytest.mark.parametrize("backend", [pytest.param("extension", marks=needs_extension), "reference"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(backend, dynamic):
    torch._dynamo.reset()
    inputs = _leaves(make_cac_inputs(2, 8, 5, 6, 7, dtype=torch.float32))

    def loss(*args):
        logits, static = ops.context_aware_classifier(*args, backend=backend)
        return logits.square().sum() + static.square().sum()

    compiled = torch.compile(loss, fullgraph=True, dynamic=dynamic)
    got = compiled(*inputs)
    got_grads = torch.autograd.grad(got, inputs)
    want = loss(*inputs)
    want_grads = torch.autograd.grad(want, inputs)
    torch.testing.assert_close(got, want, **TOLERANCES[torch.float32].absolute)
    torch.testing.assert_close(got_grads, want_grads, **TOLERANCES[torch.float32].absolute)


class _Recorder(TorchDispatchMode):
    """The ops that reach the Python dispatcher, with the shapes they allocate."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, (tuple, list)) else (out,)
        shapes = [tuple(t.shape) for t in flat if isinstance(t, torch.Tensor)]
        self.calls.append((str(func), shapes))
        return out


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_is_one_op_that_writes_dx_once(backend):
    inputs = _leaves(make_cac_inputs(2, 6, 4, 5, 5, dtype=torch.float32))
    logits, static = ops.context_aware_classifier(*inputs, backend=backend)
    loss = logits.square().sum() + static.square().sum()
    with _Recorder() as rec:
        loss.backward()
    names = [name for name, _ in rec.calls if "condnet" in name]
    assert len(names) == 1 and "context_aware_classifier_backward" in names[0], names
    # Inside it: exactly one op makes an x-sized tensor (context_pool_backward's dx).
    ns = "condnet" if backend == "extension" else "condnet_triton"
    nsops = getattr(torch.ops, ns)
    parts = context_composite.ContextParts(
        nsops.context_pool, nsops.cosine_classify,
        nsops.context_pool_backward, nsops.cosine_classify_backward,
    )  # fmt: skip
    x, W, b, wi, wo, bo = (t.detach() for t in inputs)
    outs = context_composite.forward(parts, x, W, b, W, wi, wo, bo, 15.0, 1e-12)
    y, g, c, m, v, r = outs
    with _Recorder() as rec:
        context_composite.backward(
            parts, torch.ones_like(y), torch.ones_like(g), x, W, g, c, m, W, wi, wo, bo,
            y, v, r, 15.0, 1e-12, [True] * 7,
        )  # fmt: skip
    x_sized = [name for name, shapes in rec.calls if tuple(x.shape) in shapes]
    assert x_sized == [f"{ns}.context_pool_backward.default"], x_sized


@pytest.mark.parametrize("backend", [*KERNEL_BACKENDS, "reference"])
def test_a_zero_feature_gives_zero_logits_and_finite_gradients(backend):
    x, *rest = make_cac_inputs(1, 4, 3, 2, 3)
    x[0, :, 1, 2] = 0.0
    leaves = _leaves([x, *rest])
    logits, static = ops.context_aware_classifier(*leaves, backend=backend)
    assert torch.isfinite(logits).all()
    assert (logits[0, :, 1, 2] == 0).all()
    grads = _grads([logits, static], leaves)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    # eps=0 is the released code's exact division: NaN where the feature is zero.
    released = ops.context_aware_classifier(*_leaves([x, *rest]), eps=0.0, backend=backend)[0]
    assert torch.isnan(released[0, :, 1, 2]).all()
    assert torch.isfinite(released[0, :, 0, 0]).all()


@pytest.mark.parametrize("backend", [pytest.param("extension", marks=needs_extension), "reference"])
def test_autocast_with_float32_parameters(backend):
    """bf16 autocast: the outputs in bf16, close to float32; the generator's
    float32 weights get float32 gradients."""
    inputs = make_cac_inputs(2, 16, 5, 6, 6, dtype=torch.float32)
    want = ops.context_aware_classifier(*inputs, backend="reference")
    leaves = _leaves(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.context_aware_classifier(*leaves, backend=backend)
    assert all(t.dtype == torch.bfloat16 for t in got)
    for a, w in zip(got, want, strict=True):
        torch.testing.assert_close(a.float(), w, **TOLERANCES[torch.bfloat16].absolute)
    grads = torch.autograd.grad(sum(t.float().sum() for t in got), leaves)
    assert [g.dtype for g in grads] == [torch.float32] * 6
    assert all(torch.isfinite(g).all() for g in grads)


def test_bad_inputs_name_the_argument():
    x, W, b, wi, wo, bo = make_cac_inputs(2, 6, 4, 3, 3)
    cases = [
        (lambda: ops.context_pool(x[0], W, b), "x must be 4-D"),
        (lambda: ops.context_pool(x, W[:, :5], b), "guide_weight must have shape"),
        (lambda: ops.context_pool(x, W, b[:3]), "guide_bias must have shape"),
        (lambda: ops.cosine_classify(x, W, eps=-1.0), "eps must be a number >= 0"),
        (lambda: ops.cosine_classify(x, W, scale=float("inf")), "scale must be a finite"),
        (lambda: ops.cosine_classify(x, W.float()), "weight must have x's dtype"),
        (lambda: ops.context_aware_classifier(x, W, b, wi[:, :5], wo, bo), "proj_in_weight"),
        (lambda: ops.context_aware_classifier(x, W, b, wi, wo.t(), bo), "proj_out_weight"),
        (lambda: ops.context_aware_classifier(x, W, b, wi, wo, bo[:2]), "proj_out_bias"),
        (
            lambda: ops.context_aware_classifier(x, W, b, wi, wo, bo, channel_mask=x[:, :, 0, 0].T),
            "channel_mask must have shape",
        ),
        (lambda: ops.context_aware_classifier(x, W[None], b, wi, wo, bo), "seg_weight"),
    ]
    for call, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            call()


def test_the_epsilon_constants_are_the_released_and_normalize_values():
    assert cac.MASS_EPS == 1e-12
    assert cac.DEFAULT_EPS == 1e-12  # torch.nn.functional.normalize's
