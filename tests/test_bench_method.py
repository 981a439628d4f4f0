"""How the kernel benchmark measures (benchmarks/): the interleaved repeats
and their spread, the two flags a row can carry (unsteady, above its
roofline), the ceilings as the best of several measurements, the warm-up
that lasts until calls stop page-faulting, the allocator that keeps its
memory, and the CPU model and features read from /proc/cpuinfo. Timing is
faked where an order or a flag is checked; no timing is asserted."""

from __future__ import annotations

import json
import mmap
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import ceilings  # noqa: E402
import kernel_cases  # noqa: E402
import report  # noqa: E402
import rows  # noqa: E402
import run_kernels  # noqa: E402
import timing  # noqa: E402

CPU = torch.device("cpu")


def test_passes_interleave_the_rows():
    assert run_kernels.passes([2, 1, 2]) == [[0, 1, 2], [0, 2]]
    assert run_kernels.passes([1, 3]) == [[0, 1], [1], [1]]
    assert run_kernels.passes([]) == []


def _timing(ms, q20=None, q80=None, reps=5, other=None, faults=0.0):
    return timing.Timing(ms, q20 or ms, q80 or ms, reps, other, faults)


def test_repeats_combine_to_the_median_of_medians_and_their_spread():
    got = rows.combine([_timing(10, 9, 12), _timing(11.4, 11, 13, other=0.2), _timing(10.5)])
    assert got["median_ms"] == 10.5 and got["repeat_medians_ms"] == [10, 11.4, 10.5]
    assert (got["q20_ms"], got["q80_ms"], got["reps"], got["repeats"]) == (9, 13, 15, 3)
    assert (got["repeat_min_ms"], got["repeat_max_ms"]) == (10, 11.4)
    assert got["repeat_spread"] == pytest.approx(0.14) and not got["unsteady"]
    assert got["other_cpu"] == 0.2
    assert rows.combine([_timing(10), _timing(11.6)])["unsteady"]  # 16% apart
    assert rows.combine([_timing(10), _timing(11.5)])["unsteady"] is False  # 15%: not above
    one = rows.combine([_timing(7, 6, 8)])
    assert (one["median_ms"], one["repeat_spread"], one["unsteady"]) == (7, 0.0, False)
    with pytest.raises(ValueError, match="no timings"):
        rows.combine([])


def test_a_row_above_its_roofline_is_flagged():
    case = kernel_cases.Case("classifier", "fwd", (2, 8, 3, 4, 4), torch.float32, CPU, "x")
    env = {"device": "cpu", "device_name": "test"}
    memory, matmul = ceilings.Ceiling(1e9, "copy"), ceilings.Ceiling(1e12, "square")
    work = (2e6, 1e9)  # floor: max(2 ms of bytes, 1 ms of FLOPs) = 2 ms

    def row(ms):
        return rows.record(case, "eager", [_timing(ms)], (memory, matmul), work, env)

    assert row(2.5)["pct_roofline"] == pytest.approx(80) and not row(2.5)["over_roofline"]
    assert row(2.0)["over_roofline"] is False  # exactly at the floor
    fast = row(1.6)
    assert fast["pct_roofline"] == pytest.approx(125) and fast["over_roofline"]
    assert report.COLUMNS["% roofline"](fast) == "125% BUG"
    assert fast["floor_ms"] == pytest.approx(2.0)


@pytest.fixture
def fake_run(monkeypatch):
    """run_kernels with its timing replaced: measure() logs the call order and
    returns the times ``times(call index)`` gives; the ceilings are fixed."""
    calls = []

    def install(times):
        def fake_measure(fn, device, **kwargs):
            calls.append(fn)
            return _timing(times(len(calls) - 1))

        class FixedCeilings(ceilings.RunCeilings):
            def measure(self, cases):
                self.memory = ceilings.Ceiling(1e10, "fixed copy")
                self.matmul = {d: ceilings.Ceiling(1e11, "fixed gemm") for d in (torch.float32,)}
                return ["fixed"]

        monkeypatch.setattr(run_kernels, "measure", fake_measure)
        monkeypatch.setattr(run_kernels, "RunCeilings", FixedCeilings)
        return calls

    return install


def test_repeats_are_interleaved_and_an_unsteady_row_is_flagged(fake_run, tmp_path, capsys):
    # calls in order: pass 1: ade eager, ade extension, b8 eager, b8 extension; pass 2 again.
    # The second pass of ade-b8's eager row is 20% slower than the first.
    calls = fake_run(lambda i: 12.0 if i == 6 else 10.0)
    records = run_kernels.main(
        [
            *("--quick", "--device", "cpu", "--shapes", "ade,ade-b8", "--ops", "classifier"),
            *("--mode", "fwd", "--providers", "eager,released", "--repeat", "2"),
            *("--markdown", str(tmp_path / "r.md")),
        ]
    )
    names = [(r["shape"], r["provider"]) for r in records]
    assert names == [
        ("ade", "eager"),
        ("ade", "released"),
        ("ade-b8", "eager"),
        ("ade-b8", "released"),
    ]
    assert len(calls) == 8
    # interleaved: the first four calls are four different rows, then the same four again
    assert len({id(c) for c in calls}) == 8  # each pass builds its callables afresh
    b8 = records[2]
    assert b8["repeat_medians_ms"] == [10.0, 12.0] and b8["median_ms"] == 11.0
    assert b8["repeat_spread"] == pytest.approx(0.2) and b8["unsteady"]
    assert not any(r["unsteady"] for r in records if r is not b8)
    assert "1 rows' repeats differ by more than 15%" in capsys.readouterr().err
    assert "| classifier | fwd | eager | 11 (10–12) | 20% ! |" in (tmp_path / "r.md").read_text()


def test_the_run_reports_rows_over_the_roofline(fake_run, tmp_path, capsys):
    fake_run(lambda i: 1e-6)  # far faster than the fixed ceilings allow
    records = run_kernels.main(
        [
            *("--quick", "--device", "cpu", "--ops", "dynamic_classify", "--mode", "fwd"),
            *("--providers", "eager", "--markdown", str(tmp_path / "r.md")),
        ]
    )
    assert records and all(r["over_roofline"] for r in records)
    assert "HARNESS BUG: 1 rows above 100% of their roofline" in capsys.readouterr().err
    assert "% BUG |" in (tmp_path / "r.md").read_text()


def test_ceilings_are_the_best_seen(monkeypatch):
    rates = iter([5.0, 3.0])  # the second pass measures less: the first stays
    monkeypatch.setattr(
        ceilings, "memory_ceiling", lambda device, quick: ceilings.Ceiling(next(rates), "copy")
    )
    matmul = {torch.bfloat16: [2.0, 4.0], torch.float32: [3.0, 1.0]}
    monkeypatch.setattr(
        ceilings,
        "matmul_ceiling",
        lambda device, dtype, quick: ceilings.Ceiling(matmul[dtype].pop(0), str(dtype)),
    )
    run = ceilings.RunCeilings(CPU, quick=True)
    bf16 = kernel_cases.Case("classifier", "fwd", (2, 8, 3, 4, 4), torch.bfloat16, CPU, amp=True)
    run.measure([bf16])
    mem, mm = run.for_case(bf16)
    assert mem.per_s == 5.0 and mm.per_s == 3.0  # float32 is faster here: it bounds bf16 too
    run.measure([bf16])
    mem, mm = run.for_case(bf16)
    assert mem.per_s == 5.0 and mm == ceilings.Ceiling(4.0, "torch.bfloat16")
    assert ceilings.matmul_dtypes(torch.float64) == (torch.float64,)
    assert ceilings.matmul_dtypes(torch.float16) == (torch.float16, torch.float32)


def test_ceiling_measurements_run():
    """The real measurements at quick sizes: positive rates, named sources."""
    mem = ceilings.memory_ceiling(CPU, quick=True)
    mm = ceilings.matmul_ceiling(CPU, torch.float32, quick=True)
    assert mem.per_s > 1e8 and mem.source.split()[0] in ("copy", "sum", "fill")
    assert mm.per_s > 1e8 and mm.source.startswith("float32 ")


def test_warm_up_lasts_until_calls_stop_page_faulting():
    """The first three calls touch 8 MiB of fresh memory each; the warm-up
    goes on until a call that does not, and no timed call faults. The memory
    is a fresh anonymous mapping, so it faults whatever malloc holds already
    (in a long test run, freed and kept heap memory would not)."""
    kept, count = [], [0]
    size = 2**23

    def fn():
        count[0] += 1
        if count[0] <= 3:
            fresh = mmap.mmap(-1, size)
            fresh.write(b"\1" * size)  # touches every page
            kept.append(fresh)

    t = timing.measure(fn, CPU, warmup=1, min_reps=3, max_reps=3, budget_s=0.0)
    assert count[0] == 4 + 3 and t.reps == 3
    assert t.page_faults < 64


# Started as a script: restarts itself with glibc's tcache off, then
# allocates and frees the same tensors (64, 16 and 32 MiB with small ones
# between) six times outside steady_cpu_allocator and six times inside.
ALLOCATING_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import torch, timing
timing.restart_without_tcache()

def call():
    before = timing._minor_faults()
    tensors = [torch.ones(n) for n in (2**24, 7, 2**22, 3, 2**23)]
    del tensors
    return timing._minor_faults() - before

default = [call() for _ in range(6)]
with timing.steady_cpu_allocator(torch.device("cpu")) as what:
    steady = [call() for _ in range(6)]
print(json.dumps([os.environ["GLIBC_TUNABLES"], what, default, steady]))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="steady_cpu_allocator tunes glibc")
def test_steady_cpu_allocator_reuses_memory(tmp_path):
    script = tmp_path / "allocate.py"
    script.write_text(ALLOCATING_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(BENCH)], capture_output=True, text=True, check=True
    )
    tunables, what, default, steady = json.loads(done.stdout.splitlines()[-1])
    assert timing.NO_TCACHE in tunables.split(":")
    assert what.endswith("fastbins or tcache: warm calls reuse memory")
    pages = 2**20 // os.sysconf("SC_PAGE_SIZE")  # in 1 MiB
    assert min(default) > 64 * pages  # the 64 MiB tensor is a fresh mmap every time
    assert max(steady[1:]) < pages  # from the second call on, nothing fresh is touched
    with timing.steady_cpu_allocator(torch.device("meta")) as what:
        assert what is None


INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 \
amx_bf16 amx_tile amx_int8 avx512_fp16
processor\t: 1
model name\t: something else
flags\t\t: fpu
"""
ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd evtstrm aes sve sve2 bf16 i8mm
CPU implementer\t: 0x41
"""


def test_cpu_model_and_features_from_cpuinfo():
    model, features = report.cpu_info(INTEL)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert features == [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    ]
    assert report.cpu_info(ARM) == (None, ["asimd", "sve", "sve2", "bf16", "i8mm"])
    assert report.cpu_info("") == (None, [])
