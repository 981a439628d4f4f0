"""Which implementation runs an op: the backend registry.

A backend is a name, the kernels it has for the registered ops, a rule saying
where they run, and its place in the ``"auto"`` order. Each backend registers
itself from its own module (:mod:`condnet.ops.reference_backend`,
:mod:`condnet.ops.extension`, :mod:`condnet.ops.triton`); the public ops
(:mod:`condnet.ops.functional`) look their kernel up here and nowhere else.

Which backend a call uses, first match wins: the ``backend=`` argument, the
innermost :func:`use_backend` block, the ``CONDNET_BACKEND`` environment
variable, ``"auto"`` (:func:`requested_backend`). ``"auto"`` takes, for the
tensors' device, the registered backend of lowest ``auto_rank`` that may be
chosen automatically there and can run the op (:func:`resolve`):

- CUDA: ``"triton"`` when triton imports and the GPU has compute capability
  8.0 or newer; else ``"extension"`` (the native CUDA kernels of csrc/cuda)
  when it has a CUDA kernel for the op; else ``"reference"``. The order
  follows the GPU benchmark once it has run (benchmarks/NOTES.md).
- CPU (and any other device): ``"extension"`` when it has a kernel there,
  else ``"reference"``. Never ``"triton"``: its interpreter is for tests.

Asking for a backend by name where it cannot run raises a RuntimeError that
says what is missing.

Every kernel takes the canonical arguments (the projection as per-class
matrices, :mod:`condnet.ops.layouts`); argument checks, autocast and layout
views happen once, before the lookup, in :mod:`condnet.ops.functional`.
Lookups are plain dict and attribute reads, so torch.compile traces the choice
without a graph break.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# The ops every backend provides, by the names of their schemas (schemas.py).
# conditional_classifier returns (logits, guide_logits, class_feats, theta);
# context_aware_classifier (logits, guide_logits, centres, mass, classifier,
# x_norm) on the kernel backends, (logits, guide_logits) on the reference.
OPS = (
    "class_pool",
    "dynamic_classify",
    "project",
    "conditional_classifier",
    "context_pool",
    "cosine_classify",
    "context_aware_classifier",
)

AUTO = "auto"


@dataclass(frozen=True)
class Backend:
    """One implementation of the ops.

    Attributes:
        name: what users pass as ``backend=``.
        kernel: op name -> the callable that runs it (called only once
            :attr:`unavailable_reason` has said it can run).
        unavailable_reason: ``(op, device_type)`` -> why the op cannot run on
            that device's tensors here, or None if it can.
        auto_rank: the place in the ``"auto"`` order; lower is preferred.
        auto_devices: the device types where ``"auto"`` may choose it; None
            for any device.
    """

    name: str
    kernel: Callable[[str], Callable]
    unavailable_reason: Callable[[str, str], str | None]
    auto_rank: int
    auto_devices: frozenset[str] | None = None

    def auto_allowed(self, device_type: str) -> bool:
        return self.auto_devices is None or device_type in self.auto_devices


_BACKENDS: dict[str, Backend] = {}
# Backends in "auto" order, kept sorted on registration.
_AUTO_ORDER: list[Backend] = []


def register(backend: Backend) -> None:
    """Adds ``backend``; a second backend of the same name is an error."""
    if backend.name == AUTO or backend.name in _BACKENDS:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    _AUTO_ORDER.append(backend)
    _AUTO_ORDER.sort(key=lambda b: b.auto_rank)


def names() -> tuple[str, ...]:
    """``"auto"`` and every registered backend, by name."""
    return (AUTO, *sorted(_BACKENDS))


def _checked(name: object, what: str) -> str:
    if name != AUTO and name not in _BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, names()))}; got {name!r}")
    return name


# A plain list rather than a ContextVar keeps torch.compile free of graph
# breaks; like torch's own mode stacks it is process-wide.
_stack: list[str] = []


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
    return AUTO


def resolve(op: str, device_type: str, backend: str | None = None) -> str:
    """The name of the backend that runs ``op`` on ``device_type`` tensors."""
    name = requested_backend(backend)
    if name != AUTO:
        reason = _BACKENDS[name].unavailable_reason(op, device_type)
        if reason is not None:
            raise RuntimeError(reason)
        return name
    for candidate in _AUTO_ORDER:
        if candidate.auto_allowed(device_type) and (
            candidate.unavailable_reason(op, device_type) is None
        ):
            return candidate.name
    raise RuntimeError(f"no condnet backend runs {op} on {device_type} tensors")


def kernel(op: str, device_type: str, backend: str | None = None) -> Callable:
    """The callable that runs ``op`` for ``device_type`` tensors (see :func:`resolve`)."""
    return _BACKENDS[resolve(op, device_type, backend)].kernel(op)
