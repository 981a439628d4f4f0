"""The ``"triton"`` backend: Triton kernels for every condnet op, forward and
backward.

They are registered as ``torch.ops.condnet_triton.*`` (:mod:`.ops`, with the
schemas of :mod:`condnet.ops.schemas`), with ``torch.library.triton_op``, so
torch.compile traces into the kernels. Select them with ``backend="triton"``;
``backend="auto"`` prefers them on CUDA GPUs of compute capability 8.0 or newer.

Importing this package does not import triton: :func:`available` and
:func:`unavailable_reason` do, on first use, and only then are the kernels
defined and the ops registered. On CPU the kernels run only in the Triton
interpreter (``TRITON_INTERPRET=1`` set before the first use), which is for
tests.
"""

from __future__ import annotations

import importlib

import torch

from .. import registry

__all__ = ["BACKEND", "MIN_CAPABILITY", "available", "unavailable_reason"]

# bfloat16 tl.dot needs Ampere tensor cores.
MIN_CAPABILITY = (8, 0)

_REASONS: dict[str, str | None] = {}

_ALTERNATIVES = "or use backend='auto' or 'reference'"


def _load() -> str | None:
    """Imports triton and the kernels, registering the ops; the error if triton is missing."""
    try:
        importlib.import_module("triton")
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    importlib.import_module(f"{__name__}.ops")
    # Here, not at import: torch.utils.flop_counter imports triton.
    from ..flops import register_flop_formulas

    register_flop_formulas("condnet_triton")
    return None


def _probe(device_type: str) -> str | None:
    if device_type not in ("cuda", "cpu"):
        return (
            f"backend='triton' runs on CUDA tensors (and on CPU under TRITON_INTERPRET=1), "
            f"not on {device_type}; {_ALTERNATIVES}"
        )
    error = _load()
    if error is not None:
        return (
            f"backend='triton' needs the triton package, which did not import ({error}); "
            f"install the triton that matches your torch (`pip install triton`), {_ALTERNATIVES}"
        )
    from .ops import INTERPRETED

    if device_type == "cpu":
        if INTERPRETED:
            return None
        return (
            "backend='triton' runs on CPU tensors only in the Triton interpreter: set "
            "TRITON_INTERPRET=1 before condnet's Triton kernels are first used (slow; for "
            f"tests), {_ALTERNATIVES}"
        )
    if not torch.cuda.is_available():
        return f"backend='triton' needs a CUDA GPU, and torch finds none; {_ALTERNATIVES}"
    capability = torch.cuda.get_device_capability()
    if capability < MIN_CAPABILITY:
        return (
            "backend='triton' needs a GPU of compute capability "
            f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer; this one is "
            f"{capability[0]}.{capability[1]}; {_ALTERNATIVES}"
        )
    return None


def unavailable_reason(device_type: str) -> str | None:
    """Why the Triton kernels cannot run on ``device_type`` tensors, or None if they can.

    For ``"cuda"`` this looks at the current CUDA device.
    """
    if device_type not in _REASONS:
        _REASONS[device_type] = _probe(device_type)
    return _REASONS[device_type]


# Computed once per device type, and a constant to torch.compile: Dynamo calls
# it while tracing instead of tracing into the imports and device queries of
# the probe, so choosing a backend inside a compiled model needs no graph
# break. This is what torch.compiler.assume_constant_result does; setting its
# mark directly spares importing torch._dynamo (about a second) with condnet.ops.
# (mypy does not model attributes set on a function, hence the ignore.)
unavailable_reason._dynamo_marked_constant = True  # type: ignore[attr-defined]


def available(device_type: str) -> bool:
    """Whether the Triton kernels run on ``device_type`` ("cuda" or "cpu") here:
    triton imports, and the device is a CUDA GPU of compute capability >= 8.0,
    or the CPU under ``TRITON_INTERPRET=1``."""
    return unavailable_reason(device_type) is None


def _kernel(op: str):
    return getattr(torch.ops.condnet_triton, op)


# Every op has a Triton kernel wherever triton runs; "auto" takes it on CUDA only.
BACKEND = registry.Backend(
    name="triton",
    kernel=_kernel,
    unavailable_reason=lambda op, device_type: unavailable_reason(device_type),
    auto_rank=10,
    auto_devices=frozenset({"cuda"}),
)
registry.register(BACKEND)
