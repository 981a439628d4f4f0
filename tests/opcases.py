"""Shared inputs, tolerances and markers for the op tests."""

import os

import pytest
import torch

from condnet.ops import extension
from condnet.ops import triton as triton_kernels

# Tolerances per dtype for kernel-vs-reference comparisons. float64 checks the
# math (only summation order differs); the low-precision ones are about two
# roundings of the output dtype, compared against a float64 ground truth.
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-4, rtol=2e-4),
    torch.bfloat16: dict(atol=3e-2, rtol=2e-2),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
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

# The kernel backends the op tests run on this machine: the C++ CPU kernels
# and the Triton kernels in Triton's interpreter.
KERNEL_BACKENDS = [
    pytest.param("extension", marks=needs_extension),
    pytest.param("triton", marks=needs_interpreter),
]


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
    """Pairwise assert_close at ``dtype``'s tolerance, naming the failing pair."""
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[dtype], msg=lambda m, n=name: f"{n}: {m}")


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
                torch.testing.assert_close(got, want, **TOLERANCES[torch.float64])
