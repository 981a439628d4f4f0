"""What is particular to CAC's Triton kernels (context_pool, cosine_classify,
their backward and the fused context_aware_classifier), in Triton's
interpreter on CPU (conftest.py sets TRITON_INTERPRET=1 without a GPU): ragged
and multiple tiles on every axis, the per-image guide weight, every subset of
upstream gradients of the backward kernel, 16-bit against a float64 truth,
the GPU's larger tiles, the deterministic mode, the epsilon reaching the
kernels in float64, fake kernels, torch.compile tracing and FLOP counts.
The tests every backend shares against the reference are in
test_ops_context.py; compilation for sm_80/sm_90 in
test_ops_context_triton_compile.py.

Under the interpreter the tiles are 16 classes x 16 channels x 32 pixels
(condnet/ops/triton/config.py): C=33, K=37 and 7x9 images span three,
three and two tiles, each with a partial last tile.
"""

import functools

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from condnet.ops import triton as triton_kernels
from tests.opcases import TOLERANCES, grads, needs_interpreter

RAGGED = (2, 33, 37, 7, 9)  # B, C, K, H, W: several tiles on every axis, partial last ones


def _inputs(shape, dtype=torch.float64, seed=0, per_image=False):
    """x (with one zero pixel), a guide weight (K, C) or (B, K, C), its bias,
    the generator's weights and per-image classifiers (B, K, C)."""
    B, C, K, H, W = shape
    gen = torch.Generator().manual_seed(seed)

    def rnd(*size, scale=1.0):
        return (torch.randn(*size, generator=gen, dtype=torch.float64) * scale).to(dtype)

    x = rnd(B, C, H, W)
    x[0, :, 0, 1] = 0  # a zero feature: eps decides its logits
    gw = rnd(*((B,) if per_image else ()), K, C, scale=C**-0.5 * 2)
    hidden = max(C // 2, 1)
    generator = (rnd(hidden, 2 * C, scale=C**-0.5), rnd(C, hidden, scale=hidden**-0.5), rnd(C))
    return x, gw, rnd(K), generator, rnd(B, K, C)


def _triton(fn, **kwargs):
    return lambda *a: fn(*a, backend="triton", **kwargs)


def _close(name, got, want, dtype):
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(got, want, **tol.absolute, msg=lambda m: f"{name}: {m}")


@needs_interpreter
@pytest.mark.parametrize("per_image", [False, True], ids=["shared_guide", "per_image_guide"])
@pytest.mark.parametrize(
    "upstream",
    [(1, 1, 1), (0, 1, 0), (1, 0, 0), (0, 0, 1)],
    ids=["all", "centres_only", "logits_only", "mass_only"],
)
def test_context_pool_matches_reference_across_tiles(per_image, upstream):
    """Every output and gradient in float64 for each subset of upstream
    gradients (each one switches phases of the backward kernel on or off)."""
    x, gw, gb, _, _ = _inputs(RAGGED, per_image=per_image)
    gen = torch.Generator().manual_seed(5)
    ref_outs = reference.context_pool(x, gw, gb)
    ups = [
        torch.randn(o.shape, generator=gen, dtype=o.dtype) if use else None
        for o, use in zip(ref_outs, upstream, strict=True)
    ]
    outs, got = grads(_triton(ops.context_pool), (x, gw, gb), ups)
    want_outs, want = grads(reference.context_pool, (x, gw, gb), ups)
    names = ("guide_logits", "centres", "mass", "dx", "dWg", "dbg")
    for name, a, b in zip(names, outs + got, want_outs + want, strict=True):
        _close(name, a, b, torch.float64)


@needs_interpreter
@pytest.mark.parametrize("eps", [1e-12, 0.5])
def test_cosine_classify_matches_reference_across_tiles(eps):
    """eps=0.5 clamps some pixels' norms (their norm has no gradient there)."""
    x, _, _, _, w = _inputs(RAGGED)
    x = x * 0.3  # norms around 1.7: eps=0.5 clamps the zero pixel and no other
    x[1, :, 2, 3] *= 0.05  # and this one
    dy = torch.randn(RAGGED[0], RAGGED[2], *RAGGED[3:], dtype=x.dtype)
    fn = _triton(ops.cosine_classify, scale=15.0, eps=eps)
    outs, got = grads(fn, (x, w), [dy])
    want_outs, want = grads(lambda *a: reference.cosine_classify(*a, 15.0, eps), (x, w), [dy])
    for name, a, b in zip(("logits", "dx", "dw"), outs + got, want_outs + want, strict=True):
        _close(name, a, b, torch.float64)


def _fused(backend, channel_mask=None, eps=1e-12):
    def run(x, gw, gb, wi, wo, bo):
        return ops.context_aware_classifier(
            x, gw, gb, wi, wo, bo, channel_mask=channel_mask, eps=eps, backend=backend
        )

    return run


@needs_interpreter
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "channel_mask"])
def test_fused_op_matches_reference_across_tiles(masked):
    x, gw, gb, (wi, wo, bo), _ = _inputs(RAGGED)
    B, C = x.shape[:2]
    mask = None
    if masked:  # Dropout2d's multipliers: the guide weight becomes one per image
        keep = torch.rand(B, C, generator=torch.Generator().manual_seed(2)) > 0.3
        mask = keep.double() / 0.7
    gen = torch.Generator().manual_seed(6)
    dy, ds = (torch.randn(B, gw.shape[0], *x.shape[2:], generator=gen).double() for _ in "ab")
    inputs = (x, gw, gb, wi, wo, bo)
    outs, got = grads(_fused("triton", mask), inputs, [dy, ds])
    want_outs, want = grads(_fused("reference", mask), inputs, [dy, ds])
    names = ("logits", "static_logits", "dx", "dWg", "dbg", "dWi", "dWo", "dbo")
    for name, a, b in zip(names, outs + got, want_outs + want, strict=True):
        _close(name, a, b, torch.float64)


@needs_interpreter
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # eps=0's 0 / 0
def test_eps_policy_on_a_zero_feature_and_float64_eps():
    """A zero feature gets zero logits with the default eps and NaN with
    eps=0 (the released division); a float64 pixel whose norm is below eps
    is divided by float64's 1e-12, not float32's (which differs by 2e-8)."""
    x, gw, gb, (wi, wo, bo), _ = _inputs(RAGGED)
    x[1, :, 4, 4] *= 1e-14  # norm ~6e-14 < eps
    logits, _ = _fused("triton")(x, gw, gb, wi, wo, bo)
    want, _ = _fused("reference")(x, gw, gb, wi, wo, bo)
    assert torch.all(logits[0, :, 0, 1] == 0)
    torch.testing.assert_close(logits, want, rtol=1e-12, atol=1e-12)
    released, _ = _fused("triton", eps=0.0)(x, gw, gb, wi, wo, bo)
    assert torch.isnan(released[0, :, 0, 1]).all()
    assert torch.isfinite(released[:, :, 1:]).all()


def _check_primitives_against_float64_truth(shape, dtype, device="cpu"):
    """context_pool and cosine_classify at ``dtype``, every output and
    gradient, against float64 math on the dtype-rounded inputs."""
    x, gw, gb, _, v = _inputs(shape)
    x[0, :, 0, 1] = 1.0  # the zero pixel's eps-sized norm is test_eps_policy's
    x, gw, gb, v = (t.to(device, dtype) for t in (x, gw, gb, v))
    B, C, K, H, W = shape
    rng = torch.Generator().manual_seed(4)
    up_pool = [torch.randn(*size, generator=rng) for size in ((B, K, H, W), (B, K, C))]
    up_pool.append(torch.rand(B, K, generator=rng))
    up_pool = [u.to(device, dtype) for u in up_pool]
    dy = [torch.randn(B, K, H, W, generator=rng).to(device, dtype)]
    cases = (
        (_triton(ops.context_pool), reference.context_pool, (x, gw, gb), up_pool),
        (_triton(ops.context_pool), reference.context_pool, (x, v, gb), up_pool),
        (
            _triton(ops.cosine_classify, scale=15.0),
            lambda *a: reference.cosine_classify(*a, 15.0),
            (x, v),
            dy,
        ),
    )
    for op, ref, inputs, upstream in cases:
        outs, got = grads(op, inputs, upstream)
        truth_outs, truth = grads(ref, [t.double() for t in inputs], [u.double() for u in upstream])
        for i, (out, want) in enumerate(zip(outs + got, truth_outs + truth, strict=True)):
            assert out.dtype == dtype, (i, out.dtype)
            # The backward recomputes P from the logits saved in the dtype, and
            # dWg sums such terms over every pixel: the absolute tolerance
            # scales with the largest entry (twice TOLERANCES' frac).
            tol = TOLERANCES[dtype]
            atol = 2 * tol.frac * want.abs().max().item()
            torch.testing.assert_close(out.double(), want, atol=atol, rtol=tol.rtol, msg=str(i))


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [RAGGED, (1, 6, 70, 5, 8)])
def test_low_precision_close_to_float64_truth(shape, dtype):
    """Both primitives in 16 bits (bfloat16 products are widened to float32
    in the interpreter only, see tiles.dot; every load, store and rounding to
    bfloat16 is the GPU kernel's own). The fused op is these two around the
    generator, whose ReLU makes its gradients jump where a rounded centre
    moves a hidden unit across 0: a float64 truth of the whole op in 16 bits
    would test the rounding of the centres, not the kernels."""
    _check_primitives_against_float64_truth(shape, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", [(2, 512, 150, 32, 32), (3, 70, 19, 13, 11)])
def test_gpu_close_to_float64_truth(shape, dtype):
    """The compiled kernels at the GPU's own tiles: the ADE20K head's shape
    and a ragged one."""
    if triton_kernels.unavailable_reason("cuda") is not None:
        pytest.skip(triton_kernels.unavailable_reason("cuda"))
    _check_primitives_against_float64_truth(shape, dtype, "cuda")


@needs_interpreter
def test_larger_tiles(monkeypatch):
    """The GPU's larger tiles: several tiles wider than the tensor's extent."""
    from condnet.ops.triton import config

    monkeypatch.setattr(config, "_INTERPRETED", config.Blocks(64, 32, 64))
    shape = (2, 40, 70, 9, 9)  # K spans 2 class tiles, C 2 channel tiles, 81 pixels 2 pixel tiles
    x, gw, gb, generator, _ = _inputs(shape)
    gen = torch.Generator().manual_seed(8)
    ups = [torch.randn(2, 70, 9, 9, generator=gen).double() for _ in range(2)]
    inputs = (x, gw, gb, *generator)
    outs, got = grads(_fused("triton"), inputs, ups)
    want_outs, want = grads(_fused("reference"), inputs, ups)
    for i, (a, b) in enumerate(zip(outs + got, want_outs + want, strict=True)):
        _close(str(i), a, b, torch.float64)


@needs_interpreter
def test_deterministic_mode_adds_partial_sums_in_a_fixed_order(monkeypatch):
    from condnet.ops.triton import class_pool, context_pool, context_pool_backward

    chosen = []

    def spy(programs):
        chosen.append(class_pool.reduce_with_atomics(programs))
        return chosen[-1]

    monkeypatch.setattr(context_pool, "reduce_with_atomics", spy)
    monkeypatch.setattr(context_pool_backward, "reduce_with_atomics", spy)
    x, gw, gb, generator, _ = _inputs((2, 17, 17, 5, 7), dtype=torch.float32)
    inputs = (x, gw, gb, *generator)
    ups = [torch.ones(2, 17, 5, 7), torch.full((2, 17, 5, 7), 0.5)]

    def run():
        outs, got = grads(_fused("triton"), inputs, ups)
        return outs + got

    with_atomics = run()
    assert chosen == [True, True]  # forward, backward: several pixel tiles
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        first, second = run(), run()
    finally:
        torch.use_deterministic_algorithms(was)
    assert chosen[2:] == [False] * 4
    for a, b, c in zip(first, second, with_atomics, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c, **TOLERANCES[torch.float32].absolute)


@needs_interpreter
def test_fake_kernels_and_registration():
    """Schema, autograd registration and fake (shape) kernels of the six ops."""
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    shape = (2, 6, 20, 5, 7)
    x, gw, gb, (wi, wo, bo), v = (
        tuple(t.float() for t in item) if isinstance(item, tuple) else item.float()
        for item in _inputs(shape)
    )
    triton_ops = torch.ops.condnet_triton
    opcheck = torch.library.opcheck
    for weight in (gw, v):  # shared and per-image guide weights
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, gb)]
        opcheck(triton_ops.context_pool.default, tuple(leaves), test_utils=utils)
    leaves = (x.clone().requires_grad_(True), v.clone().requires_grad_(True), 1e-12)
    opcheck(triton_ops.cosine_classify.default, leaves, test_utils=utils)
    fused_args = (x, gw, gb, gw, wi, wo, bo, 15.0, 1e-12)
    opcheck(triton_ops.context_aware_classifier.default, fused_args, test_utils=utils)
    y, g, centres, mass, classifier, x_norm = triton_ops.context_aware_classifier(*fused_args)
    dy, ds, dc, dm = torch.randn_like(y), torch.randn_like(g), torch.randn_like(centres), None
    for ups, mask in (((ds, dc, dm), [True] * 3), ((None, None, mass), [True, False, True])):
        args = (*ups, x, gw, g, centres, mass, mask, dy, classifier, y, x_norm, 1e-12)
        opcheck(triton_ops.context_pool_backward.default, args, test_utils=utils)
    args = (dy, x, classifier, y, x_norm, 1e-12, [True, True])
    opcheck(triton_ops.cosine_classify_backward.default, args, test_utils=utils)
    saved = (x, gw, g, centres, mass, gw, wi, wo, bo, y, classifier, x_norm, 15.0, 1e-12)
    op = triton_ops.context_aware_classifier_backward.default
    opcheck(op, (dy, ds, *saved, [True] * 7), test_utils=utils)
    opcheck(op, (None, ds, *saved, [True, False, True, True, False, True, True]), test_utils=utils)


@needs_interpreter
def test_compile_fullgraph_traces_the_fused_triton_op(monkeypatch):
    """Dynamo traces through the backend choice into the fused Triton op and
    its backward without a graph break (the interpreter's kernels run
    eagerly inside the graph)."""
    torch._dynamo.reset()
    monkeypatch.setattr(triton_kernels, "_REASONS", {})  # Dynamo takes the probe as a constant
    x, gw, gb, generator, _ = _inputs((2, 8, 5, 6, 7), dtype=torch.float32)
    params = tuple(t.clone().requires_grad_(True) for t in (x, gw, gb, *generator))
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    def loss(*args):
        with ops.use_backend("triton"):
            y, s = ops.context_aware_classifier(*args)
        return (y * y).sum() + (s * s).sum()

    got = torch.compile(loss, backend=record, fullgraph=True)(*params)
    got_grads = torch.autograd.grad(got, params)
    want = loss(*params)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grads, torch.autograd.grad(want, params))
    assert any("condnet_triton.context_aware_classifier" in s for s in seen), seen


def _flop_count(fn, inputs, needs):
    from torch.utils.flop_counter import FlopCounterMode

    leaves = [t.clone().requires_grad_(need) for t, need in zip(inputs, needs, strict=True)]
    with FlopCounterMode(display=False) as counter:
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        if any(needs):
            sum((o * o).sum() for o in outs if o.requires_grad).backward()
    return counter.get_total_flops()


@needs_interpreter
@pytest.mark.parametrize(
    "needs",
    [(1, 1, 1, 1, 1, 1), (0, 1, 1, 1, 1, 1), (1, 0, 0, 0, 0, 0), (0, 0, 0, 1, 0, 0)]
    + [(0, 0, 0, 0, 1, 1), (0, 1, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)],
)
def test_flop_formulas_count_like_the_reference(needs):
    """condnet.ops.flops' formulas for the six ops give the reference path's
    count (aten's products under autograd) for each set of gradients asked for."""
    needs = tuple(bool(n) for n in needs)
    x, gw, gb, generator, v = _inputs((2, 8, 5, 4, 6), dtype=torch.float32)
    mask = torch.full((2, 8), 1.25)
    cases = [
        (ops.context_pool, (x, gw, gb), needs[:3]),
        (ops.context_pool, (x, v, gb), needs[:3]),  # per-image guide weight
        (ops.cosine_classify, (x, v), needs[:2]),
    ]
    for channel_mask in (None, mask):
        fused = functools.partial(ops.context_aware_classifier, channel_mask=channel_mask)
        cases.append((fused, (x, gw, gb, *generator), needs))
    for op, inputs, need in cases:
        want = _flop_count(functools.partial(op, backend="reference"), inputs, need)
        assert _flop_count(functools.partial(op, backend="triton"), inputs, need) == want > 0
