"""Loading of the compiled extension ``condnet._C`` and what it was built with."""

from __future__ import annotations

import torch

import condnet

from . import registry

OPS = registry.OPS
# Ops made of others (CompositeExplicitAutograd): they run on a device when
# every part has a kernel there.
COMPOSITES = {
    "conditional_classifier": ("class_pool", "project", "dynamic_classify"),
    "context_aware_classifier": ("context_pool", "cosine_classify"),
}
_DEVICE_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
BUILD_HINT = (
    "build it from the repository root with "
    "`CUDA_HOME=/usr/local/cuda pip install --no-build-isolation -e .` "
    "(CONDNET_CPU_ONLY=1 for the CPU kernels only)"
)

try:
    # Loading it registers torch.ops.condnet; mypy cannot see into the compiled module.
    from condnet import _C  # type: ignore[attr-defined]  # noqa: F401

    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built, or built against another torch
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


def _kernels() -> dict[str, frozenset[str]]:
    """op -> device types that have a compiled kernel, read from the dispatcher.

    Computed once at import so that the backend choice is a dict lookup that
    torch.compile traces without a graph break.
    """
    if LOAD_ERROR is not None:
        return {op: frozenset() for op in OPS}

    def has(op: str, key: str) -> bool:
        try:
            return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
        except RuntimeError:  # a build older than the op: rebuild to get it
            return False

    kernels = {
        op: frozenset(dev for dev, key in _DEVICE_KEYS.items() if has(f"condnet::{op}", key))
        for op in OPS
        if op not in COMPOSITES
    }
    for op, parts in COMPOSITES.items():
        kernels[op] = frozenset.intersection(*(kernels[part] for part in parts))
    return kernels


KERNELS = _kernels()


def has_kernel(op: str, device_type: str) -> bool:
    return device_type in KERNELS[op]


def missing_kernel_message(op: str, device_type: str) -> str:
    if LOAD_ERROR is not None:
        return f"backend='extension' needs condnet._C, which did not load ({LOAD_ERROR}); " + (
            BUILD_HINT
        )
    built = ", ".join(sorted(KERNELS[op])) or "no device"
    return (
        f"backend='extension' has no {device_type} kernel for condnet::{op} "
        f"(this build has kernels for: {built}); {BUILD_HINT}, "
        "or use backend='reference' or 'auto'"
    )


def _unavailable_reason(op: str, device_type: str) -> str | None:
    return None if has_kernel(op, device_type) else missing_kernel_message(op, device_type)


def _kernel(op: str):
    return getattr(torch.ops.condnet, op)


BACKEND = registry.Backend(
    name="extension", kernel=_kernel, unavailable_reason=_unavailable_reason, auto_rank=20
)
registry.register(BACKEND)


def build_info() -> dict:
    """What the extension was compiled with.

    Returns a dict with ``version``, ``extension`` (whether ``condnet._C``
    loaded), ``load_error``, ``torch_built_against``, ``torch_runtime``,
    ``cpu``, ``openmp`` (whether the CPU kernels run on several threads),
    ``cuda``, ``cuda_version``, ``cuda_archs`` and ``kernels`` (op name ->
    device types with a compiled kernel).
    """
    info = {
        "version": condnet.__version__,
        "extension": LOAD_ERROR is None,
        "load_error": LOAD_ERROR,
        "torch_built_against": None,
        "torch_runtime": torch.__version__,
        "cpu": False,
        "openmp": False,
        "cuda": False,
        "cuda_version": None,
        "cuda_archs": [],
        "kernels": {op: sorted(devs) for op, devs in KERNELS.items()},
    }
    if LOAD_ERROR is not None:
        return info
    fields = dict(item.split("=", 1) for item in torch.ops.condnet.build_info().split(";"))
    info["torch_built_against"] = fields.get("torch")
    info["cpu"] = fields.get("cpu") == "1"
    info["openmp"] = fields.get("openmp") == "1"
    info["cuda"] = fields.get("cuda") == "1"
    info["cuda_version"] = fields.get("cuda_version")
    archs = fields.get("cuda_archs", "")
    info["cuda_archs"] = [f"sm_{int(a) // 10}" for a in archs.split(",") if a]
    return info
