"""Side-by-side benchmark of the condnet kernels against PyTorch eager and
torch.compile of the reference, with roofline fractions.

    python benchmarks/run_kernels.py [--device cpu|cuda] [--dtype float32,bfloat16]
        [--shapes ade,pc59,cityscapes,B=..,C=..,K=..,H=..,W=..]
        [--ops class_pool,dynamic_classify,classifier] [--mode fwd,fwd_bwd]
        [--providers eager,compile,extension] [--quick] [--json FILE] [--markdown FILE]

Each row: median time with 20%/80% quantiles, speedup against eager and
against compile, achieved GB/s and TFLOP/s under the work model of
kernel_cases.work, and the % of the roofline floor max(bytes / copy bandwidth,
FLOPs / matmul rate), both ceilings measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
from kernel_cases import MODES, OPS, PROVIDERS, Case, available, build, make_inputs, parse_shape
from kernel_cases import work as work_model
from timing import measure, measure_ceilings, peak_memory

import condnet

COLUMNS = [
    ("op", "{}"),
    ("mode", "{}"),
    ("shape", "{}"),
    ("dtype", "{}"),
    ("provider", "{}"),
    ("median_ms", "{:.3f}"),
    ("q20_ms", "{:.3f}"),
    ("q80_ms", "{:.3f}"),
    ("speedup_vs_eager", "{:.2f}x"),
    ("speedup_vs_compile", "{:.2f}x"),
    ("gbps", "{:.1f}"),
    ("tflops", "{:.2f}"),
    ("pct_roofline", "{:.0f}%"),
    ("peak_mem_bytes", "{}"),
]


def _csv(choices):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if choices is not None and t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not among {', '.join(choices)}")
        return items

    return parse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    p.add_argument(
        "--dtype",
        type=_csv(["float32", "float16", "bfloat16", "float64"]),
        default=None,
        help="default: bfloat16 on cuda, float32 on cpu",
    )
    p.add_argument(
        "--shapes",
        type=_csv(None),
        default=None,
        help="names (ade, pc59, cityscapes, tiny) or B=..,C=..,K=..,H=..,W=..",
    )
    p.add_argument("--ops", type=_csv(OPS), default=list(OPS))
    p.add_argument("--mode", type=_csv(MODES), default=list(MODES))
    p.add_argument("--providers", type=_csv(PROVIDERS), default=list(PROVIDERS))
    p.add_argument("--quick", action="store_true", help="tiny shape, short timing budget")
    p.add_argument("--json", type=Path, help="write the records as a JSON list")
    p.add_argument("--markdown", type=Path, help="write the table as markdown")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    args.dtype = args.dtype or (["bfloat16"] if args.device == "cuda" else ["float32"])
    args.shapes = args.shapes or (["tiny"] if args.quick else ["ade"])
    try:
        args.shapes = [parse_shape(s) for s in args.shapes]
    except ValueError as exc:
        p.error(str(exc))
    return args


def environment(device: torch.device) -> dict:
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name = f"{name} ({torch.get_num_threads()} threads)"
    return {
        "device": device.type,
        "device_name": name,
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "condnet_version": condnet.__version__,
        "commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run(args) -> list[dict]:
    device = torch.device(args.device)
    env = environment(device)
    budget = 0.3 if args.quick else 2.0
    records = []
    for dtype_name in args.dtype:
        dtype = getattr(torch, dtype_name)
        ceil = measure_ceilings(device, dtype, quick=args.quick)
        print(
            f"# {env['device_name']}: copy {ceil.bytes_per_s / 1e9:.0f} GB/s, "
            f"{dtype_name} matmul {ceil.flops_per_s / 1e12:.2f} TFLOP/s",
            file=sys.stderr,
        )
        for label, dims in args.shapes:
            for op in args.ops:
                for mode in args.mode:
                    case = Case(op, mode, dims, dtype, device)
                    n_bytes, flops = work_model(case)
                    floor_s = max(n_bytes / ceil.bytes_per_s, flops / ceil.flops_per_s)
                    group = []
                    for provider in args.providers:
                        why = available(provider, case)
                        if why:
                            print(f"  skip {provider}: {why}", file=sys.stderr)
                            continue
                        print(
                            f"  {op} {mode} {label} {dtype_name} {provider} ...",
                            end="",
                            file=sys.stderr,
                            flush=True,
                        )
                        fn = build(provider, case, make_inputs(case))
                        t = measure(fn, device, budget_s=budget)
                        B, C, K, H, W = dims
                        rec = {
                            "op": op,
                            "provider": provider,
                            "dtype": dtype_name,
                            "shape": label,
                            "B": B,
                            "C": C,
                            "K": K,
                            "H": H,
                            "W": W,
                            "mode": mode,
                            "median_ms": t.median_ms,
                            "q20_ms": t.q20_ms,
                            "q80_ms": t.q80_ms,
                            "reps": t.reps,
                            "gbps": n_bytes / t.median_ms / 1e6,
                            "tflops": flops / t.median_ms / 1e9,
                            "pct_roofline": 100 * floor_s * 1e3 / t.median_ms,
                            "peak_mem_bytes": peak_memory(fn, device),
                            **env,
                        }
                        print(f" {t.median_ms:.3f} ms", file=sys.stderr)
                        group.append(rec)
                    base = {r["provider"]: r["median_ms"] for r in group}
                    for rec in group:
                        for ref in ("eager", "compile"):
                            rec[f"speedup_vs_{ref}"] = (
                                base[ref] / rec["median_ms"] if ref in base else None
                            )
                    records.extend(group)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return records


def table(records: list[dict], markdown: bool) -> str:
    def cell(rec, key, fmt):
        value = rec.get(key)
        return "n/a" if value is None else fmt.format(value)

    head = [name for name, _ in COLUMNS]
    rows = [[cell(r, k, f) for k, f in COLUMNS] for r in records]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*row) for row in [head, *rows])


def main(argv=None) -> None:
    args = parse_args(argv)
    records = run(args)
    print(table(records, markdown=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records, indent=1) + "\n")
    if args.markdown and records:
        r = records[0]
        header = (
            f"Device: {r['device_name']}; torch {r['torch_version']}, "
            f"triton {r['triton_version']}; condnet commit {r['commit']}; {r['date']}.\n\n"
        )
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(header + table(records, markdown=True) + "\n")


if __name__ == "__main__":
    main()
