"""The ceilings every row of the kernel benchmark is judged against, measured
in the same run: the fastest memory stream and, per dtype, the fastest dense
matmul the machine reaches.

A ceiling is the best of several measurements, not one. With one 1024x1024
GEMM and one copy, eager's and compile's forward of the classifier at
128x128 read 104% and 114% of their roofline: MKL runs the ops' own tall,
skinny and batched products faster than a small square one, and a kernel
that mostly reads streams faster than a copy, which also writes. So the
matmul ceiling is the best of square, tall-skinny, batched and transposed
products at the ops' sizes, and the memory ceiling the best of two large
copies, a read-only sum and a fill. A row above 100% of its roofline still
means the harness is wrong (a ceiling too low or a work model counting too
much); the records flag it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from kernel_cases import Case
from timing import measure

# float32 is always a candidate: a 16-bit product may be computed in float32
# (the CPU extension does), and where the CPU lacks bf16 instructions that
# is the faster way.
_WIDER = {torch.bfloat16: torch.float32, torch.float16: torch.float32}


@dataclass(frozen=True)
class Ceiling:
    per_s: float  # bytes (read + written) or FLOPs per second
    source: str  # the measurement that reached it


def _best(a: Ceiling | None, b: Ceiling) -> Ceiling:
    return b if a is None or b.per_s > a.per_s else a


def matmul_dtypes(dtype: torch.dtype) -> tuple[torch.dtype, ...]:
    """The dtypes whose matmul rate bounds a case computed in ``dtype``."""
    return (dtype, _WIDER[dtype]) if dtype in _WIDER else (dtype,)


def _sizes(device: torch.device, quick: bool) -> dict[str, int]:
    if quick:
        return {"B": 2, "C": 64, "K": 32, "N": 2048, "square": 256, "MiB": 16}
    return {
        "B": 8 if device.type == "cuda" else 2,
        "C": 512,
        "K": 150,
        "N": 16384,
        "square": 8192 if device.type == "cuda" else 2048,
        "MiB": 256,
    }


def _gemms(device: torch.device, quick: bool) -> list[tuple[str, tuple, tuple, bool, bool]]:
    """(name, a's shape, b's shape, use a transposed, use b transposed): the
    products of the ops (guide logits, class features, dx, the per-image
    classifier) at their sizes, a wider tall-skinny one and a square one."""
    s = _sizes(device, quick)
    B, C, K, N, n = s["B"], s["C"], s["K"], s["N"], s["square"]
    return [
        (f"square {n}x{n}x{n}", (n, n), (n, n), False, False),
        (f"tall-skinny {K}x{C}x{N}", (K, C), (C, N), False, False),
        (f"tall-skinny {2 * C}x{C}x{N}", (2 * C, C), (C, N), False, False),
        (f"batched {B}x({K}x{C}x{N})", (B, K, C), (B, C, N), False, False),
        (f"{K}x{N}x{C}, b transposed", (K, N), (C, N), False, True),
        (f"{C}x{K}x{N}, a transposed", (K, C), (K, N), True, False),
    ]


def _rate(fn: Callable[[], object], work: float, device, budget: float) -> float:
    # The fastest 20% of calls: the ceiling a kernel can be held to (the
    # median would understate it).
    return work / (measure(fn, device, budget_s=budget).q20_ms * 1e-3)


def matmul_ceiling(device: torch.device, dtype: torch.dtype, quick: bool = False) -> Ceiling:
    """The best FLOP rate of the GEMMs of _gemms in ``dtype``."""
    budget, best = (0.05 if quick else 0.3), None
    for name, a_shape, b_shape, ta, tb in _gemms(device, quick):
        a = torch.randn(*a_shape, device=device, dtype=dtype)
        b = torch.randn(*b_shape, device=device, dtype=dtype)
        a_op = a.transpose(-1, -2) if ta else a
        b_op = b.transpose(-1, -2) if tb else b
        out = torch.matmul(a_op, b_op)
        flops = 2.0 * out.numel() * a_op.shape[-1]
        del out
        rate = _rate(lambda a_op=a_op, b_op=b_op: torch.matmul(a_op, b_op), flops, device, budget)
        best = _best(best, Ceiling(rate, f"{str(dtype).removeprefix('torch.')} {name}"))
        del a, b, a_op, b_op
    assert best is not None
    return best


def memory_ceiling(device: torch.device, quick: bool = False) -> Ceiling:
    """The best rate of bytes read plus written over two large copies, a
    read-only sum and a fill, all far larger than any cache."""
    budget, mib, best = (0.05 if quick else 0.3), _sizes(device, quick)["MiB"], None
    for size in (mib, 2 * mib):
        n_bytes = size * 2**20
        src = torch.randn(n_bytes // 4, device=device)
        dst = torch.empty_like(src)
        rate = _rate(lambda src=src, dst=dst: dst.copy_(src), 2 * n_bytes, device, budget)
        best = _best(best, Ceiling(rate, f"copy of {size} MiB"))
        if size == 2 * mib:
            rate = _rate(src.sum, n_bytes, device, budget)
            best = _best(best, Ceiling(rate, f"sum of {size} MiB"))
            rate = _rate(dst.zero_, n_bytes, device, budget)
            best = _best(best, Ceiling(rate, f"fill of {size} MiB"))
        del src, dst
    assert best is not None
    return best


class RunCeilings:
    """The best ceilings measured so far in a run; each pass over the rows
    measures them again, so a ceiling is the best over the whole run."""

    def __init__(self, device: torch.device, quick: bool) -> None:
        self.device, self.quick = device, quick
        self.memory: Ceiling | None = None
        self.matmul: dict[torch.dtype, Ceiling] = {}

    def measure(self, cases: list[Case]) -> list[str]:
        """Measures the memory ceiling and the matmul ceilings the cases need;
        returns one line per ceiling, for the progress output."""
        self.memory = _best(self.memory, memory_ceiling(self.device, self.quick))
        lines = [f"memory {self.memory.per_s / 1e9:.1f} GB/s ({self.memory.source})"]
        needed = {d: None for case in cases for d in matmul_dtypes(case.dtype)}
        for dtype in needed:
            best = _best(self.matmul.get(dtype), matmul_ceiling(self.device, dtype, self.quick))
            self.matmul[dtype] = best
            lines.append(f"matmul {best.per_s / 1e12:.3f} TFLOP/s ({best.source})")
        return lines

    def for_case(self, case: Case) -> tuple[Ceiling, Ceiling]:
        """(memory, matmul) ceilings of a case: the best matmul among the
        dtypes its products may be computed in."""
        if self.memory is None:
            raise RuntimeError("RunCeilings.for_case before any measure()")
        matmul = None
        for dtype in matmul_dtypes(case.dtype):
            matmul = _best(matmul, self.matmul[dtype])
        assert matmul is not None
        return self.memory, matmul
