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
    assert not ops.backend._stack
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where CUDA is available (or on the CPU
    with CONDNET_GPU_TESTS_ON_CPU=1, which checks the GPU op tests' own logic;
    see tests/test_ops_gpu.py)."""
    if torch.cuda.is_available() or os.environ.get("CONDNET_GPU_TESTS_ON_CPU") == "1":
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
