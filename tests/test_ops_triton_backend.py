"""Choosing the Triton kernels: backend="triton" wherever a backend can be
named, the "auto" rule, the errors that say what is missing, and an import of
condnet.ops that never touches triton."""

import os
import subprocess
import sys

import pytest
import torch

import condnet.ops as ops
from condnet.ops import extension, reference
from condnet.ops import registry as backend
from condnet.ops import triton as triton_kernels
from tests.opcases import make_inputs
from tests.test_ops_triton import needs_interpreter


@needs_interpreter
def test_backend_triton_everywhere_it_can_be_named(monkeypatch):
    x, gw, gb, _, _ = make_inputs(1, 3, 2, 2, 3)
    want = reference.class_pool(x, gw, gb)
    assert "triton" in ops.BACKENDS
    assert backend.resolve("class_pool", "cpu", "triton") == "triton"
    with ops.use_backend("triton"):
        assert backend.resolve("class_pool", "cpu") == "triton"
        torch.testing.assert_close(ops.class_pool(x, gw, gb), want)
    monkeypatch.setenv("CONDNET_BACKEND", "triton")
    assert backend.resolve("dynamic_classify", "cpu") == "triton"
    torch.testing.assert_close(ops.class_pool(x, gw, gb), want)


def test_auto_never_picks_triton_on_cpu():
    assert backend.resolve("class_pool", "cpu") in ("extension", "reference")
    assert backend.resolve("dynamic_classify", "cpu", "auto") in ("extension", "reference")


@pytest.mark.parametrize("triton_ok", [True, False])
@pytest.mark.parametrize("cuda_kernel", [True, False])
def test_auto_on_cuda(monkeypatch, triton_ok, cuda_kernel):
    """auto on CUDA: triton when usable, else the extension's kernel, else the reference."""
    monkeypatch.setattr(triton_kernels, "_REASONS", {"cuda": None if triton_ok else "no triton"})
    devices = frozenset({"cuda"} if cuda_kernel else ())
    monkeypatch.setattr(extension, "KERNELS", {op: devices for op in extension.OPS})
    want = "triton" if triton_ok else ("extension" if cuda_kernel else "reference")
    assert backend.resolve("class_pool", "cuda") == want
    assert backend.resolve("dynamic_classify", "cuda", "auto") == want


def test_triton_on_an_old_gpu_says_what_is_needed(monkeypatch):
    monkeypatch.setattr(triton_kernels, "_REASONS", {})
    monkeypatch.setattr(triton_kernels, "_load", lambda: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert not triton_kernels.available("cuda")
    with pytest.raises(RuntimeError, match=r"compute capability 8\.0 or newer; this one is 7\.5"):
        backend.resolve("class_pool", "cuda", "triton")
    assert backend.resolve("class_pool", "cuda") in ("extension", "reference")


def test_triton_without_the_package_says_so(monkeypatch):
    monkeypatch.setattr(triton_kernels, "_REASONS", {})
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` fail
    x, gw, _, _, _ = make_inputs(1, 3, 2, 2, 2)
    with pytest.raises(RuntimeError, match="needs the triton package, which did not import"):
        ops.class_pool(x, gw, backend="triton")
    assert not triton_kernels.available("cuda")


def test_triton_on_cpu_without_the_interpreter_says_how(monkeypatch):
    pytest.importorskip("triton")
    from condnet.ops.triton import ops as triton_ops

    monkeypatch.setattr(triton_kernels, "_REASONS", {})
    monkeypatch.setattr(triton_ops, "INTERPRETED", False)
    x, _, _, w, _ = make_inputs(1, 3, 2, 2, 2)
    with pytest.raises(RuntimeError, match="only in the Triton interpreter: set TRITON_INTERPRET"):
        ops.dynamic_classify(x, w, backend="triton")
    assert not triton_kernels.available("cpu")


def test_triton_on_other_devices_is_refused(monkeypatch):
    monkeypatch.setattr(triton_kernels, "_REASONS", {})
    with pytest.raises(RuntimeError, match="runs on CUDA tensors .* not on mps"):
        backend.resolve("class_pool", "mps", "triton")
    assert not triton_kernels.available("mps")


def test_importing_condnet_ops_leaves_triton_alone():
    """condnet.ops imports neither triton nor torch._dynamo, and works without triton."""
    code = (
        "import sys\n"
        "import torch\n"
        "import condnet.ops as ops\n"
        "assert 'triton' not in sys.modules and 'torch._dynamo' not in sys.modules\n"
        "sys.modules['triton'] = None\n"
        "x, gw = torch.randn(1, 3, 4, 4), torch.randn(2, 3)\n"
        "ops.class_pool(x, gw)\n"
        "assert not ops.triton.available('cuda')\n"
        "print(ops.triton.unavailable_reason('cuda'))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "needs the triton package" in done.stdout
