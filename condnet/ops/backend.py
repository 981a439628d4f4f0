"""Which implementation runs an op.

Precedence: the ``backend=`` argument of the call, then the innermost
:func:`use_backend` block, then the ``CONDNET_BACKEND`` environment variable,
then ``"auto"``.

Backends: ``"reference"`` (pure PyTorch, any device), ``"extension"`` (the
compiled ``condnet._C`` kernels), ``"triton"`` (the Triton kernels in
:mod:`condnet.ops.triton`; CUDA, or CPU under ``TRITON_INTERPRET=1``) and
``"auto"``, which picks, for the tensor's device:

- CUDA: ``"triton"`` when triton imports and the current GPU has compute
  capability 8.0 or newer; else ``"extension"`` (the native CUDA kernels of
  csrc/cuda) when it has a CUDA kernel; else ``"reference"``. Neither GPU path
  has been timed on a GPU yet; the order follows the benchmark once it has
  (benchmarks/NOTES.md).
- CPU (and any other device): ``"extension"`` when it has a kernel for the
  device, else ``"reference"``. Never ``"triton"``: the interpreter is for tests.

Asking for ``"extension"`` or ``"triton"`` where it cannot run raises a
RuntimeError that says what is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from . import extension
from . import triton as triton_kernels

BACKENDS = ("auto", "reference", "extension", "triton")

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
    """The implementation that runs ``op`` on ``device_type``: "reference",
    "extension" or "triton"."""
    name = requested_backend(backend)
    if name == "reference":
        return name
    if name == "triton":
        reason = triton_kernels.unavailable_reason(device_type)
        if reason is not None:
            raise RuntimeError(reason)
        return name
    if name == "auto" and device_type == "cuda" and triton_kernels.available(device_type):
        return "triton"
    available = extension.has_kernel(op, device_type)
    if name == "extension" and not available:
        raise RuntimeError(extension.missing_kernel_message(op, device_type))
    return "extension" if available else "reference"
