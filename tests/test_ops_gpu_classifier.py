"""The projection and the whole fused classifier on the GPU backends (marked
``gpu``, skipped without a GPU; setup in gpu_cases.py): the datasets' training
shapes (gpu_cases.DESIGN_SHAPES) and odd shapes in bfloat16, float32 and
mixed precision (bfloat16 features, float32 parameters under autocast, as
training runs it) against float64 math on the dtype-rounded inputs; the
projection at the ADE weight for 1, 8 and 33 images; the fused backward's
output masks; torch.compile; determinism.
"""

import itertools

import pytest
import torch

from condnet.nn import ConditionalClassifier
from condnet.ops import reference
from tests.gpu_cases import (
    BACKENDS,
    DESIGN_SHAPES,
    DEVICE,
    MID_SHAPE,
    NEEDS_GPU,
    ODD_SHAPES,
    ON_CPU,
    PRECISIONS,
    classifier_inputs,
    classifier_run,
    close,
    compare_classifier,
    gpu_inputs,
    namespace,
    run_ops,
)

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("layout", ["grouped_conv", "per_class"])
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("name", list(DESIGN_SHAPES))
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_design_shapes_match_float64_truth(backend_name, name, precision, layout):
    low, exact = classifier_inputs(DESIGN_SHAPES[name], precision, layout)
    autocast = PRECISIONS[precision][2]
    got = classifier_run(backend_name, low, layout, autocast)
    compare_classifier(got, classifier_run(None, exact, layout), precision)


@pytest.mark.parametrize("shape", ODD_SHAPES[:6], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("precision", ["amp-bfloat16", "float32"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_odd_shapes_match_float64_truth(backend_name, shape, precision):
    low, exact = classifier_inputs(shape, precision, "grouped_conv", seed=sum(shape))
    got = classifier_run(backend_name, low, "grouped_conv", PRECISIONS[precision][2])
    compare_classifier(got, classifier_run(None, exact, "grouped_conv"), precision)


@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("B", [1, 8, 33])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_project_matches_float64_truth(backend_name, B, precision):
    """The projection at C=512, K=150 (the ADE weight, 158 MB in float32) for
    1, 8 and 33 images (33: more than one image group of the CUDA kernels)."""
    dtype, param_dtype, _ = PRECISIONS[precision]
    K, C = (15, 24) if ON_CPU else (150, 512)
    gen = torch.Generator().manual_seed(B)
    f = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    A = (torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5).to(
        DEVICE, param_dtype
    )
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64).to(DEVICE, param_dtype)
    dtheta = torch.randn(B, K, C + 1, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
    ns = namespace(backend_name)
    exact = [t.double().requires_grad_(True) for t in (f, A, a)]
    theta = reference.project(*exact)
    truth = torch.autograd.grad(theta, exact, dtheta.double())
    close("theta", ns.project(f, A, a), theta.detach(), dtype)
    for key, got, want in zip(
        ("df", "dA", "da"), ns.project_backward(dtheta, f, A, [True] * 3), truth, strict=True
    ):
        close(key, got.to(dtype) if got.dtype != dtype else got, want, dtype)


@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=5)), ids=str)
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_classifier_backward_computes_only_the_masked_outputs(backend_name, mask):
    low, _ = classifier_inputs(MID_SHAPE, "float32", "per_class")
    x, gw, gb, A, a, dy, dg = low
    ns = namespace(backend_name)
    y, g, f, theta = ns.conditional_classifier(x, gw, gb, A, a, "per_class")
    saved = (x, gw, g, f, A, theta, "per_class")
    full = ns.conditional_classifier_backward(dy, dg, None, None, *saved, [True] * 5)
    part = ns.conditional_classifier_backward(dy, dg, None, None, *saved, list(mask))
    for i, (need, want, got) in enumerate(zip(mask, full, part, strict=True)):
        assert (got is not None) == need, (i, mask)
        if need:
            close(f"gradient {i}", got, want, torch.float32)


@NEEDS_GPU
@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compile_fullgraph_matches_eager(backend_name, dynamic):
    """torch.compile of the conditional classifier as a model runs it: one
    graph, outputs and gradients equal to eager. For the CUDA kernels the
    generated code calls the condnet ops; for Triton, Inductor launches the
    Triton kernels themselves, not an opaque op."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    C, K = (24, 7) if backend_name == "extension" else (64, 19)
    dtype = torch.float64 if backend_name == "extension" else torch.float32
    clf = ConditionalClassifier(C, K, dropout=0.0).to(DEVICE, dtype)
    clf.backend = backend_name
    x = torch.randn(2, C, 12, 13, device=DEVICE, dtype=dtype, requires_grad=True)

    def step(fn):
        logits, guide = fn(x, return_guide=True)
        loss = (logits * logits).sum() + (guide * guide).sum()
        return loss, torch.autograd.grad(loss, [x, *clf.parameters()])

    (got, got_grads), code = run_and_get_code(
        step, torch.compile(clf, fullgraph=True, dynamic=dynamic)
    )
    want, want_grads = step(clf)
    tol = {"rtol": 1e-9, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-3}
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(got_grads, want_grads, **tol)
    source = "\n".join(code)
    if backend_name == "extension":
        for op in ("conditional_classifier", "conditional_classifier_backward"):
            assert f"condnet.{op}.default" in source, op
    else:
        for kernel in ("_pool_fwd_kernel", "_project_fwd_kernel", "_pool_bwd_kernel"):
            assert kernel in source, kernel


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_bitwise_reproducible(backend_name):
    """The CUDA kernels use no atomics: repeated runs are bitwise identical
    in any mode. The Triton kernels add partial sums with atomics unless
    torch.use_deterministic_algorithms is on; then they are bitwise identical
    too, and close to the atomic results."""
    low, _ = gpu_inputs(DESIGN_SHAPES["ade"], torch.bfloat16)
    clf_inputs, _ = classifier_inputs(DESIGN_SHAPES["ade"], "amp-bfloat16", "grouped_conv")

    def both():
        return {
            **run_ops(backend_name, *low),
            **{
                f"clf_{k}": v
                for k, v in classifier_run(backend_name, clf_inputs, "grouped_conv", True).items()
            },
        }

    default = [both(), both()] if backend_name == "extension" else [both()]
    was = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        deterministic = [both(), both()]
    finally:
        torch.use_deterministic_algorithms(was)
    for key, want in deterministic[0].items():
        assert torch.equal(deterministic[1][key], want), key
        if backend_name == "extension":
            assert torch.equal(default[0][key], want) and torch.equal(default[1][key], want), key
        else:
            close(key, default[0][key], want.double(), want.dtype)
