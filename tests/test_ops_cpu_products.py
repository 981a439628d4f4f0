"""The C++ CPU kernels' two product paths for 16-bit features (csrc/cpu/products.h):
16-bit GEMMs where the CPU multiplies 16-bit natively (avx512_bf16, amx_bf16), float32
elsewhere or with CONDNET_CPU_PRODUCTS=float32; CONDNET_CPU_PRODUCTS=16bit takes the
16-bit path on any CPU, so these tests reach it everywhere. Both must stay close to a float64
truth, for every output and gradient of class_pool (its dx term of the dynamic
classifier included) and dynamic_classify."""

import pytest
import torch

import condnet.ops as ops
from condnet.ops import reference
from tests.opcases import make_inputs, needs_extension

pytestmark = needs_extension

CAPS = torch._C._cpu._get_cpu_capability()
NATIVE_BF16 = bool(CAPS.get("avx512_bf16") or CAPS.get("amx_bf16"))
PRODUCTS = ["auto", "float32", "16bit"]
BAD_SETTING = "CONDNET_CPU_PRODUCTS must be 'auto', 'float32' or '16bit'"


def _inputs(seed=0):
    """bfloat16 inputs (x, Wg, bg, w, beta; the projection A, a in float32, as
    mixed precision has it) and upstream gradients, for 437 pixels: two tiles,
    a partial last one."""
    B, C, K, H, W = 2, 40, 11, 19, 23
    gen = torch.Generator().manual_seed(seed)
    x, gw, gb, w, b = (t.bfloat16() for t in make_inputs(B, C, K, H, W, seed=seed))
    A = (torch.randn(K, C + 1, C, generator=gen) * C**-0.5).float()
    a = torch.randn(K, C + 1, generator=gen).float()
    ups = [
        torch.randn(shape, generator=gen).bfloat16()
        for shape in ((B, K, H, W), (B, K, C), (B, K, H, W), (B, K, H, W))
    ]
    return [x, gw, gb, w, b], [A, a], ups


def _everything(backend, dtype):
    """Every output and input gradient of class_pool (with the classifier term
    of its backward, through the fused classifier) and dynamic_classify, on the
    bfloat16 inputs cast to ``dtype``."""
    inputs, proj, ups = _inputs()
    leaves = [t.to(dtype).requires_grad_() for t in inputs]
    proj = [t.to(dtype) if dtype == torch.float64 else t for t in proj]
    g, f = ops.class_pool(*leaves[:3], backend=backend)
    y = ops.dynamic_classify(leaves[0], leaves[3], leaves[4], backend=backend)
    logits, _ = ops.conditional_classifier(*leaves[:3], *proj, layout="per_class", backend=backend)
    torch.autograd.backward([g, f, y, logits], [u.to(dtype) for u in ups])
    return [g, f, y, logits] + [t.grad for t in leaves]


@pytest.mark.parametrize("products", PRODUCTS)
def test_bfloat16_is_close_to_float64_truth_on_both_paths(products, monkeypatch):
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", products)
    got = _everything("extension", torch.bfloat16)
    truth = _everything("reference", torch.float64)  # the same inputs, in float64
    names = ["g", "f", "y", "logits", "dx", "dgw", "dgb", "dw", "db"]
    for name, a, want in zip(names, got, truth, strict=True):
        assert a.dtype == torch.bfloat16, name
        scale = want.abs().max().item()
        torch.testing.assert_close(
            a.double(), want, rtol=3e-2, atol=2e-2 * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.skipif(not NATIVE_BF16, reason="the CPU has no bfloat16 products")
def test_the_native_path_is_taken_where_the_cpu_has_it(monkeypatch):
    """The two paths round differently (the native one rounds each 16-bit
    product once, as eager's bf16 matmul does), so their results differ."""
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "auto")
    native = _everything("extension", torch.bfloat16)
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "float32")
    widened = _everything("extension", torch.bfloat16)
    assert any(not torch.equal(a, b) for a, b in zip(native, widened, strict=True))


def test_16bit_forces_the_16bit_path_on_any_cpu(monkeypatch):
    """16bit gives what auto gives where the CPU multiplies bfloat16 natively,
    and differs from float32 (their roundings differ) on every CPU."""
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "16bit")
    forced = _everything("extension", torch.bfloat16)
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "float32")
    widened = _everything("extension", torch.bfloat16)
    assert any(not torch.equal(a, b) for a, b in zip(forced, widened, strict=True))
    if NATIVE_BF16:
        monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "auto")
        for a, b in zip(forced, _everything("extension", torch.bfloat16), strict=True):
            assert torch.equal(a, b)


def test_float32_and_float64_ignore_the_setting(monkeypatch):
    x, gw, gb, w, b = make_inputs(1, 9, 4, 5, 7, dtype=torch.float32)
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "auto")
    want = ops.class_pool(x, gw, gb, backend="extension")
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "float32")
    for got, expected in zip(ops.class_pool(x, gw, gb, backend="extension"), want, strict=True):
        assert torch.equal(got, expected)


def test_a_bad_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("CONDNET_CPU_PRODUCTS", "bf16")
    x, gw, _, _, _ = make_inputs(1, 3, 2, 2, 2, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=BAD_SETTING):
        ops.class_pool(x, gw, backend="extension")
    torch.testing.assert_close(  # the reference does not read it
        ops.class_pool(x, gw, backend="reference")[1], reference.class_pool(x, gw)[1]
    )
