"""What the kernel benchmark writes: the environment of a run (device, CPU
model and features, threads, versions, commit, date) and its records as a
terminal table or markdown."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch
from kernel_cases import SWEEPS
from rows import ROOFLINE_LIMIT, SPREAD_LIMIT

import condnet
from condnet.engine.dist import device_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS_EXCLUDE = ":(exclude)benchmarks/results"
PROVIDER_ORDER = ("eager", "compile", "extension", "triton", "released")
# The CPU features that decide how fast the ops' products and streams can
# run (/proc/cpuinfo's names): x86 vector and matrix units, then Arm's.
CPU_FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
    "sme",
)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> str | None:
    """Short HEAD, with "-dirty" when tracked files other than the committed
    results differ from it (`make bench`'s later commands run after its
    earlier ones have rewritten benchmarks/results, which changes no code);
    None outside a git checkout."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return None
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ".", RESULTS_EXCLUDE)
    return f"{head}-dirty" if changes else head


def cpu_info(cpuinfo: str) -> tuple[str | None, list[str]]:
    """(model name, the CPU_FEATURES it has, in CPU_FEATURES' order) from the
    text of /proc/cpuinfo; the first processor's lines speak for all."""
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, [f for f in CPU_FEATURES if f in flags]


def _cpu() -> tuple[str | None, list[str]]:
    try:
        model, features = cpu_info(Path("/proc/cpuinfo").read_text())
    except OSError:
        model, features = None, []
    return model or platform.processor() or platform.machine() or None, features


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cpu_model, cpu_features = _cpu()
    return {
        "device": device.type,
        "device_name": device_name(device),
        "cpu_model": cpu_model,
        "cpu_features": cpu_features,
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "condnet_version": condnet.__version__,
        "commit": commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # Other work on the machine when the run started: CPU timings taken
        # beside a busy process are not worth keeping.
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def sweep_x(sweep: str, rec: dict) -> int:
    """The swept quantity of a sweep record: K for sweep-k, N = H*W for sweep-n."""
    return rec["K"] if sweep == "sweep-k" else rec["H"] * rec["W"]


def dims_text(rec: dict) -> str:
    return f"B={rec['B']}, C={rec['C']}, K={rec['K']}, {rec['H']}x{rec['W']}"


def _ms(rec: dict) -> str:
    return f"{rec['median_ms']:.3g} ({rec['q20_ms']:.3g}–{rec['q80_ms']:.3g})"


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _mib(value: int | None) -> str:
    return "not measured" if value is None else f"{value / 2**20:.1f}"


# Markers of the two flags of rows.py, explained under every markdown file.
UNSTEADY_MARK = "!"
OVER_ROOFLINE_MARK = "BUG"


def _spread(rec: dict) -> str:
    if rec["repeats"] < 2:
        return "1 run"
    mark = f" {UNSTEADY_MARK}" if rec["unsteady"] else ""
    return f"{rec['repeat_spread']:.0%}{mark}"


def _roofline(rec: dict) -> str:
    mark = f" {OVER_ROOFLINE_MARK}" if rec["over_roofline"] else ""
    return f"{rec['pct_roofline']:.0f}%{mark}"


COLUMNS = {
    "op": lambda r: r["op"],
    "mode": lambda r: r["mode"],
    "provider": lambda r: r["provider"],
    "median ms (q20–q80)": _ms,
    "spread": _spread,
    "vs eager": lambda r: ratio_text(r["speedup_vs_eager"]),
    "vs compile": lambda r: ratio_text(r["speedup_vs_compile"]),
    "GB/s": lambda r: f"{r['gbps']:.1f}",
    "TFLOP/s": lambda r: f"{r['tflops']:.3f}",
    "% roofline": _roofline,
    "peak MiB": lambda r: _mib(r["peak_mem_bytes"]),
}


def text_table(records: list[dict]) -> str:
    """All records, one line each, aligned for a terminal."""
    head = ["shape", "dtype", *COLUMNS]
    rows = [
        [f"{r['shape']} ({dims_text(r)})" if "=" not in r["shape"] else r["shape"], r["dtype"]]
        + [cell(r) for cell in COLUMNS.values()]
        for r in records
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]
    )


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def _groups(records: list[dict], key) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def _sweep_cell(rec: dict) -> str:
    marks = [OVER_ROOFLINE_MARK] * rec["over_roofline"] + [UNSTEADY_MARK] * rec["unsteady"]
    return " ".join([f"{rec['median_ms']:.3g}", *marks])


def header(records: list[dict]) -> list[str]:
    """The lines that say where and how a run measured: device, CPU model and
    features, threads, versions, commit, date, other work, the allocator, the
    ceilings of each dtype, and what the flags mean."""
    r0 = records[0]
    threads = f", {r0['threads']} threads" if r0["device"] == "cpu" else ""
    triton = f", triton {r0['triton_version']}" if r0["triton_version"] else ""
    features = ", ".join(r0["cpu_features"]) or "none of the listed vector/matrix features"
    cpu = f"CPU {r0['cpu_model']} ({features})"
    where = cpu if r0["device"] == "cpu" else f"{r0['device_name']}, host {cpu}"
    lines = [
        f"Measured on {where}{threads}, torch {r0['torch_version']}{triton}, "
        f"commit {r0['commit']}, {r0['date']}."
    ]
    other = [r["other_cpu"] for r in records if r.get("other_cpu") is not None]
    if other:
        lines[0] += f" Other processes used at most {max(other):.0%} of the CPUs during any row."
    if r0.get("cpu_allocator"):
        lines[0] += f" Allocator: {r0['cpu_allocator']}."
    lines += ["", "Ceilings (the best of several measurements in this run):", ""]
    for dtype, rows in _groups(records, lambda r: r["dtype"]).items():
        c = rows[0]
        lines.append(
            f"- {dtype}: memory {c['memory_ceiling_gbps']:.1f} GB/s "
            f"({c['memory_ceiling_source']}), matmul {c['matmul_ceiling_tflops']:.3f} "
            f"TFLOP/s ({c['matmul_ceiling_source']})"
        )
    repeats = sorted({r["repeats"] for r in records})
    lines += [
        "",
        f"Rows measured {' or '.join(map(str, repeats))} times, interleaved; the median of the "
        "repeats' medians, the widest q20–q80, and the spread max/min - 1 of the medians "
        f"(`{UNSTEADY_MARK}`: above {SPREAD_LIMIT:.0%}, unsteady). `{OVER_ROOFLINE_MARK}`: above "
        f"{ROOFLINE_LIMIT:.0f}% of the roofline, a harness bug.",
    ]
    return lines


def markdown(records: list[dict]) -> str:
    """The header, one full table per shape and dtype, and for the sweeps one
    median-time table per op and mode."""
    if not records:
        return "No records.\n"
    lines = header(records)
    plain = [r for r in records if r["shape"] not in SWEEPS]
    by_shape = _groups(
        plain, lambda r: (r["shape"], r["B"], r["C"], r["K"], r["H"], r["W"], r["dtype"])
    )
    for (label, *_, dtype), rows in by_shape.items():
        title = (
            f"**{dims_text(rows[0])}**" if "=" in label else f"**{label}** ({dims_text(rows[0])})"
        )
        lines += ["", f"{title}, {dtype}:", ""]
        lines += md_table(list(COLUMNS), [[cell(r) for cell in COLUMNS.values()] for r in rows])
    swept = [r for r in records if r["shape"] in SWEEPS]
    for (sweep, op, mode, dtype), rows in _groups(
        swept, lambda r: (r["shape"], r["op"], r["mode"], r["dtype"])
    ).items():
        axis = "K" if sweep == "sweep-k" else "N"
        fixed = (
            f"B={rows[0]['B']}, C={rows[0]['C']}, {rows[0]['H']}x{rows[0]['W']}"
            if axis == "K"
            else f"B={rows[0]['B']}, C={rows[0]['C']}, K={rows[0]['K']}"
        )
        providers = [p for p in PROVIDER_ORDER if any(r["provider"] == p for r in rows)]
        points = _groups(rows, lambda r, sweep=sweep: sweep_x(sweep, r))
        table = []
        for x, at in points.items():
            ms = {r["provider"]: _sweep_cell(r) for r in at}
            table.append(
                [str(x), *(ms.get(p, "n/a") for p in providers), f"{at[0]['floor_ms']:.3g}"]
            )
        lines += ["", f"**{sweep}**, {op} {mode}, {dtype} ({fixed}), median ms:", ""]
        lines += md_table([axis, *providers, "roofline floor"], table)
    return "\n".join(lines) + "\n"
