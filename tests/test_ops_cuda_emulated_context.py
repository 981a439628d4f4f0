"""CAC's CUDA kernels of csrc/cuda (context_pool, cosine_classify and their
backwards), run on the CPU: the same sources compiled against the host
emulation of the CUDA features they use (csrc/cuda/emulate/host_shim.h; see
tests/test_ops_cuda_emulated.py, which does the same for CondNet's ops). The
real launch code runs too (tile counts, pixel splits, the sums of the
partials), so every output and gradient is checked against float64 math on
the dtype-rounded inputs in float64, float32, bfloat16 and float16, at shapes
that cover several class, channel and pixel tiles, ragged tails and
multi-split reductions, with a guide weight shared by the images and one per
image.

What only a GPU can show (timing, the memory model, fragment layouts, the
compiled code itself) is not tested here.
"""

import pytest
import torch

from condnet.ops import context_composite, reference
from condnet.ops.cac import DEFAULT_EPS
from tests.emulated_cuda import SHAPES, build_harness
from tests.emulated_cuda import close as _close
from tests.opcases import TOLERANCES

pytestmark = pytest.mark.slow

DTYPES = list(TOLERANCES)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    return build_harness(tmp_path_factory, "condnet_cuda_emulation_context", "context_harness.cpp")


def _inputs(shape, dtype, per_image=False, seed=0):
    """x, the guide weight ((K, C), or (B, K, C) with Dropout2d-like channel
    multipliers folded in), its bias, cosine classifiers v (B, K, C) scaled
    and normalised as CAC's generator makes them, and upstream gradients for
    every output, rounded to dtype (the kernels' view); then the float64
    copies the truth is computed from."""
    B, C, K, H, W = shape
    gen = torch.Generator().manual_seed(seed)

    def rnd(*size, scale=1.0):
        return torch.randn(*size, generator=gen, dtype=torch.float64) * scale

    x = rnd(B, C, H, W)
    gw = rnd(K, C, scale=2 * C**-0.5)
    if per_image:
        keep = torch.rand(B, 1, C, generator=gen, dtype=torch.float64) > 0.2
        gw = gw * keep / 0.8
    gb = rnd(K)
    w = rnd(B, K, C)
    v = 15 * w / w.norm(dim=-1, keepdim=True)
    upstream = dict(
        dg=rnd(B, K, H, W), dc=rnd(B, K, C), dm=rnd(B, K), dy=rnd(B, K, H, W, scale=0.1)
    )
    low = {name: t.to(dtype) for name, t in dict(x=x, gw=gw, gb=gb, v=v, **upstream).items()}
    return low, {name: t.double() for name, t in low.items()}


def _pool_truth(d, upstream, bias=True):
    """Outputs of reference.context_pool and the gradients of (x, gw, gb)
    for the named upstream gradients (a subset of dg, dc, dm)."""
    leaves = [d[n].clone().requires_grad_() for n in ("x", "gw", "gb")]
    outs = reference.context_pool(*leaves[:2], leaves[2] if bias else None)
    pairs = [(o, d[u]) for o, u in zip(outs, ("dg", "dc", "dm"), strict=True) if u in upstream]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
    return [o.detach() for o in outs], grads


def _cosine_truth(d, eps):
    """Logits, |x| and the gradients of (x, v) for upstream dy, in float64."""
    x, v = (d[n].clone().requires_grad_() for n in ("x", "v"))
    y = reference.cosine_logits(x, v, eps)
    y.backward(d["dy"])
    return y.detach(), d["x"].norm(dim=1), x.grad, v.grad


@pytest.mark.parametrize("per_image", [False, True], ids=["shared", "per_image"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_context_pool_matches_reference(emu, shape, dtype, per_image):
    low, d = _inputs(shape, dtype, per_image)
    truth, _ = _pool_truth(d, ())
    for name, got, want in zip(
        ("guide_logits", "centres", "mass"),
        emu.context_pool(low["x"], low["gw"], low["gb"]),
        truth,
        strict=True,
    ):
        _close(name, got, want, dtype)
    _, centres, mass = emu.context_pool(low["x"], low["gw"], None)
    want = reference.context_pool(d["x"], d["gw"])
    _close("centres without bias", centres, want[1], dtype)
    _close("mass without bias", mass, want[2], dtype)


@pytest.mark.parametrize("per_image", [False, True], ids=["shared", "per_image"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [*SHAPES, (1, 150, 2, 5, 7), (2, 130, 5, 9, 9)])
def test_two_pass_forward_matches_one_pass(emu, monkeypatch, shape, dtype, per_image):
    """float16/bfloat16 take the one-pass cluster kernel (the emulated GPU is
    an sm_90; C > 128 makes clusters of 3 blocks, and with K = 2 one block
    owns no classes); CONDNET_CUDA_ONE_PASS=0 selects the two-pass path of
    other GPUs. Both against the truth and each other."""
    low, d = _inputs(shape, dtype, per_image)
    one_pass = emu.context_pool(low["x"], low["gw"], low["gb"])
    monkeypatch.setenv("CONDNET_CUDA_ONE_PASS", "0")
    two_pass = emu.context_pool(low["x"], low["gw"], low["gb"])
    truth, _ = _pool_truth(d, ())
    for name, got, want, t in zip(
        ("guide_logits", "centres", "mass"), two_pass, one_pass, truth, strict=True
    ):
        _close(f"one-pass {name}", want, t, dtype)
        _close(f"two-pass {name}", got, t, dtype)
        _close(f"two-pass {name} against one-pass", got, want.double(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_cosine_classify_matches_reference(emu, shape, dtype):
    eps = DEFAULT_EPS
    low, d = _inputs(shape, dtype)
    y, x_norm = emu.cosine_classify(low["x"], low["v"], eps)
    want_y, want_norm, want_dx, want_dv = _cosine_truth(d, eps)
    _close("logits", y, want_y, dtype)
    norm_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert x_norm.dtype == norm_dtype
    # |x| is a float32 sum of squares of 16-bit values: float32's tolerance.
    _close("x_norm", x_norm, want_norm, norm_dtype)
    dx, dv = emu.cosine_classify_backward(
        low["dy"], low["x"], low["v"], y, x_norm, eps, [True, True]
    )
    _close("dx", dx, want_dx, dtype)
    _close("dweight", dv, want_dv, dtype)


_UPSTREAMS = {  # which of context_pool's outputs get an upstream gradient
    "all": ("dg", "dc", "dm"),
    "logits_only": ("dg",),
    "centres_only": ("dc",),
    "mass_only": ("dm",),
    "centres_and_mass": ("dc", "dm"),
}


def _check_pool_backward(emu, shape, dtype, per_image, names):
    low, d = _inputs(shape, dtype, per_image)
    g, centres, mass = emu.context_pool(low["x"], low["gw"], low["gb"])
    _, truth = _pool_truth(d, names)
    given = [low[n] if n in names else None for n in ("dg", "dc", "dm")]
    got = emu.context_pool_backward(
        *given, low["x"], low["gw"], g, centres, mass, [True, True, True]
    )
    for name, a, t in zip(("dx", "d_guide_weight", "d_guide_bias"), got, truth, strict=True):
        _close(name, a, t, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES)
def test_context_pool_backward_matches_reference(emu, shape, dtype):
    """Every upstream gradient; the guide weight per image on every other shape."""
    _check_pool_backward(emu, shape, dtype, SHAPES.index(shape) % 2 == 1, _UPSTREAMS["all"])


@pytest.mark.parametrize("upstream", [u for u in _UPSTREAMS if u != "all"])
@pytest.mark.parametrize("per_image", [False, True], ids=["shared", "per_image"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
def test_context_pool_backward_of_each_upstream(emu, dtype, per_image, upstream):
    """Some of the outputs without a gradient: the softmax's backward without
    dM (mass only) or without h's mass term, ds = dg alone."""
    _check_pool_backward(emu, (1, 70, 70, 5, 13), dtype, per_image, _UPSTREAMS[upstream])


@pytest.mark.parametrize("upstream", ["all", "logits_only", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_context_pool_backward_adds_the_cosine_dx(emu, dtype, upstream):
    """The whole classifier's backward passes grad_logits, the classifiers,
    the logits and |x| to context_pool's backward, whose dx then includes the
    cosine classifier's term (written once)."""
    shape = (2, 70, 70, 5, 13)  # two class and two channel tiles
    low, d = _inputs(shape, dtype, per_image=True)
    names = {"all": ("dg", "dc", "dm"), "logits_only": ("dg",), "none": ()}[upstream]
    g, centres, mass = emu.context_pool(low["x"], low["gw"], low["gb"])
    y, x_norm = emu.cosine_classify(low["x"], low["v"], DEFAULT_EPS)
    _, truth = _pool_truth(d, names)
    _, _, cosine_dx, _ = _cosine_truth(d, DEFAULT_EPS)
    truth[0] = truth[0] + cosine_dx
    given = [low[n] if n in names else None for n in ("dg", "dc", "dm")]
    got = emu.context_pool_backward(
        *given,
        low["x"],
        low["gw"],
        g,
        centres,
        mass,
        [True, True, True],
        low["dy"],
        low["v"],
        y,
        x_norm,
        DEFAULT_EPS,
    )
    for name, a, t in zip(("dx", "d_guide_weight", "d_guide_bias"), got, truth, strict=True):
        _close(name, a, t, dtype)


@pytest.mark.parametrize("mask", [(True, False, False), (False, True, False), (False, False, True)])
def test_output_mask_computes_only_what_is_asked(emu, mask):
    low, _ = _inputs((2, 40, 7, 7, 9), torch.float64)
    x, gw, gb, v, dy = (low[n] for n in ("x", "gw", "gb", "v", "dy"))
    g, centres, mass = emu.context_pool(x, gw, gb)
    y, x_norm = emu.cosine_classify(x, v, DEFAULT_EPS)
    args = (low["dg"], low["dc"], low["dm"], x, gw, g, centres, mass)
    cosine = (dy, v, y, x_norm, DEFAULT_EPS)
    full = emu.context_pool_backward(*args, [True, True, True], *cosine)
    for got, want, need in zip(
        emu.context_pool_backward(*args, list(mask), *cosine), full, mask, strict=True
    ):
        assert (got is None) == (not need)
        if need:
            assert torch.equal(got, want)
    full = emu.cosine_classify_backward(dy, x, v, y, x_norm, DEFAULT_EPS, [True, True])
    for need_dx in (True, False):
        got = emu.cosine_classify_backward(dy, x, v, y, x_norm, DEFAULT_EPS, [need_dx, not need_dx])
        assert (got[0] is None) == (not need_dx) and (got[1] is None) == need_dx
        kept = got[0] if need_dx else got[1]
        assert torch.equal(kept, full[0] if need_dx else full[1])


def test_zero_pixel_follows_the_epsilon_policy(emu):
    """A zero feature vector: eps > 0 gives zero logits and finite gradients
    (F.normalize's clamp); eps = 0 divides by zero, NaN as in the released code."""
    low, d = _inputs((1, 40, 7, 3, 5), torch.float32)
    x = low["x"].clone()
    x[0, :, 1, 2] = 0
    y, x_norm = emu.cosine_classify(x, low["v"], DEFAULT_EPS)
    assert x_norm[0, 1, 2] == 0 and (y[0, :, 1, 2] == 0).all() and torch.isfinite(y).all()
    dx, dv = emu.cosine_classify_backward(
        low["dy"], x, low["v"], y, x_norm, DEFAULT_EPS, [True, True]
    )
    assert torch.isfinite(dx).all() and torch.isfinite(dv).all()
    xd = x.double().requires_grad_()
    reference.cosine_logits(xd, d["v"], DEFAULT_EPS).backward(d["dy"])
    _close("dx at a zero pixel", dx, xd.grad, torch.float32)
    y0, _ = emu.cosine_classify(x, low["v"], 0.0)
    assert torch.isnan(y0[0, :, 1, 2]).all()
    assert torch.isfinite(y0[0, :, 0]).all()


def test_empty_batch(emu):
    low, _ = _inputs((1, 6, 3, 4, 5), torch.float32)
    x, gw, gb, v = low["x"][:0], low["gw"], low["gb"], low["v"][:0]
    g, centres, mass = emu.context_pool(x, gw, gb)
    assert (g.shape, centres.shape, mass.shape) == ((0, 3, 4, 5), (0, 3, 6), (0, 3))
    dx, dw, db = emu.context_pool_backward(
        g, centres, mass, x, gw, g, centres, mass, [True, True, True]
    )
    assert dx.shape == x.shape and not dw.any() and not db.any()
    y, x_norm = emu.cosine_classify(x, v, DEFAULT_EPS)
    assert (y.shape, x_norm.shape) == ((0, 3, 4, 5), (0, 4, 5))
    dx, dv = emu.cosine_classify_backward(y, x, v, y, x_norm, DEFAULT_EPS, [True, True])
    assert (dx.shape, dv.shape) == (x.shape, v.shape)


def test_large_logits_stay_finite(emu):
    low, d = _inputs((2, 40, 7, 7, 9), torch.float32)
    _, centres, mass = emu.context_pool(low["x"], low["gw"] * 100, low["gb"])
    assert torch.isfinite(centres).all() and torch.isfinite(mass).all()
    want = reference.context_pool(d["x"], d["gw"] * 100, d["gb"])
    _close("centres", centres, want[1], torch.float32)
    _close("mass", mass, want[2], torch.float32)


def test_channels_last_and_bad_inputs(emu):
    low, d = _inputs((2, 40, 7, 7, 9), torch.float32)
    x, gw, gb, v = low["x"], low["gw"], low["gb"], low["v"]
    _, centres, _ = emu.context_pool(x.to(memory_format=torch.channels_last), gw.t().t(), gb)
    _close("centres", centres, reference.context_pool(d["x"], d["gw"], d["gb"])[1], torch.float32)
    y, _ = emu.cosine_classify(x.to(memory_format=torch.channels_last), v, DEFAULT_EPS)
    _close("logits", y, reference.cosine_logits(d["x"], d["v"], DEFAULT_EPS), torch.float32)
    with pytest.raises(ValueError, match="guide_weight must have shape"):
        emu.context_pool(x, gw[:, :3], gb)
    with pytest.raises(ValueError, match="weight must have shape"):
        emu.cosine_classify(x, v[:, :, :3], DEFAULT_EPS)
    with pytest.raises(TypeError, match="weight must have x's dtype"):
        emu.cosine_classify(x, v.double(), DEFAULT_EPS)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        emu.cosine_classify(x, v, -1.0)


# -- the whole classifier: the Python composite over the emulated kernels ------------------


@pytest.mark.parametrize("shape", [(2, 24, 6, 6, 6), (1, 70, 70, 5, 13)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_fused_classifier_through_the_emulated_kernels(emu, shape, dtype):
    """context_composite's forward and backward (what the fused op runs on
    every backend) over the emulated CUDA primitives, against the reference
    classifier under autograd in float64: the logits, the static logits and
    the gradient of every input.

    Not in 16 bits: the generator's ReLU makes the gradient of the centres
    jump where a hidden unit changes sign, and centres rounded to bfloat16
    flip a few (the CPU kernels' centres too: 7-8% off in d centres at the
    second shape), so a float64 truth from the rounded inputs is no yardstick
    for that chain; each primitive is checked in 16 bits above."""
    B, C, K, H, W = shape
    low, d = _inputs(shape, dtype)
    gen = torch.Generator().manual_seed(7)
    hidden = C // 2
    generator = [
        torch.randn(hidden, 2 * C, generator=gen, dtype=torch.float64) * (2 * C) ** -0.5,
        torch.randn(C, hidden, generator=gen, dtype=torch.float64) * hidden**-0.5,
        torch.randn(C, generator=gen, dtype=torch.float64) * 0.1,
    ]
    generator = [t.to(dtype) for t in generator]
    parts = context_composite.ContextParts(
        emu.context_pool,
        emu.cosine_classify,
        emu.context_pool_backward,
        emu.cosine_classify_backward,
    )
    x, gw, gb = low["x"], low["gw"], low["gb"]
    outs = context_composite.forward(parts, x, gw, gb, gw, *generator, 15.0, DEFAULT_EPS)
    logits, guide_logits, centres, mass, classifier, x_norm = outs
    dy = low["dy"] * 10  # of the order of the static logits' gradient
    grads = context_composite.backward(
        parts,
        dy,
        low["dg"],
        x,
        gw,
        guide_logits,
        centres,
        mass,
        gw,
        *generator,
        logits,
        classifier,
        x_norm,
        15.0,
        DEFAULT_EPS,
        [True] * 7,
    )
    leaves = [t.clone().requires_grad_() for t in (d["x"], d["gw"], d["gb"])]
    leaves += [t.double().requires_grad_() for t in generator]
    want_y, want_g = reference.context_aware_classifier(*leaves[:3], leaves[1], *leaves[3:])
    torch.autograd.backward([want_y, want_g], [dy.double(), d["dg"]])
    _close("logits", logits, want_y.detach(), dtype)
    _close("guide_logits", guide_logits, want_g.detach(), dtype)
    # The static classifier is both the guide and the generator's prototypes.
    dx, dwg, dbg, dw, *d_generator = grads
    _close("dx", dx, leaves[0].grad, dtype)
    _close("d_seg_weight", dwg + dw, leaves[1].grad, dtype)
    _close("d_seg_bias", dbg, leaves[2].grad, dtype)
    for name, got, leaf in zip(
        ("d_proj_in", "d_proj_out", "d_proj_out_bias"), d_generator, leaves[3:], strict=True
    ):
        _close(name, got, leaf.grad, dtype)
