"""What the kernel benchmark writes: the environment of a run (device,
versions, commit, date) and its records as a terminal table or markdown."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

import torch
from kernel_cases import SWEEPS

import condnet
from condnet.engine.dist import device_name

ROOT = Path(__file__).resolve().parents[1]
PROVIDER_ORDER = ("eager", "compile", "extension", "triton", "released")


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> str | None:
    """Short HEAD, with "-dirty" when tracked files differ from it; None
    outside a git checkout."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return None
    changes = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head}-dirty" if changes else head


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {
        "device": device.type,
        "device_name": device_name(device),
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


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _mib(value: int | None) -> str:
    return "not measured" if value is None else f"{value / 2**20:.1f}"


COLUMNS = {
    "op": lambda r: r["op"],
    "mode": lambda r: r["mode"],
    "provider": lambda r: r["provider"],
    "median ms (q20–q80)": _ms,
    "vs eager": lambda r: _ratio(r["speedup_vs_eager"]),
    "vs compile": lambda r: _ratio(r["speedup_vs_compile"]),
    "GB/s": lambda r: f"{r['gbps']:.1f}",
    "TFLOP/s": lambda r: f"{r['tflops']:.3f}",
    "% roofline": lambda r: f"{r['pct_roofline']:.0f}%",
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


def _md(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def _groups(records: list[dict], key) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(key(r), []).append(r)
    return out


def markdown(records: list[dict]) -> str:
    """A header line naming the run's device and versions, one full table per
    shape and dtype, and for the sweeps one median-time table per op and mode."""
    if not records:
        return "No records.\n"
    r0 = records[0]
    threads = f", {r0['threads']} threads" if r0["device"] == "cpu" else ""
    triton = f", triton {r0['triton_version']}" if r0["triton_version"] else ""
    lines = [
        f"Measured on {r0['device_name']}{threads}, torch {r0['torch_version']}{triton}, "
        f"commit {r0['commit']}, {r0['date']}.",
    ]
    other = [r["other_cpu"] for r in records if r.get("other_cpu") is not None]
    if other:
        lines[0] += f" Other processes used at most {max(other):.0%} of the CPUs during any row."
    plain = [r for r in records if r["shape"] not in SWEEPS]
    by_shape = _groups(
        plain, lambda r: (r["shape"], r["B"], r["C"], r["K"], r["H"], r["W"], r["dtype"])
    )
    for (label, *_, dtype), rows in by_shape.items():
        title = (
            f"**{dims_text(rows[0])}**" if "=" in label else f"**{label}** ({dims_text(rows[0])})"
        )
        lines += ["", f"{title}, {dtype}:", ""]
        lines += _md(list(COLUMNS), [[cell(r) for cell in COLUMNS.values()] for r in rows])
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
            ms = {r["provider"]: f"{r['median_ms']:.3g}" for r in at}
            table.append(
                [str(x), *(ms.get(p, "n/a") for p in providers), f"{at[0]['floor_ms']:.3g}"]
            )
        lines += ["", f"**{sweep}**, {op} {mode}, {dtype} ({fixed}), median ms:", ""]
        lines += _md([axis, *providers, "roofline floor"], table)
    return "\n".join(lines) + "\n"
