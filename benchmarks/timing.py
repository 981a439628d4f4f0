"""Timing and device ceilings for the kernel benchmark.

GPU: CUDA events around each call, after warm-up, L2 flushed between calls.
CPU: perf_counter around each call, after warm-up. Either way the result is
the median and the 20%/80% quantiles of the per-call times.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Timing:
    median_ms: float
    q20_ms: float
    q80_ms: float
    reps: int
    other_cpu: float | None = None  # see OtherWork


def _quantiles(times_ms: list[float]) -> Timing:
    if len(times_ms) < 2:
        t = times_ms[0]
        return Timing(t, t, t, 1)
    q = statistics.quantiles(times_ms, n=10, method="inclusive")
    return Timing(statistics.median(times_ms), q[1], q[7], len(times_ms))


def measure(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 2,
    min_reps: int = 5,
    max_reps: int = 100,
    budget_s: float = 1.0,
) -> Timing:
    """Per-call times of ``fn``: at least ``min_reps`` calls, more while the
    ``budget_s`` lasts (at most ``max_reps``). A call slower than the whole
    budget ends the warm-up and needs only three timed calls, so that the
    sweeps' largest cases stay affordable on a CPU."""
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if time.perf_counter() - t0 > budget_s:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device)
    times: list[float] = []
    other = OtherWork()
    start = time.perf_counter()
    while len(times) < min_reps or (
        len(times) < max_reps and time.perf_counter() - start < budget_s
    ):
        if len(times) == 1 and times[0] > budget_s * 1e3:
            min_reps = min(min_reps, 3)
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
    timing = _quantiles(times)
    timing.other_cpu = other.fraction()
    return timing


@dataclass
class Ceilings:
    """What the device reaches in this run: copy bandwidth (bytes read plus
    written per second) and dense matmul rate at the benchmark dtype."""

    bytes_per_s: float
    flops_per_s: float


def measure_ceilings(device: torch.device, dtype: torch.dtype, quick: bool = False) -> Ceilings:
    n_bytes = (16 if quick else 512) * 2**20
    budget = 0.1 if quick else 0.5
    src = torch.randn(n_bytes // 4, device=device)
    dst = torch.empty_like(src)
    copy = measure(lambda: dst.copy_(src), device, budget_s=budget)
    n = 1024 if quick or device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm = measure(lambda: a @ b, device, budget_s=budget)
    # The fastest observed call is the honest ceiling (the median would
    # understate the peak that a kernel can be held to).
    best_copy = copy.q20_ms * 1e-3
    best_mm = mm.q20_ms * 1e-3
    return Ceilings(2 * n_bytes / best_copy, 2 * n**3 / best_mm)


class OtherWork:
    """How busy the machine's CPUs were with other processes' work while a
    row ran, as a fraction of all cores (Linux; None elsewhere). CPU timings
    taken beside other work are not worth much: two OpenMP threads that must
    meet at every barrier lose a scheduler slice whenever one is preempted."""

    def __init__(self) -> None:
        self._start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = sum(
            getattr(resource.getrusage(who), field)
            for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for field in ("ru_utime", "ru_stime")
        )
        return time.perf_counter(), busy, own

    def fraction(self) -> float | None:
        end = self._sample()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall, busy, own = (b - a for a, b in zip(self._start, end, strict=True))
        return max(0.0, (busy - own) / (wall * (os.cpu_count() or 1)))


class QuietWait:
    """Waits, within a total budget for the whole run, until other processes
    use at most ``threshold`` of the CPUs over a few seconds."""

    def __init__(self, threshold: float = 0.1, budget_s: float = 900.0) -> None:
        self.threshold = threshold
        self.left_s = budget_s

    def __call__(self, window_s: float = 3.0) -> bool:
        """True once the machine is quiet; False when the budget is spent."""
        while self.left_s > 0:
            other = OtherWork()
            time.sleep(window_s)
            self.left_s -= window_s
            fraction = other.fraction()
            if fraction is None or fraction <= self.threshold:
                return True
        return False


def settle_cpu_allocator() -> None:
    """Puts glibc's malloc where a long-running process has it. Fresh, its
    dynamic mmap threshold is low, so each multi-MB tensor is mmapped and
    page-faulted anew (and heaps above twice the threshold are trimmed), which
    made the first CPU rows of a run up to 1.5x slower. Freeing one mmapped
    31 MiB block raises the threshold to that size (glibc's cap is 32 MiB)."""
    block = torch.empty(31 * 2**20, dtype=torch.uint8)
    del block
