"""Peak memory of one call: the most memory the call held at any moment above
what was allocated before it started. Inputs, parameters and anything else
that existed before the call are not counted; outputs, saved activations,
gradients and temporaries are, as long as they were allocated through torch.

GPU: torch.cuda.max_memory_allocated after a reset, minus the memory
allocated before the call.

CPU: torch keeps no allocation statistics for the CPU, so the call runs under
torch.profiler with profile_memory=True, which records every allocation and
free made through torch's CPU allocator; their running sum, in order, peaks at
the answer. The profiler only watches the calling thread, so the call runs at
one thread (parallel regions then run inline on it). Memory that BLAS or
oneDNN allocate on their own is not seen, and at more threads a kernel that
allocates per-thread scratch inside a parallel region would need a little more.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch._C._autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated above the starting point during one call of fn."""
    if device.type == "cuda":
        return _cuda_peak(fn, device)
    if device.type == "cpu":
        return _cpu_peak(fn)
    raise ValueError(f"no peak-memory method for {device.type}")


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def _cpu_peak(fn: Callable[[], object]) -> int:
    # Kineto prints a line at every profiler start and stop; keep stderr for
    # the benchmark's own progress unless the user asked for its logs.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    finally:
        torch.set_num_threads(threads)
    return running_peak(prof.profiler.kineto_results.events())


def running_peak(events) -> int:
    """The highest running sum of allocation (+) and free (-) sizes, in time
    order, among the profiler's "[memory]" events; 0 if nothing was allocated."""
    sizes = sorted(
        (e.start_ns(), i, e.nbytes())
        for i, e in enumerate(events)
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    held = peak = 0
    for _, _, nbytes in sizes:
        held += nbytes
        peak = max(peak, held)
    return peak
