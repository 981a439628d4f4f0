"""What is particular to the C++ CPU kernels of CAC's ops (context_pool,
cosine_classify, their backwards, and the fused context_aware_classifier over
them): float16/bfloat16 against a float64 truth on both product paths
(csrc/cpu/products.h: CONDNET_CPU_PRODUCTS=auto|float32|16bit), shapes of many
chunks with a partial last tile, OpenMP threads, the released division
(eps=0) and the C++ checks of direct op calls. Every kernel backend's shared
tests are in test_ops_context.py."""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.opcases import needs_extension

pytestmark = needs_extension

CAPS = torch._C._cpu._get_cpu_capability()
NATIVE_BF16 = bool(CAPS.get("avx512_bf16") or CAPS.get("amx_bf16"))
PRODUCTS = ["auto", "float32", "16bit"]
BAD_SETTING = "CONDNET_CPU_PRODUCTS must be 'auto', 'float32' or '16bit'"
HALF = [torch.bfloat16, torch.float16]


def _inputs(B, C, K, H, W, seed=0, per_image=False):
    """x, seg_weight, seg_bias (float64) and the generator's layers (float64),
    scaled so the softmax is neither flat nor one-hot; a Dropout2d-like
    channel mask when ``per_image``."""
    gen = torch.Generator().manual_seed(seed)
    hidden = max(C // 2, 1)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    mask = None
    if per_image:
        mask = (torch.rand(B, C, generator=gen) > 0.2).double() / 0.8
    tensors = [rnd(B, C, H, W), rnd(K, C, scale=2 * C**-0.5), rnd(K)]
    tensors += [rnd(hidden, 2 * C, scale=(2 * C) ** -0.5), rnd(C, hidden, scale=hidden**-0.5)]
    tensors.append(rnd(C))
    return tensors, mask


def _run(backend, inputs, mask, dtype, param_dtype, seed=7):
    """The fused classifier's outputs and every input's gradient, and the
    primitives' outputs (static logits, centres, mass; cosine logits) on the
    same inputs: x and the static classifier in ``dtype``, the generator in
    ``param_dtype``."""
    x, sw, sb, wi, wo, bo = inputs
    leaves = [t.to(dtype).requires_grad_() for t in (x, sw, sb)]
    leaves += [t.to(param_dtype).requires_grad_() for t in (wi, wo, bo)]
    m = mask.to(dtype) if mask is not None else None
    logits, static = ops.context_aware_classifier(*leaves, channel_mask=m, backend=backend)
    gen = torch.Generator().manual_seed(seed)
    ups = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype) for t in (logits,)]
    ups.append(torch.randn(static.shape, generator=gen, dtype=torch.float64).to(dtype))
    torch.autograd.backward([logits, static], ups)
    with torch.no_grad():
        g, centres, mass = ops.context_pool(leaves[0], leaves[1], leaves[2], backend=backend)
        cos = ops.cosine_classify(leaves[0], centres, scale=15.0, backend=backend)
    return [logits, static, g, centres, mass, cos] + [t.grad for t in leaves]


NAMES = ["logits", "static", "g", "centres", "mass", "cosine"]
NAMES += ["dx", "dseg_w", "dseg_b", "dproj_in", "dproj_out", "dproj_bias"]


def _assert_near_truth(got, truth, dtype, rtol, frac):
    for name, a, want in zip(NAMES, got, truth, strict=True):
        assert a.dtype in (dtype, torch.float32), name
        scale = want.abs().max().item()
        torch.testing.assert_close(
            a.double(), want, rtol=rtol, atol=frac * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("dtype", HALF)
def test_16bit_is_close_to_float64_truth_on_both_paths(products, dtype, monkeypatch):
    """float32 master weights for the generator, as mixed precision has them;
    1147 pixels: two chunks, of 768 and 379 pixels, so both the float32
    products' 256-pixel tiles and the 16-bit products' 512-pixel ones end in a
    partial tile."""
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", products)
    inputs, mask = _inputs(2, 40, 11, 31, 37, per_image=True)
    rounded = [t.to(dtype).double() for t in inputs[:3]] + inputs[3:]
    got = _run("extension", inputs, mask, dtype, torch.float32)
    truth = _run("reference", rounded, mask.to(dtype).double(), torch.float64, torch.float64)
    # Measured: at most 5.4e-3 (bfloat16) and 5.5e-4 (float16) of each result's
    # largest entry, on either path.
    rtol, frac = (2e-2, 1.5e-2) if dtype == torch.bfloat16 else (4e-3, 2e-3)
    _assert_near_truth(got, truth, dtype, rtol=rtol, frac=frac)
    for name, a in zip(NAMES[:6], got[:6], strict=True):
        assert a.dtype == dtype, name


@pytest.mark.skipif(not NATIVE_BF16, reason="the CPU has no bfloat16 products")
def test_the_native_path_is_taken_where_the_cpu_has_it(monkeypatch):
    """The two paths round differently (the native one rounds each 16-bit
    product once, as eager's bf16 matmul does), so their results differ."""
    inputs, mask = _inputs(2, 24, 7, 9, 11)
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "auto")
    native = _run("extension", inputs, mask, torch.bfloat16, torch.float32)
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "float32")
    widened = _run("extension", inputs, mask, torch.bfloat16, torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(native, widened, strict=True))


@pytest.mark.parametrize("per_image", [False, True])
def test_many_chunks_and_a_partial_tile_match_the_float64_truth(per_image):
    """5250 pixels: six chunks of four tiles, the last chunk 130 pixels; float32
    sums over thousands of pixels, so the bound scales with each result's size."""
    inputs, mask = _inputs(2, 48, 21, 70, 75, seed=3, per_image=per_image)
    got = _run("extension", inputs, mask, torch.float32, torch.float32)
    truth = _run("reference", inputs, mask, torch.float64, torch.float64)
    _assert_near_truth(got, truth, torch.float32, rtol=1e-3, frac=2e-5)


def test_float64_matches_the_reference_to_rounding():
    inputs, mask = _inputs(2, 20, 6, 33, 35, seed=4, per_image=True)
    got = _run("extension", inputs, mask, torch.float64, torch.float64)
    truth = _run("reference", inputs, mask, torch.float64, torch.float64)
    _assert_near_truth(got, truth, torch.float64, rtol=1e-10, frac=1e-12)


def test_thread_count_changes_only_rounding_and_runs_repeat_bitwise():
    inputs, mask = _inputs(3, 32, 10, 40, 41, seed=5, per_image=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _run("extension", inputs, mask, torch.float32, torch.float32)
        torch.set_num_threads(2)
        first = _run("extension", inputs, mask, torch.float32, torch.float32)
        again = _run("extension", inputs, mask, torch.float32, torch.float32)
    finally:
        torch.set_num_threads(threads)
    for name, a, b, c in zip(NAMES, single, first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
        assert torch.equal(b, c), name


def test_worker_threads_see_the_callers_inference_mode():
    # Several work items per call, so OpenMP workers run some of them; their
    # ATen calls must not be recorded by autograd or reach ADInplaceOrView.
    inputs, _ = _inputs(2, 16, 6, 40, 41, seed=6)
    x, sw, sb, wi, wo, bo = (t.float() for t in inputs)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        want = ops.context_aware_classifier(x, sw, sb, wi, wo, bo, backend="reference")
        with torch.inference_mode():
            got = ops.context_aware_classifier(x, sw, sb, wi, wo, bo, backend="extension")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=1e-4)


def _cosine_inputs(eps_pixel_zero=True):
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 6, 3, 5, generator=gen, dtype=torch.float64)
    if eps_pixel_zero:
        x[1, :, 2, 3] = 0
    v = torch.nn.functional.normalize(
        torch.randn(2, 4, 6, generator=gen, dtype=torch.float64), dim=-1
    )
    return x, v


def test_the_released_division_gives_nan_at_a_zero_pixel_only():
    """eps=0 reproduces the released x / |x|: NaN where |x| = 0, as the
    specification gives; elsewhere the same logits as eps=1e-12."""
    x, v = _cosine_inputs()
    logits, x_norm = torch.ops.condnet.cosine_classify(x, v, 0.0)
    assert x_norm[1, 2, 3] == 0
    assert torch.isnan(logits[1, :, 2, 3]).all()
    want = reference.cosine_logits(x, v, 0.0)
    assert torch.isnan(want[1, :, 2, 3]).all()
    finite = ~torch.isnan(want)
    torch.testing.assert_close(logits[finite], want[finite], rtol=1e-10, atol=1e-10)
    clamped, _ = torch.ops.condnet.cosine_classify(x, v, 1e-12)
    assert (clamped[1, :, 2, 3] == 0).all()
    torch.testing.assert_close(clamped[finite], want[finite], rtol=1e-10, atol=1e-10)


def _pool_backward_cases(x, gw, gb, mass_scale=1.0):
    """context_pool_backward with each combination of the centres' and the
    masses' gradients (given in the outputs' dtype), and autograd of the
    specification in float64 on the same inputs: yields (which gradients
    flow, got, want)."""
    g, centres, mass = torch.ops.condnet.context_pool(x, gw, gb)
    gen = torch.Generator().manual_seed(10)
    dc = torch.randn(centres.shape, generator=gen, dtype=torch.float64)
    dm = torch.randn(mass.shape, generator=gen, dtype=torch.float64) * mass_scale
    for grads in ((None, None, dm), (None, dc, dm), (None, dc, None)):
        leaves = [t.detach().double().clone().requires_grad_() for t in (x, gw, gb)]
        outs = reference.context_pool(*leaves)
        pairs = [(o, d) for o, d in zip(outs, grads, strict=True) if d is not None]
        want = torch.autograd.grad([o for o, _ in pairs], leaves, [d for _, d in pairs])
        outputs = (g, centres, mass)
        given = [d if d is None else d.to(o.dtype) for d, o in zip(grads, outputs, strict=True)]
        got = torch.ops.condnet.context_pool_backward(
            *given, x, gw, g, centres, mass, [True, True, True]
        )
        yield [d is not None for d in grads], got, want


def test_the_mass_gradient_alone_and_with_the_centres():
    """context_pool_backward's grad_mass (not reached through the fused op)
    against autograd of the specification."""
    inputs, _ = _inputs(2, 10, 5, 6, 7, seed=9)
    for _, got, want in _pool_backward_cases(*inputs[:3]):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", HALF)
def test_the_16bit_mass_gradient_alone_and_with_the_centres(dtype, monkeypatch):
    """The 16-bit path's fused softmax backward (csrc/cpu/softmax_tile.h) with
    each combination of the centres' and the masses' gradients, against
    autograd of the specification in float64 on the same rounded inputs; 1147
    pixels, so a partial last tile."""
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "16bit")
    inputs, _ = _inputs(2, 24, 9, 31, 37, seed=9)
    x, gw, gb = (t.to(dtype) for t in inputs[:3])
    # Measured: at most 1.3e-2 (bfloat16) and 1.7e-3 (float16) of each
    # gradient's largest entry (9.1e-3 and 9.0e-4 with float32 products).
    frac = 3e-2 if dtype == torch.bfloat16 else 4e-3
    for flowing, got, want in _pool_backward_cases(x, gw, gb, mass_scale=0.01):
        for name, a, b in zip(("dx", "dw", "db"), got, want, strict=True):
            torch.testing.assert_close(
                a.double(),
                b,
                rtol=0,
                atol=frac * b.abs().max().item(),
                msg=lambda m, n=name, f=flowing: f"{n}, (grad_centres, grad_mass) {f[1:]}: {m}",
            )


@pytest.mark.parametrize("dtype", HALF)
def test_the_fused_softmax_is_exact_to_the_outputs_rounding(dtype, monkeypatch):
    """Without a guide bias the stored 16-bit logits g are the logits the
    16-bit path's softmax ran on, so the masses (sum_n p) and the guide
    bias's gradient (sum_n ds, ds = p (dm - sum_k p dm)) can be checked
    against float64 from g alone: each within half a unit in the last place
    of its 16-bit result (plus float32 noise). An error of the fused loops'
    own exp (softmax_tile.h) above ~2e-4 would show in float16, far below the
    tolerances of the tests against the float64 truth."""
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "16bit")
    inputs, _ = _inputs(4, 24, 40, 31, 37, seed=12)
    x, gw = inputs[0].to(dtype), (inputs[1] * 4).to(dtype)  # logits spread over ~40
    half_ulp = torch.finfo(dtype).eps / 2
    g, centres, mass = torch.ops.condnet.context_pool(x, gw, None)
    p = torch.softmax(g.double().flatten(2), dim=1)  # (B, K, N)
    torch.testing.assert_close(mass.double(), p.sum(-1), rtol=half_ulp + 1e-5, atol=1e-6)
    dm = torch.randn(mass.shape, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    _, _, db = torch.ops.condnet.context_pool_backward(
        None, None, dm.to(dtype), x, gw, g, centres, mass, [False, False, True]
    )
    dm = dm.to(dtype).double().unsqueeze(-1)
    want = (p * (dm - (p * dm).sum(1, keepdim=True))).sum((0, 2))
    torch.testing.assert_close(db.double(), want, rtol=half_ulp + 1e-5, atol=1e-5)


@pytest.mark.parametrize("products", ["16bit", "float32"])
def test_nan_in_the_guide_logits_stays_nan(products, monkeypatch):
    """A NaN pixel of x makes its guide logits NaN: the pooling over it is NaN
    everywhere, as the specification's is, on either product path (the fused
    softmax's exp keeps NaN, whatever its sign bit)."""
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", products)
    inputs, _ = _inputs(1, 16, 5, 8, 9, seed=11)
    x, gw, gb = (t.bfloat16() for t in inputs[:3])
    for value in (float("nan"), -float("nan")):
        x_bad = x.clone()
        x_bad[0, :, 3, 4] = value
        g, centres, mass = torch.ops.condnet.context_pool(x_bad, gw, gb)
        want = reference.context_pool(x_bad.double(), gw.double(), gb.double())
        for name, a, b in zip(("g", "centres", "mass"), (g, centres, mass), want, strict=True):
            assert torch.equal(a.isnan(), b.isnan()), name
        assert centres.isnan().all() and mass.isnan().all()


def test_direct_calls_are_checked_in_cpp():
    x, v = _cosine_inputs(eps_pixel_zero=False)
    logits, x_norm = torch.ops.condnet.cosine_classify(x, v, 1e-12)
    with pytest.raises(ValueError, match=r"weight must have shape \(2, K, 6\)"):
        torch.ops.condnet.cosine_classify(x, v[0], 1e-12)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        torch.ops.condnet.cosine_classify(x, v, -1.0)
    with pytest.raises(TypeError, match="x_norm must have dtype"):
        torch.ops.condnet.cosine_classify_backward(
            logits, x, v, logits, x_norm.float(), 1e-12, [True, True]
        )
    gw = torch.randn(4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"guide_weight must have shape \(K, 6\) or \(2, K, 6\)"):
        torch.ops.condnet.context_pool(x, gw.t(), None)
    g, centres, mass = torch.ops.condnet.context_pool(x, gw, None)
    with pytest.raises(ValueError, match="must be given together"):
        torch.ops.condnet.context_pool_backward(
            g, None, None, x, gw, g, centres, mass, [True, True, True], logits, v
        )


def test_a_bad_products_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "bf16")
    x, v = _cosine_inputs(eps_pixel_zero=False)
    x, v = x.bfloat16(), v.bfloat16()
    with pytest.raises(ValueError, match=BAD_SETTING):
        torch.ops.condnet.cosine_classify(x, v, 1e-12)
    with pytest.raises(ValueError, match=BAD_SETTING):
        torch.ops.condnet.context_pool(x, v[0], None)
