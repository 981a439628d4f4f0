"""Timing and device ceilings for the kernel benchmark.

GPU: CUDA events around each call, after warm-up, L2 flushed between calls.
CPU: perf_counter around each call, after warm-up. Either way the result is
the median and the 20%/80% quantiles of the per-call times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    q20_ms: float
    q80_ms: float
    reps: int


def _quantiles(times_ms: list[float]) -> Timing:
    if len(times_ms) < 2:
        t = times_ms[0]
        return Timing(t, t, t, 1)
    q = statistics.quantiles(times_ms, n=10, method="inclusive")
    return Timing(statistics.median(times_ms), q[1], q[7], len(times_ms))


def measure(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 3,
    min_reps: int = 5,
    max_reps: int = 100,
    budget_s: float = 2.0,
) -> Timing:
    """Per-call times of ``fn``: at least ``min_reps`` calls, more while the
    ``budget_s`` lasts (at most ``max_reps``)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (
        len(times) < max_reps and time.perf_counter() - start < budget_s
    ):
        if device.type == "cuda":
            flush.zero_()  # so that no call finds its inputs already in L2
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return _quantiles(times)


@dataclass
class Ceilings:
    """What the device reaches in this run: copy bandwidth (bytes read plus
    written per second) and dense matmul rate at the benchmark dtype."""

    bytes_per_s: float
    flops_per_s: float


def measure_ceilings(device: torch.device, dtype: torch.dtype, quick: bool = False) -> Ceilings:
    n_bytes = (64 if quick else 512) * 2**20
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    copy = measure(lambda: dst.copy_(src), device, budget_s=0.5)
    n = 1024 if quick or device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm = measure(lambda: a @ b, device, budget_s=0.5)
    # The fastest observed call is the honest ceiling (the median would
    # understate the peak that a kernel can be held to).
    best_copy = copy.q20_ms * 1e-3
    best_mm = mm.q20_ms * 1e-3
    return Ceilings(2 * n_bytes / best_copy, 2 * n**3 / best_mm)


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated above the starting point during one call (GPU);
    None on the CPU, where torch keeps no allocation statistics."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base
