"""Timing of one row of the kernel benchmark.

GPU: CUDA events around each call, after warm-up, L2 flushed between calls.
CPU: perf_counter around each call, after warm-up, in a process whose malloc
keeps the memory it was given (steady_cpu_allocator). Either way the result
is the median and the 20%/80% quantiles of the per-call times.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

# A call that page-faults in less than this much fresh memory counts as warm.
WARM_FAULT_BYTES = 2**20


@dataclass
class Timing:
    median_ms: float
    q20_ms: float
    q80_ms: float
    reps: int
    other_cpu: float | None = None  # see OtherWork
    page_faults: float | None = None  # minor page faults per timed call (CPU)


def _quantiles(times_ms: list[float]) -> Timing:
    if len(times_ms) < 2:
        t = times_ms[0]
        return Timing(t, t, t, 1)
    q = statistics.quantiles(times_ms, n=10, method="inclusive")
    return Timing(statistics.median(times_ms), q[1], q[7], len(times_ms))


def _minor_faults() -> int:
    """Minor page faults of this process so far, all threads."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(
    fn: Callable[[], object],
    device: torch.device,
    warmup: int = 2,
    min_reps: int = 5,
    max_reps: int = 100,
    budget_s: float = 1.0,
    max_warmup: int = 5,
) -> Timing:
    """Per-call times of ``fn``: at least ``min_reps`` calls, more while the
    ``budget_s`` lasts (at most ``max_reps``). A call slower than the whole
    budget needs only three timed calls, so that the sweeps' largest cases
    stay affordable on a CPU.

    Warm-up: ``warmup`` calls (fewer when one takes longer than the budget),
    and on the CPU more, up to ``max_warmup``, until a call page-faults in
    less than WARM_FAULT_BYTES of fresh memory. Under steady_cpu_allocator
    the first one or two calls fault in the memory the later calls reuse;
    a timed call that still faulted paid the kernel's first touch of fresh
    pages, whose price changed from run to run."""
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    for done in range(1, max_warmup + 1):
        faults = _minor_faults()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        slow = time.perf_counter() - t0 > budget_s
        warm = device.type != "cpu" or (_minor_faults() - faults) * page < WARM_FAULT_BYTES
        if warm and (done >= warmup or slow):
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        flush = torch.empty(256 * 2**20, dtype=torch.int8, device=device)
    times: list[float] = []
    other = OtherWork()
    faults = _minor_faults()
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
    if device.type == "cpu":
        timing.page_faults = (_minor_faults() - faults) / len(times)
    return timing


class OtherWork:
    """How busy the machine's CPUs were with other processes' work while a
    row ran, as a fraction of all cores (Linux; None elsewhere). CPU timings
    taken beside other work are not worth much: two OpenMP threads that must
    meet at every barrier lose a scheduler slice whenever one is preempted.
    On the 2-core machine, with another process on one core (other work
    ~50%), every parallel region waited ~16 ms: dynamic_classify's 0.05 ms
    forward took 16 ms and the classifier's 0.28 ms one (four regions) 64 ms,
    in every timed call, while the same rows measured quiet a minute later
    were back at 0.05 and 0.28 ms; hence the re-measuring once quiet."""

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


# glibc's mallopt parameters (malloc.h) with the values set here and the
# defaults restored after.
_STEADY = {-4: 0, -1: 2**31 - 1, 1: 0}  # M_MMAP_MAX, M_TRIM_THRESHOLD, M_MXFAST
_DEFAULTS = {-4: 65536, -1: 128 * 1024, 1: 128}
# glibc reads this one at start-up only (there is no mallopt for it).
NO_TCACHE = "glibc.malloc.tcache_count=0"


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def restart_without_tcache() -> None:
    """Starts this script again with glibc's per-thread cache of small
    blocks off (see steady_cpu_allocator); returns at once where it is off
    already or the C library is not glibc."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not _glibc() or NO_TCACHE in tunables:
        return
    env = {**os.environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, NO_TCACHE)))}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


@contextlib.contextmanager
def steady_cpu_allocator(device: torch.device) -> Iterator[str | None]:
    """Within the block, glibc's malloc (behind torch's CPU tensors) keeps
    and reuses the memory it gets: no mmap of large blocks, no trimming of
    the heap, no fastbins. Yields what the allocator did, for the results;
    None off the CPU.

    By default every tensor over 32 MiB (and, while the heap is trimmed,
    smaller ones too) is a fresh mmap, page-faulted in on first touch at
    every call: eager's forward+backward of the classifier at B=2, 64x64
    faulted 77,000 pages (300 MB) per call, the extension 660 (measured on
    the 2-core machine). Those faults cost eager tens of milliseconds a call,
    and on a virtual machine their price depends on what the host did with
    the pages before: the likeliest reason one row measured 314, 302 and
    199 ms in one run. Kept in the heap, a freed block is reused only if
    no small block pins its neighbourhood: glibc 2.36 cannot serve an
    aligned request from a hole of exactly its size, and small freed blocks
    held in the fastbins or the per-thread cache never merge with it, so
    the heap kept growing by a tensor now and then. With both off
    (restart_without_tcache, which run_kernels.py does when run as a
    script), a call of the classifier faults nothing from its second call
    on, as in a training process whose allocator caches (jemalloc,
    tcmalloc, CUDA's), and the rows time the kernels."""
    if device.type != "cpu":
        yield None
        return
    if not _glibc():
        yield "the system allocator (not glibc): fresh memory may be page-faulted in the timings"
        return
    libc = ctypes.CDLL("libc.so.6")
    tcache = NO_TCACHE not in os.environ.get("GLIBC_TUNABLES", "")
    try:
        if not all([libc.mallopt(param, value) for param, value in _STEADY.items()]):
            yield "glibc malloc as configured (mallopt refused): fresh memory is page-faulted"
        elif tcache:
            yield (
                "glibc malloc without mmap, trimming or fastbins, tcache on: "
                "a warm call may still page-fault now and then"
            )
        else:
            yield "glibc malloc without mmap, trimming, fastbins or tcache: warm calls reuse memory"
    finally:
        for param, value in _DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)
