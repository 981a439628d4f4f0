"""From the timings of a run to its records: a row's repeats combined, its
speedups, its share of the roofline, and the two flags that say a row is not
to be trusted.

A row measured N times (interleaved with the other rows, see
run_kernels.passes) reports the median of the N medians, the lowest 20%
and highest 80% quantile among them, and the spread max/min - 1 of the
medians. Two flags:

    unsteady        the repeats' medians differ by more than SPREAD_LIMIT:
                    the method, not the kernel, decided the number
    over_roofline   faster than the measured ceilings allow: a harness bug
                    (a ceiling too low, or a work model counting too much)
"""

from __future__ import annotations

import statistics

from ceilings import Ceiling
from kernel_cases import Case
from timing import Timing

SPREAD_LIMIT = 0.15
ROOFLINE_LIMIT = 100.0  # percent


def combine(timings: list[Timing]) -> dict:
    """The record fields of one row measured len(timings) times."""
    if not timings:
        raise ValueError("combine: no timings")
    medians = [t.median_ms for t in timings]
    spread = max(medians) / min(medians) - 1
    other = [t.other_cpu for t in timings if t.other_cpu is not None]
    faults = [t.page_faults for t in timings if t.page_faults is not None]
    return {
        "median_ms": statistics.median(medians),
        "q20_ms": min(t.q20_ms for t in timings),
        "q80_ms": max(t.q80_ms for t in timings),
        "reps": sum(t.reps for t in timings),
        "repeats": len(timings),
        "repeat_medians_ms": medians,
        "repeat_min_ms": min(medians),
        "repeat_max_ms": max(medians),
        "repeat_spread": spread,
        "unsteady": spread > SPREAD_LIMIT,
        "other_cpu": max(other) if other else None,
        "page_faults_per_call": max(faults) if faults else None,
    }


def record(
    case: Case,
    provider: str,
    timings: list[Timing],
    ceilings: tuple[Ceiling, Ceiling],
    work: tuple[float, float],
    env: dict,
) -> dict:
    """One row: the case, its combined timings, achieved rates and roofline
    share under the work model (bytes, FLOPs) and the (memory, matmul)
    ceilings, and the run's environment."""
    B, C, K, H, W = case.dims
    memory, matmul = ceilings
    n_bytes, flops = work
    floor_s = max(n_bytes / memory.per_s, flops / matmul.per_s)
    rec = {
        "op": case.op,
        "provider": provider,
        **{k: env[k] for k in ("device", "device_name")},
        "dtype": case.precision,
        "shape": case.label,
        **dict(zip("BCKHW", (B, C, K, H, W), strict=True)),
        "mode": case.mode,
        **combine(timings),
        "speedup_vs_eager": None,
        "speedup_vs_compile": None,
    }
    ms = rec["median_ms"]
    pct = 100 * floor_s * 1e3 / ms
    rec |= {
        "gbps": n_bytes / ms / 1e6,
        "tflops": flops / ms / 1e9,
        "pct_roofline": pct,
        "over_roofline": pct > ROOFLINE_LIMIT,
        "floor_ms": floor_s * 1e3,
        "memory_ceiling_gbps": memory.per_s / 1e9,
        "memory_ceiling_source": memory.source,
        "matmul_ceiling_tflops": matmul.per_s / 1e12,
        "matmul_ceiling_source": matmul.source,
        **env,
    }
    return rec


def add_speedups(group: list[dict]) -> None:
    """Sets speedup_vs_eager and speedup_vs_compile of one case's rows."""
    base = {r["provider"]: r["median_ms"] for r in group}
    for rec in group:
        for ref in ("eager", "compile"):
            if ref in base:
                rec[f"speedup_vs_{ref}"] = base[ref] / rec["median_ms"]
