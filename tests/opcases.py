"""Shared inputs, tolerances and markers for the op tests."""

import os

import pytest
import torch

from condnet.ops import extension

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
