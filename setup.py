"""Builds condnet._C: the C++ CPU kernels always, the CUDA kernels when a CUDA
toolkit and a CUDA build of torch are present.

Environment:
    CONDNET_CPU_ONLY=1      skip the CUDA sources even if a toolkit is found
    FORCE_CUDA=1            build the CUDA sources or fail (no GPU needed)
    TORCH_CUDA_ARCH_LIST    archs to compile for; default "8.0;9.0"
    CUDA_HOME               the toolkit; found from nvcc or /usr/local/cuda if unset
    MAX_JOBS                parallel compile jobs

Build with ``pip install --no-build-isolation -e .`` so that the torch you run
is the torch you build against.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _is_cuda_home(path):
    return os.path.isfile(os.path.join(path, "bin", "nvcc")) and os.path.isfile(
        os.path.join(path, "include", "cuda_runtime_api.h")
    )


def _find_cuda_home():
    """The toolkit root. The nvcc on PATH may be a wrapper script (as in
    /usr/local/bin/nvcc), whose grandparent is not a CUDA home, so every
    candidate is checked for a real toolkit layout."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    return next((c for c in candidates if _is_cuda_home(c)), None)


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")


CUDA_HOME = _find_cuda_home()
if CUDA_HOME:
    # Must happen before torch.utils.cpp_extension is imported: it reads
    # CUDA_HOME once, at import time.
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _want_cuda():
    if _flag("CONDNET_CPU_ONLY"):
        if _flag("FORCE_CUDA"):
            raise RuntimeError("CONDNET_CPU_ONLY=1 and FORCE_CUDA=1 contradict each other")
        return False
    if _flag("FORCE_CUDA"):
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit found: set CUDA_HOME")
        if torch.version.cuda is None:
            raise RuntimeError(
                f"FORCE_CUDA=1 but torch {torch.__version__} is a CPU-only build; "
                "install a CUDA build of torch"
            )
        return True
    return CUDA_HOME is not None and torch.version.cuda is not None


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def extension():
    sources = (
        ["csrc/ops.cpp", "csrc/python_module.cpp"]
        + _sources("csrc/composite/*.cpp")
        + _sources("csrc/cpu/*.cpp")
    )
    cxx_flags = ["-O3", "-Wall", "-Wno-unknown-pragmas"]
    link_flags = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is inlined from ATen's headers: without OpenMP the
        # CPU kernels would run on one thread. The runtime is the libgomp torch
        # already loaded (same soname).
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    if not _want_cuda():
        print("condnet: building the CPU kernels only")
        return CppExtension(
            "condnet._C",
            sources + ["csrc/build_info_nocuda.cpp"],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    print(
        f"condnet: building CPU and CUDA kernels with {CUDA_HOME} "
        f"for archs {os.environ['TORCH_CUDA_ARCH_LIST']}"
    )
    return CUDAExtension(
        "condnet._C",
        sources + _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp"),
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills"],
        },
        extra_link_args=link_flags,
    )


setup(
    packages=find_packages(include=["condnet", "condnet.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
