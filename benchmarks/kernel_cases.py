"""What the kernel benchmark runs: shapes, ops, providers and the work model
(bytes and FLOPs) each row is judged against.

Providers:
    eager      condnet.ops.reference in plain PyTorch
    compile    the same reference under torch.compile
    extension  the compiled condnet kernels (C++ on the CPU, CUDA on the GPU)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import condnet.ops as ops
from condnet.ops import extension, reference

# name -> (B, C, K, H, W); DESIGN.md's reference shapes at training batch size.
SHAPES = {
    "ade": (8, 512, 150, 64, 64),
    "pc59": (8, 512, 59, 60, 60),
    "cityscapes": (8, 512, 19, 128, 256),
    "tiny": (2, 64, 19, 32, 32),
}
OPS = ("class_pool", "dynamic_classify", "classifier")
MODES = ("fwd", "fwd_bwd")
PROVIDERS = ("eager", "compile", "extension")


def parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """ "ade" or "B=8,C=512,K=150,H=64,W=64" -> (label, (B, C, K, H, W))."""
    if spec in SHAPES:
        return spec, SHAPES[spec]
    try:
        fields = dict(item.split("=") for item in spec.split(","))
        dims = tuple(int(fields.pop(k)) for k in "BCKHW")
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"--shapes: {spec!r} is neither one of {', '.join(SHAPES)} "
            "nor of the form B=..,C=..,K=..,H=..,W=.."
        ) from exc
    if fields:
        raise ValueError(f"--shapes: unknown fields {sorted(fields)} in {spec!r}")
    return spec, dims


@dataclass
class Case:
    op: str
    mode: str
    dims: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


def work(case: Case) -> tuple[float, float]:
    """(bytes, FLOPs) that a fused implementation cannot avoid: every tensor
    read or written once from device memory, and every product computed."""
    B, C, K, H, W = case.dims
    N, s = H * W, torch.finfo(case.dtype).bits // 8
    x, g, y = B * C * N * s, B * K * N * s, B * K * N * s
    mac = 2.0 * B * K * C * N  # FLOPs of one (K x C) by (C x N) product per image
    fwd = {
        "class_pool": (x + g, 2 * mac),
        "dynamic_classify": (x + y, mac),
        "classifier": (2 * x + g + y, 3 * mac),
    }[case.op]
    if case.mode == "fwd":
        return fwd
    # Backward: read x, the saved logits and the upstream gradients, write dx.
    bwd = {
        "class_pool": (2 * x + 2 * g, 4 * mac),
        "dynamic_classify": (2 * x + y, 2 * mac),
        "classifier": (3 * x + 2 * g + y, 6 * mac),
    }[case.op]
    return fwd[0] + bwd[0], fwd[1] + bwd[1]


def make_inputs(case: Case, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs (never zeros) scaled like a trained head's."""
    B, C, K, H, W = case.dims
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=gen) * scale
        return t.to(device=case.device, dtype=case.dtype).requires_grad_(case.mode == "fwd_bwd")

    return {
        "x": rnd(B, C, H, W),
        "guide_weight": rnd(K, C, scale=C**-0.5),
        "guide_bias": rnd(K, scale=0.1),
        "weight": rnd(B, K, C, scale=C**-0.5),
        "bias": rnd(B, K, scale=0.1),
        "proj_weight": rnd(C * K + K, C, 1, 1, scale=C**-0.5),
        "proj_bias": rnd(C * K + K, scale=0.1),
    }


def _op_fn(op: str, backend: str) -> Callable[..., tuple[torch.Tensor, ...]]:
    def class_pool(t):
        return ops.class_pool(t["x"], t["guide_weight"], t["guide_bias"], backend=backend)

    def dynamic_classify(t):
        return (ops.dynamic_classify(t["x"], t["weight"], t["bias"], backend=backend),)

    def classifier(t):
        g, f = ops.class_pool(t["x"], t["guide_weight"], t["guide_bias"], backend=backend)
        w, b = reference.project_official(f, t["proj_weight"], t["proj_bias"])
        return g, ops.dynamic_classify(t["x"], w, b, backend=backend)

    return {
        "class_pool": class_pool,
        "dynamic_classify": dynamic_classify,
        "classifier": classifier,
    }[op]


def available(provider: str, case: Case) -> str | None:
    """None if the provider can run the case, else why not."""
    if provider == "extension" and not extension.has_kernel("class_pool", case.device.type):
        return f"no {case.device.type} kernel in this build"
    return None


def build(provider: str, case: Case, inputs: dict) -> Callable[[], object]:
    """A no-argument callable running one forward (and backward) pass."""
    backend = "extension" if provider == "extension" else "reference"
    fn = _op_fn(case.op, backend)
    if provider == "compile":
        fn = torch.compile(fn, dynamic=False)
    if case.mode == "fwd":

        def run():
            with torch.no_grad():
                return fn(inputs)

        return run
    leaves = [t for t in inputs.values() if t.requires_grad]
    gen = torch.Generator(device="cpu").manual_seed(1)
    grads = None

    def run():
        nonlocal grads
        outs = fn(inputs)
        if grads is None:  # the same random upstream gradients for every provider
            grads = [torch.randn(o.shape, generator=gen).to(o) for o in outs]
        torch.autograd.grad(outs, leaves, grads, allow_unused=True)

    return run
