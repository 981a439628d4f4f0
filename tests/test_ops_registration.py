"""The dispatcher contract: opcheck on every op, torch.compile without graph
breaks, backend selection and build_info."""

import pytest
import torch

import condnet.ops as ops
import condnet.ops.triton
from condnet.ops import extension, reference
from condnet.ops import registry as backend
from tests.opcases import make_inputs, needs_extension

OPCHECK_SHAPES = [(2, 6, 4, 5, 7), (1, 3, 1, 1, 3)]


@needs_extension
@pytest.mark.parametrize("shape", OPCHECK_SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_forward_ops(shape, bias, channels_last):
    x, gw, gb, w, b = make_inputs(*shape, dtype=torch.float32, bias=bias)
    if channels_last:  # fake and real kernels must agree on output strides here too
        x = x.to(memory_format=torch.channels_last)
    for t in (x, gw, gb, w, b):
        if t is not None:
            t.requires_grad_(True)
    torch.library.opcheck(torch.ops.condnet.class_pool.default, (x, gw, gb))
    torch.library.opcheck(torch.ops.condnet.dynamic_classify.default, (x, w, b))


@needs_extension
@pytest.mark.parametrize("shape", OPCHECK_SHAPES)
def test_opcheck_backward_ops(shape):
    B, C, K, H, W = shape
    x, gw, _, w, _ = make_inputs(*shape, dtype=torch.float32)
    g, _ = torch.ops.condnet.class_pool(x, gw, None)
    dg, df = torch.randn(B, K, H, W), torch.randn(B, K, C)
    masks = ([True, True, True], [True, False, True], [False, True, False])
    for grads, mask in zip(((dg, df), (None, df), (dg, None)), masks, strict=True):
        torch.library.opcheck(
            torch.ops.condnet.class_pool_backward.default, (*grads, x, gw, g, mask)
        )
    for mask in masks:
        torch.library.opcheck(torch.ops.condnet.dynamic_classify_backward.default, (dg, x, w, mask))


def classifier(x, gw, gb, pw, pb, backend_name):
    """The whole conditional classifier, as a model would run it."""
    g, f = ops.class_pool(x, gw, gb, backend=backend_name)
    w, beta = ops.project_grouped_conv(f, pw, pb)
    return g, ops.dynamic_classify(x, w, beta, backend=backend_name)


@needs_extension
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_matches_eager(dynamic):
    torch._dynamo.reset()
    B, C, K, H, W = 2, 8, 5, 6, 7
    x, gw, gb, _, _ = make_inputs(B, C, K, H, W, dtype=torch.float32, requires_grad=True)
    pw = torch.randn(C * K + K, C, 1, 1, requires_grad=True)
    pb = torch.randn(C * K + K, requires_grad=True)
    params = (x, gw, gb, pw, pb)

    def loss(*args):
        g, y = classifier(*args, "extension")
        return (g * g).sum() + (y * y).sum()

    # Forward traced whole (fullgraph); AOTAutograd traces the backward, which
    # runs the registered backward ops.
    compiled = torch.compile(loss, fullgraph=True, dynamic=dynamic)
    got = compiled(*params)
    got_grads = torch.autograd.grad(got, params)
    want = loss(*params)
    want_grads = torch.autograd.grad(want, params)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grads, want_grads, atol=1e-5, rtol=1e-5)


@needs_extension
def test_compiled_graph_calls_the_extension_ops():
    torch._dynamo.reset()
    x, gw, gb, w, b = make_inputs(1, 4, 3, 4, 4, dtype=torch.float32)
    seen = []

    def backend_fn(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    fn = torch.compile(
        lambda *a: ops.dynamic_classify(a[0], a[3], a[4], backend="extension"),
        backend=backend_fn,
        fullgraph=True,
    )
    fn(x, gw, gb, w, b)
    assert any("condnet.dynamic_classify" in s for s in seen), seen


def _pretend_kernels(monkeypatch, cpu: bool):
    kernels = {op: frozenset({"cpu"} if cpu else ()) for op in extension.OPS}
    monkeypatch.setattr(extension, "KERNELS", kernels)


def test_backend_precedence(monkeypatch):
    _pretend_kernels(monkeypatch, cpu=True)
    assert backend.resolve("class_pool", "cpu") == "extension"  # auto
    monkeypatch.setenv("CONDNET_BACKEND", "reference")
    assert backend.resolve("class_pool", "cpu") == "reference"
    with ops.use_backend("extension"):
        assert backend.resolve("class_pool", "cpu") == "extension"
        with ops.use_backend("reference"):
            assert backend.resolve("class_pool", "cpu") == "reference"
            assert backend.resolve("class_pool", "cpu", "extension") == "extension"
        assert backend.resolve("class_pool", "cpu") == "extension"
    assert backend.resolve("class_pool", "cpu") == "reference"


def test_auto_falls_back_to_reference_without_a_kernel(monkeypatch):
    _pretend_kernels(monkeypatch, cpu=False)
    # On a GPU machine "auto" would otherwise pick the Triton kernels.
    monkeypatch.setattr(condnet.ops.triton, "_REASONS", {"cuda": "pretend no triton"})
    assert backend.resolve("class_pool", "cpu") == "reference"
    assert backend.resolve("dynamic_classify", "cuda", "auto") == "reference"
    x, gw, gb, _, _ = make_inputs(1, 3, 2, 2, 2)
    torch.testing.assert_close(ops.class_pool(x, gw, gb), reference.class_pool(x, gw, gb))


def test_extension_without_kernel_says_how_to_build(monkeypatch):
    _pretend_kernels(monkeypatch, cpu=False)
    x, gw, _, _, _ = make_inputs(1, 3, 2, 2, 2)
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation"):
        ops.class_pool(x, gw, backend="extension")
    monkeypatch.setattr(extension, "LOAD_ERROR", "ImportError: no module condnet._C")
    with pytest.raises(RuntimeError, match="did not load.*pip install --no-build-isolation"):
        ops.class_pool(x, gw, backend="extension")


def test_unknown_backend_names_are_rejected(monkeypatch):
    x, gw, _, _, _ = make_inputs(1, 3, 2, 2, 2)
    with pytest.raises(
        ValueError, match="backend must be one of 'auto', 'extension', 'reference', 'triton'"
    ):
        ops.class_pool(x, gw, backend="cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend("fast"):
            pass
    monkeypatch.setenv("CONDNET_BACKEND", "fastest")
    with pytest.raises(ValueError, match="CONDNET_BACKEND must be one of"):
        ops.dynamic_classify(x, torch.zeros(1, 2, 3, dtype=x.dtype))


@needs_extension
def test_build_info_reports_the_build():
    info = ops.build_info()
    assert info["extension"] and info["load_error"] is None
    assert info["cpu"]
    assert info["kernels"]["class_pool"] == info["kernels"]["dynamic_classify"]
    assert "cpu" in info["kernels"]["class_pool"]
    assert torch.__version__.startswith(info["torch_built_against"])
    if info["cuda"]:
        assert info["cuda_version"] and info["cuda_archs"]
        assert all(a.startswith("sm_") for a in info["cuda_archs"])


@needs_extension
def test_autocast_casts_parameters_like_a_conv():
    x, gw, gb, w, b = make_inputs(2, 8, 3, 4, 5, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g, f = ops.class_pool(x, gw, gb, backend="extension")
        y = ops.dynamic_classify(x.bfloat16(), w, b, backend="extension")
    assert g.dtype == f.dtype == y.dtype == torch.bfloat16
    g_ref, _ = reference.class_pool(x.bfloat16(), gw.bfloat16(), gb.bfloat16())
    torch.testing.assert_close(g, g_ref, atol=3e-2, rtol=2e-2)
