"""CAC's Triton kernels compile for the GPUs they target, on a machine without
one: as test_ops_triton_compile.py does for CondNet's kernels (whose
machinery this reuses), a subprocess run without TRITON_INTERPRET records
every distinct launch of the launchers (both guide-weight forms, every
upstream subset of context_pool's backward, atomic and ordered sums),
compiles it with ``triton.compile`` for sm_90 and sm_80 and assembles the
PTX with Triton's ``ptxas -v``: each must compile, and the 16-bit and
float32 ones must not spill tiles to local memory.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

COMPILE_CASES = [  # compute capability, dtype, (B, C, K, H, W)
    (90, "bfloat16", (2, 512, 150, 16, 16)),
    (90, "float16", (2, 512, 59, 16, 16)),
    (90, "float32", (2, 512, 150, 16, 16)),
    (90, "float64", (2, 40, 19, 8, 8)),
    (80, "bfloat16", (2, 512, 150, 16, 16)),
]
KERNELS = {
    "_pool_fwd_kernel",
    "_pool_bwd_kernel",
    "_classify_fwd_kernel",
    "_classify_dx_kernel",
    "_classify_dw_kernel",
}


@pytest.mark.slow
def test_kernels_compile_for_sm80_and_sm90_without_spills():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=1500
    )
    if done.returncode == 77:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert KERNELS <= {r["kernel"] for r in results}
    spilled = [r for r in results if r["spill_bytes"] > 64 and r["dtype"] != "float64"]
    assert not spilled, spilled


def _record_launches(cases):
    """(kernel, args, kwargs, cap, dtype) of every launch for ``cases``."""
    from condnet.ops.triton import context_pool, context_pool_backward, cosine_classify

    launches = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((self.kernel, args, kwargs))

    for module in (context_pool, context_pool_backward, cosine_classify):
        module.wrap_triton = Recorder
    for cap, dtype_name, (B, C, K, H, W) in cases:
        dtype = getattr(torch, dtype_name)
        x, g = torch.randn(B, C, H, W).to(dtype), torch.randn(B, K, H, W).to(dtype)
        shared, gb = torch.randn(K, C).to(dtype), torch.randn(K).to(dtype)
        v, dc = torch.randn(B, K, C).to(dtype), torch.randn(B, K, C).to(dtype)
        mass = torch.rand(B, K).to(dtype)
        x_norm = torch.rand(B, H, W).to(cosine_classify.norm_dtype(dtype))
        cosine = (g, v, g, x_norm, 1e-12)
        first = len(launches)
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic)
            for gw in (shared, v):
                context_pool.context_pool_forward(x, gw, gb)
                for ups in ((g, dc, mass), (None, dc, None), (g, None, None), (None, None, mass)):
                    context_pool_backward.context_pool_backward(
                        *ups, x, gw, g, v, mass, [True] * 3, *cosine
                    )
        torch.use_deterministic_algorithms(False)
        for mask in ([True, False, False], [False, True, True]):
            context_pool_backward.context_pool_backward(g, dc, None, x, shared, g, v, mass, mask)
        cosine_classify.cosine_classify_forward(x, v, 1e-12)
        cosine_classify.cosine_classify_backward(g, x, v, g, x_norm, 1e-12, [True, True])
        for i in range(first, len(launches)):
            launches[i] = (*launches[i], cap, dtype_name)
    return launches


def _main():
    from tests import test_ops_triton_compile as compile_check

    compile_check._record_launches = _record_launches
    compile_check.CASES = COMPILE_CASES
    return compile_check._main()


if __name__ == "__main__":
    sys.exit(_main())
