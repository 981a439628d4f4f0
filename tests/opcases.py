"""Shared inputs, tolerances, markers and helpers for the op tests."""

import os
from dataclasses import dataclass

import pytest
import torch

import condnet.ops  # noqa: F401  (registers every backend)
from condnet.ops import extension, registry
from condnet.ops import triton as triton_kernels


@dataclass(frozen=True)
class Tolerance:
    """How close a kernel's result must be, for one dtype.

    ``rtol`` with ``atol`` (:attr:`absolute`) compares a kernel with the
    reference run at the same dtype, or with a float64 truth where the values
    are of order one. ``frac`` is an atol as a fraction of the largest
    |truth| of the tensor, for comparisons with float64 math on the
    dtype-rounded inputs whatever the scale (the emulated CUDA kernels and the
    GPU tests), so entries where many terms cancel to near zero do not fail a
    purely relative test. float64 checks the math (only the summation order
    differs); the 16-bit ones allow about two roundings of the dtype.
    """

    rtol: float
    atol: float
    frac: float

    @property
    def absolute(self) -> dict:
        return {"rtol": self.rtol, "atol": self.atol}


# The one tolerance table of the op tests.
TOLERANCES = {
    torch.float64: Tolerance(rtol=1e-10, atol=1e-10, frac=1e-12),
    torch.float32: Tolerance(rtol=2e-4, atol=1e-4, frac=2e-5),
    torch.bfloat16: Tolerance(rtol=2e-2, atol=3e-2, frac=1e-2),
    torch.float16: Tolerance(rtol=4e-3, atol=4e-3, frac=2e-3),
}


def _extension_missing_reason():
    if extension.LOAD_ERROR is None:
        return None
    if os.environ.get("CI"):
        # In CI a missing extension is a failure, never a silent skip.
        raise RuntimeError(f"condnet._C must be built in CI: {extension.LOAD_ERROR}")
    return f"condnet._C not built ({extension.LOAD_ERROR})"


_reason = _extension_missing_reason()
needs_extension = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def _interpreter_missing_reason():
    reason = triton_kernels.unavailable_reason("cpu")
    if reason is not None and os.environ.get("CI") and not torch.cuda.is_available():
        # In CI the interpreter tests must run, never be skipped silently.
        raise RuntimeError(f"the Triton interpreter tests must run in CI: {reason}")
    return reason


_triton_reason = _interpreter_missing_reason()
needs_interpreter = pytest.mark.skipif(_triton_reason is not None, reason=_triton_reason or "")

# The kernel backends the op tests run, on CPU tensors: every registered backend
# but the reference (the truth they are compared with). Today the C++ CPU
# kernels and the Triton kernels in Triton's interpreter; a new backend joins
# the suites by registering itself and naming its skip rule here (a backend
# without one fails collection, so none is left out silently).
_SKIP_RULES = {"extension": needs_extension, "triton": needs_interpreter}
KERNEL_BACKEND_NAMES = [n for n in registry.names() if n not in (registry.AUTO, "reference")]
BACKEND_MARKS = {name: _SKIP_RULES[name] for name in KERNEL_BACKEND_NAMES}
KERNEL_BACKENDS = [pytest.param(name, marks=mark) for name, mark in BACKEND_MARKS.items()]


def grads(fn, inputs, upstream):
    """Outputs of ``fn(*inputs)`` and the inputs' gradients for the given
    upstream gradients (None: that output gets none). Inputs are cloned into
    fresh leaves; None inputs stay None."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    pairs = [(o, u) for o, u in zip(outs, upstream, strict=True) if u is not None]
    torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return list(outs), [t.grad if t is not None else None for t in leaves]


def assert_close_all(got, want, dtype, names):
    """Pairwise assert_close at ``dtype``'s absolute tolerance, naming the failing pair."""
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(
            a, b, **TOLERANCES[dtype].absolute, msg=lambda m, n=name: f"{n}: {m}"
        )


def assert_close_to_truth(name, got, truth, dtype, rtol=None, frac=None):
    """``got`` (of ``dtype``) against a float64 ``truth``: ``dtype``'s rtol,
    and an atol of ``frac`` times the largest |truth|."""
    tol = TOLERANCES[dtype]
    rtol, frac = rtol or tol.rtol, frac or tol.frac
    assert got is not None, f"{name}: missing"
    assert got.dtype == dtype, (name, got.dtype, dtype)
    assert got.shape == truth.shape, (name, got.shape, truth.shape)
    atol = frac * truth.abs().max().item() if truth.numel() else 0.0
    torch.testing.assert_close(
        got.double(), truth.double(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}"
    )


def upstream_grads(shape, dtype, which, seed=3):
    """Upstream gradients (dg, df) of class_pool for ``shape`` (B, C, K, H, W):
    both, or one of them with the other None ("feats_only", "logits_only")."""
    B, C, K, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    dg = torch.randn(B, K, H, W, generator=gen, dtype=torch.float64).to(dtype)
    df = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(dtype)
    return {"both": (dg, df), "feats_only": (None, df), "logits_only": (dg, None)}[which]


def run_everything(backend, inputs):
    """Every output and gradient of class_pool and dynamic_classify on
    ``backend`` for one set of leaf inputs (x, Wg, bg, w, beta)."""
    from condnet import ops

    for t in inputs:
        t.grad = None
    x, gw, gb, w, b = inputs
    g, f = ops.class_pool(x, gw, gb, backend=backend)
    y = ops.dynamic_classify(x, w, b, backend=backend)
    (g.sum() + (f * f).sum() + (y * y).sum()).backward()
    return [g, f, y] + [t.grad.clone() for t in inputs]


def make_inputs(B, C, K, H, W, dtype=torch.float64, bias=True, seed=0, requires_grad=False):
    """Random class_pool and dynamic_classify inputs: x, Wg, bg, w, beta.

    Guide weights are scaled so that the softmax is neither flat nor one-hot.
    """
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        t = (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
        return t.requires_grad_(requires_grad)

    x = rnd(B, C, H, W)
    gw = rnd(K, C, scale=C**-0.5 * 2)
    gb = rnd(K) if bias else None
    w = rnd(B, K, C, scale=C**-0.5)
    b = rnd(B, K) if bias else None
    return x, gw, gb, w, b


def assert_subset_gradients(backend: str, needs: tuple[bool, bool, bool]) -> None:
    """Both ops on ``backend`` give exactly the gradients asked for (the
    others stay None), equal to the reference's, in float64."""
    from condnet import ops
    from condnet.ops import reference

    x, gw, gb, w, b = make_inputs(2, 7, 5, 6, 9)
    for op, ref, args in (
        (ops.class_pool, reference.class_pool, (x, gw, gb)),
        (ops.dynamic_classify, reference.dynamic_classify, (x, w, b)),
    ):
        grads = []
        for fn in (lambda *a, op=op: op(*a, backend=backend), ref):
            leaves = [t.clone().requires_grad_(n) for t, n in zip(args, needs, strict=True)]
            out = fn(*leaves)
            out = out if isinstance(out, tuple) else (out,)
            sum(o.square().sum() for o in out).backward()
            grads.append([t.grad for t in leaves])
        for got, want, need in zip(*grads, needs, strict=True):
            assert (got is None) == (not need)
            if need:
                torch.testing.assert_close(got, want, **TOLERANCES[torch.float64].absolute)
