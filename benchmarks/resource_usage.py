"""Registers, shared memory and spills of every condnet CUDA kernel, read
from ptxas (``nvcc --resource-usage``); needs nvcc, not a GPU.

    python benchmarks/resource_usage.py [--archs 80,90] [--markdown FILE]

Compiles each csrc/cuda/*.cu with the flags setup.py uses and prints one row
per (kernel, arch). The table in benchmarks/NOTES.md comes from this script.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USAGE = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def compile_log(source: Path, archs: list[str]) -> str:
    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    from torch.utils.cpp_extension import include_paths

    nvcc = Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc"
    includes = [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(nvcc),
            "-c",
            str(source),
            "-o",
            f"{tmp}/out.o",
            "-std=c++20",
            "-O3",
            "--expt-relaxed-constexpr",
            "--resource-usage",
            "-Xcompiler",
            "-fPIC",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
            *includes,
            *gencode,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"nvcc failed on {source}:\n{done.stderr[-4000:]}")
    return done.stdout + done.stderr


def demangle(names: list[str]) -> list[str]:
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    pretty = out.stdout.splitlines() if out.returncode == 0 else names
    return [
        re.sub(r"^void |\(.*$", "", p).replace("condnet::cuda::", "").replace("c10::", "")
        for p in pretty
    ]


def parse(log: str) -> list[dict]:
    rows, current = [], None
    for line in log.splitlines():
        if m := ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2)}
        elif current and (m := SPILLS.search(line)):
            current.update(
                stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3))
            )
        elif current and (m := USAGE.search(line)):
            current.update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
            rows.append(current)
            current = None
    for row, name in zip(rows, demangle([r["kernel"] for r in rows]), strict=True):
        row["kernel"] = name
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| kernel | arch | registers | static shared memory (bytes) | stack | spill stores/loads |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["kernel"], r["arch"])):
        lines.append(
            f"| `{r['kernel']}` | {r['arch']} | {r['registers']} | {r['smem']} | "
            f"{r['stack']} | {r['spill_stores']}/{r['spill_loads']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="80,90", help="compute capabilities, e.g. 80,90")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    # A kernel instantiated in several sources is listed once.
    unique = {}
    for source in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        for row in parse(compile_log(source, args.archs.split(","))):
            unique[row["kernel"], row["arch"]] = row
    rows = list(unique.values())
    table = markdown(rows)
    print(table, end="")
    if args.markdown:
        Path(args.markdown).write_text(table)
    spilled = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    return 1 if spilled else 0


if __name__ == "__main__":
    sys.exit(main())
