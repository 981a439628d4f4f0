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
    import importlib.util, os, sys, types, torch
    # The reference and the layouts it imports, as a package of their own:
    # importing condnet would load condnet._C, whose namespace the library takes.
    spec_pkg = types.ModuleType("spec")
    spec_pkg.__path__ = [os.path.dirname(sys.argv[2])]
    sys.modules["spec"] = spec_pkg
    spec = importlib.util.spec_from_file_location("spec.reference", sys.argv[2])
    ref = importlib.util.module_from_spec(spec)
    sys.modules["spec.reference"] = ref
    spec.loader.exec_module(ref)
    assert "condnet" not in sys.modules
    torch.ops.load_library(sys.argv[1])
    assert torch.ops.condnet.build_info().startswith("torch=")
    if sys.argv[3] == "cuda":  # compiled, registered; runnable only on a GPU
        assert "cuda=1" in torch.ops.condnet.build_info()
        for op in ("class_pool", "class_pool_backward", "dynamic_classify",
                   "dynamic_classify_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"condnet::{op}", "CUDA"), op
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


CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cmake_library_builds_and_loads(tmp_path, device):
    # The environment's own cmake first (pip's, as `make` installs it): the
    # CUDA build needs one that knows nvcc 13's C++20 flag (Debian's 3.25
    # does not).
    cmake = shutil.which(
        "cmake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if cmake is None:
        if os.environ.get("CI"):
            pytest.fail("cmake is required in CI (pip install cmake)")
        pytest.skip("cmake not installed")
    nvcc = CUDA_HOME / "bin" / "nvcc"
    if device == "cuda" and (not nvcc.is_file() or torch.version.cuda is None):
        pytest.skip("needs nvcc and a CUDA build of torch")
    build = tmp_path / "build"
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
    ]
    if device == "cuda":
        configure += ["-DCONDNET_WITH_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    if device == "cuda":
        env["CUDA_HOME"] = str(CUDA_HOME)
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
            device,
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0 and check.stdout.strip() == "ok", check.stderr[-4000:]
