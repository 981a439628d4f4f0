import os
import tempfile

import pytest

# A fresh inductor cache per run: compiled graphs cached by an earlier build of
# the extension could otherwise call an op with its old schema.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="condnet-inductor-"))

import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be
# chosen before they are defined (when backend="triton" is first used).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import condnet.ops as ops


@pytest.fixture(autouse=True)
def _no_backend_leak(monkeypatch):
    """Each test starts from the default backend choice."""
    monkeypatch.delenv("CONDNET_BACKEND", raising=False)
    assert not ops.registry._stack
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available. With
    CONDNET_GPU_TESTS_ON_CPU=1 the GPU op tests (the files using
    tests/gpu_cases.py) run on the CPU too, to check their own logic."""
    if torch.cuda.is_available():
        return
    on_cpu = os.environ.get("CONDNET_GPU_TESTS_ON_CPU") == "1"
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not (on_cpu and item.path.name.startswith("test_ops_gpu")):
            item.add_marker(skip)
