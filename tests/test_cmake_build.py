"""CMakeLists.txt builds the ops into a library that libtorch users load with
torch.ops.load_library; the loaded kernels match the reference."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: this one already registered the condnet ops
# from condnet._C, and a namespace can be registered only once per process.
LOAD_AND_CHECK = textwrap.dedent(
    """
    import importlib.util, sys, torch
    spec = importlib.util.spec_from_file_location("ref", sys.argv[2])
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    torch.ops.load_library(sys.argv[1])
    assert torch.ops.condnet.build_info().startswith("torch=")
    torch.manual_seed(0)
    x = torch.randn(2, 7, 5, 3, dtype=torch.float64)
    gw, gb = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    w, b = torch.randn(2, 4, 7, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    for got, want in zip(torch.ops.condnet.class_pool(x, gw, gb), ref.class_pool(x, gw, gb)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(
        torch.ops.condnet.dynamic_classify(x, w, b), ref.dynamic_classify(x, w, b),
        atol=1e-12, rtol=1e-12)
    xr = x.clone().requires_grad_()
    g, f = ref.class_pool(xr, gw, gb)
    df = torch.randn_like(f)
    f.backward(df)
    dx, _, _ = torch.ops.condnet.class_pool_backward(None, df, x, gw, g.detach(), [True] * 3)
    torch.testing.assert_close(dx, xr.grad, atol=1e-12, rtol=1e-12)
    print("ok")
    """
)


@pytest.mark.slow
def test_cmake_library_builds_and_loads(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None:
        if os.environ.get("CI"):
            pytest.fail("cmake is required in CI (pip install cmake)")
        pytest.skip("cmake not installed")
    build = tmp_path / "build"
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    for cmd in (configure, [cmake, "--build", str(build)]):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    library = build / "libcondnet_ops.so"
    assert library.is_file()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_CHECK,
            str(library),
            str(ROOT / "condnet/ops/reference.py"),
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr[-4000:]
