import pytest

import condnet.ops as ops


@pytest.fixture(autouse=True)
def _no_backend_leak(monkeypatch):
    """Each test starts from the default backend choice."""
    monkeypatch.delenv("CONDNET_BACKEND", raising=False)
    assert not ops.backend._stack
    yield
