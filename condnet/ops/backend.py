"""Which implementation runs an op.

Precedence: the ``backend=`` argument of the call, then the innermost
:func:`use_backend` block, then the ``CONDNET_BACKEND`` environment variable,
then ``"auto"``.

``"auto"`` uses the compiled extension when it has a kernel for the tensor's
device and the pure-PyTorch reference otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from . import extension

BACKENDS = ("auto", "reference", "extension")

# A plain list rather than a ContextVar keeps torch.compile free of graph
# breaks; like torch's own mode stacks it is process-wide.
_stack: list[str] = []


def _checked(name: object, what: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the condnet ops inside the block with backend ``name``.

    Example::

        with condnet.ops.use_backend("reference"):
            logits = model(images)
    """
    _stack.append(_checked(name, "backend"))
    try:
        yield
    finally:
        _stack.pop()


def requested_backend(backend: str | None = None) -> str:
    """The backend name in force for a call, before ``"auto"`` is resolved."""
    if backend is not None:
        return _checked(backend, "backend")
    if _stack:
        return _stack[-1]
    env = os.environ.get("CONDNET_BACKEND")
    if env:
        return _checked(env, "the environment variable CONDNET_BACKEND")
    return "auto"


def resolve(op: str, device_type: str, backend: str | None = None) -> str:
    """The implementation that runs ``op`` on ``device_type``: "reference" or "extension"."""
    name = requested_backend(backend)
    if name == "reference":
        return name
    available = extension.has_kernel(op, device_type)
    if name == "extension" and not available:
        raise RuntimeError(extension.missing_kernel_message(op, device_type))
    return "extension" if available else "reference"
