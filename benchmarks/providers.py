"""Who runs the ops in the kernel benchmark: a small table of providers.

    eager      condnet.ops.reference in plain PyTorch; for cac, the released
               CAC head's formulation (benchmarks/cac_released.py)
    compile    the same under torch.compile (fullgraph, static shapes)
    extension  the compiled condnet kernels (C++ on the CPU, CUDA on the GPU);
               for classifier and cac the fused op
    triton     the Triton kernels, on CUDA, when condnet.ops has a "triton"
               backend that is available there
    released   the released model's formulation of the whole classifier
               (benchmarks/released.py); classifier only

A provider is a row of PROVIDERS: the condnet backend its ops run on (or None
for a formulation of its own), whether it is compiled, the ops it covers, and
what it needs from the machine. A new one (a "cuda" provider, say) is one more
row.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import cac_released
import released
import torch
from kernel_cases import INPUTS, OPS, Case

import condnet.ops as ops
from condnet.ops import extension, reference, registry

# The compiled op each benchmark op runs on (the classifier: the fused one).
KERNEL_OPS = {
    "class_pool": ("class_pool",),
    "dynamic_classify": ("dynamic_classify",),
    "project": ("project",),
    "classifier": ("conditional_classifier",),
    "cac": ("context_aware_classifier",),
}
# The primitive kernels behind a fused op's backward: extension.has_kernel
# checks only the forward's parts, and a build may have those alone.
BACKWARD_KERNELS = {"cac": ("context_pool_backward", "cosine_classify_backward")}
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}


def _anywhere(case: Case) -> str | None:
    return None


def _has_backward_kernel(op: str, device_type: str) -> bool:
    if extension.LOAD_ERROR is not None or device_type not in _DISPATCH_KEYS:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(
            f"condnet::{op}", _DISPATCH_KEYS[device_type]
        )
    except RuntimeError:  # the build does not define the op at all
        return False


def _needs_extension(case: Case) -> str | None:
    for op in KERNEL_OPS[case.op]:
        if not extension.has_kernel(op, case.device.type):
            return f"no {case.device.type} kernel for {op} in this build"
    if case.mode == "fwd_bwd":
        for op in BACKWARD_KERNELS.get(case.op, ()):
            if not _has_backward_kernel(op, case.device.type):
                return f"no {case.device.type} kernel for {op} (the backward) in this build"
    return None


def _needs_triton(case: Case) -> str | None:
    if case.device.type != "cuda":
        # On the CPU Triton runs only in its interpreter, which is for tests.
        return "times CUDA only (the Triton interpreter is not worth timing)"
    if "triton" not in getattr(ops, "BACKENDS", ()):
        return "condnet.ops has no triton backend"
    try:
        triton_ops = importlib.import_module("condnet.ops.triton")
    except ImportError as exc:
        return f"condnet.ops.triton does not import ({exc})"
    available = getattr(triton_ops, "available", None)
    if available is not None and available(case.device.type):
        if case.op == "cac":  # the fused CAC op may come to Triton after the others
            try:
                registry.resolve(KERNEL_OPS["cac"][0], case.device.type, "triton")
            except RuntimeError as exc:
                return str(exc)
        return None
    reason = getattr(triton_ops, "unavailable_reason", lambda device_type: None)
    return reason(case.device.type) or f"not available on {case.device.type}"


@dataclass(frozen=True)
class Provider:
    name: str
    backend: str | None  # condnet backend of class_pool / dynamic_classify; None: own code
    compiled: bool = False
    ops: tuple[str, ...] = OPS
    requires: Callable[[Case], str | None] = _anywhere


PROVIDERS = {
    p.name: p
    for p in (
        Provider("eager", "reference"),
        Provider("compile", "reference", compiled=True),
        Provider("extension", "extension", requires=_needs_extension),
        Provider("triton", "triton", requires=_needs_triton),
        Provider("released", None, ops=("classifier",)),
    )
}


def why_not(provider: Provider, case: Case) -> str | None:
    """None if the provider can run the case, else why not."""
    if case.op not in provider.ops:
        return f"covers only {', '.join(provider.ops)}"
    return provider.requires(case)


CAC_ARGS = INPUTS["cac"]


def _cac_fn(backend: str | None) -> Callable[[dict], tuple[torch.Tensor, ...]]:
    """cac: the released formulation for eager and compile (the baseline the
    issue names), the fused op on a kernel backend; (logits, static logits)."""
    if backend is None:
        raise ValueError("no own formulation of cac but the released one (backend 'reference')")
    if backend == "reference":
        return lambda t: cac_released.classifier(*(t[name] for name in CAC_ARGS))

    def fused(t):
        return tuple(ops.context_aware_classifier(*(t[name] for name in CAC_ARGS), backend=backend))

    return fused


def _op_fn(op: str, backend: str | None) -> Callable[[dict], tuple[torch.Tensor, ...]]:
    if op == "cac":
        return _cac_fn(backend)
    if backend is None:
        if op != "classifier":
            raise ValueError(f"no own formulation of {op}")
        return lambda t: released.classifier(
            t["x"], t["guide_weight"], t["guide_bias"], t["proj_weight"], t["proj_bias"]
        )
    if backend == "reference":  # the reference functions themselves, no dispatch
        class_pool, dynamic_classify = reference.class_pool, reference.dynamic_classify
        project, classifier = reference.project_per_class, reference.conditional_classifier
    else:

        def class_pool(*args):
            return ops.class_pool(*args, backend=backend)

        def dynamic_classify(*args):
            return ops.dynamic_classify(*args, backend=backend)

        def project(*args):
            return ops.project_per_class(*args, backend=backend)

        def classifier(*args):
            return ops.conditional_classifier(*args, backend=backend)

    def run_pool(t):
        return tuple(class_pool(t["x"], t["guide_weight"], t["guide_bias"]))

    def run_classify(t):
        return (dynamic_classify(t["x"], t["weight"], t["bias"]),)

    def run_project(t):
        return tuple(project(t["class_feats"], t["class_weight"], t["class_bias"]))

    def run_classifier(t):
        logits, guide = classifier(
            t["x"], t["guide_weight"], t["guide_bias"], t["proj_weight"], t["proj_bias"]
        )
        return guide, logits

    return {
        "class_pool": run_pool,
        "dynamic_classify": run_classify,
        "project": run_project,
        "classifier": run_classifier,
    }[op]


def _precision(case: Case) -> Callable[[], contextlib.AbstractContextManager]:
    """The context a call runs in: autocast to the features' dtype under amp."""
    if not case.amp:
        return contextlib.nullcontext
    return lambda: torch.autocast(case.device.type, dtype=case.dtype)


def build(provider: Provider, case: Case, inputs: dict) -> Callable[[], object]:
    """A no-argument callable running one forward (fwd: returning the outputs)
    or one forward and backward pass (fwd_bwd: returning nothing)."""
    fn = _op_fn(case.op, provider.backend)
    precision = _precision(case)
    if provider.compiled:
        # A fresh compile per case: with static shapes every new shape would
        # otherwise add a recompile of the same code, and past dynamo's
        # recompile limit the calls would silently fall back to eager.
        torch._dynamo.reset()
        fn = torch.compile(fn, dynamic=False, fullgraph=True)
    if case.mode == "fwd":

        def forward():
            with torch.no_grad(), precision():
                return fn(inputs)

        return forward
    leaves = [t for t in inputs.values() if t.requires_grad]
    gen = torch.Generator(device="cpu").manual_seed(1)
    grads = None

    def forward_backward():
        nonlocal grads
        with precision():
            outs = fn(inputs)
        if grads is None:  # the same random upstream gradients for every provider
            grads = [torch.randn(o.shape, generator=gen).to(o) for o in outs]
        torch.autograd.grad(outs, leaves, grads, allow_unused=True)

    return forward_backward
