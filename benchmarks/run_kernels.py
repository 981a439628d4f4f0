"""Side-by-side benchmark of the condnet kernels: PyTorch eager, torch.compile,
the compiled extension, Triton and the released model's formulation, on the
same random inputs in one process.

    python benchmarks/run_kernels.py [--device cpu|cuda] [--dtype float32,bfloat16,...]
        [--shapes ade,pc59,cityscapes,sweep-k,sweep-n,B=..,C=..,K=..,H=..,W=..]
        [--ops class_pool,dynamic_classify,project,classifier] [--sweep-ops ...]
        [--mode fwd,fwd_bwd]
        [--providers eager,compile,extension,triton,released] [--quick]
        [--budget SECONDS] [--retries N] [--json FILE] [--markdown FILE] [--plot FILE]

Each row: median time with 20%/80% quantiles; speedup against eager and
against compile; achieved GB/s and TFLOP/s under the work model of
kernel_cases.work; % of the roofline floor max(bytes / copy bandwidth,
FLOPs / matmul rate), both ceilings measured in the same run; and peak memory
above what existed before the call (memory.py). Progress goes to stderr, one
line per row; the table to stdout.

CPU timings are only as good as the machine is quiet. Each record keeps
other_cpu, the share of all CPUs that other processes used while the row was
timed; a CPU row above 10% is measured again once the machine is quiet
(--retries times at most, 15 minutes of waiting per run at most), and the
least disturbed timing is kept.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
from kernel_cases import (
    DTYPES,
    MODES,
    OPS,
    SWEEPS,
    Case,
    expand_shape,
    make_inputs,
    precision,
    split_shape_specs,
    work,
)
from memory import peak_memory
from providers import PROVIDERS, build, why_not
from report import environment, markdown, text_table
from timing import QuietWait, Timing, measure, measure_ceilings, settle_cpu_allocator

# Largest relative difference from eager's forward outputs that is not reported.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.bfloat16: 3e-2,
    torch.float16: 5e-3,
}


def _csv(choices):
    """A comma-separated list of choices; argparse names the option in errors."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"invalid {', '.join(map(repr, bad)) or 'empty list'}; "
                f"choose from {', '.join(choices)}"
            )
        return items

    return parse


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    p.add_argument(
        "--dtype",
        type=_csv(DTYPES),
        help="default: bfloat16 on cuda, float32 on cpu; amp-bfloat16/amp-float16: 16-bit "
        "features, float32 parameters, under torch.autocast (mixed-precision training)",
    )
    p.add_argument(
        "--shapes",
        action="append",
        help="comma-separated: ade, pc59, cityscapes, sweep-k, sweep-n or B=..,C=..,K=..,H=..,W=.. "
        "(default: ade)",
    )
    p.add_argument("--ops", type=_csv(OPS), default=list(OPS))
    p.add_argument("--sweep-ops", type=_csv(OPS), help="ops run on the sweeps (default: --ops)")
    p.add_argument("--mode", type=_csv(MODES), default=list(MODES))
    p.add_argument("--providers", type=_csv(list(PROVIDERS)), default=list(PROVIDERS))
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (CI)")
    p.add_argument(
        "--budget",
        type=float,
        help="seconds of timed calls per row, after at least 5 (default 1; --quick: 0.02, 3)",
    )
    p.add_argument(
        "--retries",
        type=int,
        help="CPU: times a row disturbed by other processes is measured again (default 2; "
        "--quick: 0)",
    )
    p.add_argument("--json", type=Path, help="write the records as a JSON list")
    p.add_argument("--markdown", type=Path, help="write the tables as markdown")
    p.add_argument("--plot", type=Path, help="write a PNG of the sweeps (needs sweep-k/sweep-n)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    if args.budget is not None and args.budget < 0:
        p.error("--budget: must be >= 0 seconds")
    if args.retries is not None and args.retries < 0:
        p.error("--retries: must be >= 0")
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    args.dtype = args.dtype or (["bfloat16"] if args.device == "cuda" else ["float32"])
    specs = [s for text in args.shapes or ["ade"] for s in split_shape_specs(text)]
    if not specs:
        p.error("--shapes: empty list")
    try:
        args.shapes = [x for s in specs for x in expand_shape(s, args.device, args.quick)]
    except ValueError as exc:
        p.error(str(exc))
    if args.plot and not any(label in SWEEPS for label, _ in args.shapes):
        p.error("--plot: draws the sweeps; add sweep-k and/or sweep-n to --shapes")
    return args


def _max_rel_err(outs, refs) -> float:
    return max(
        ((o.float() - r.float()).abs().max() / r.float().abs().max().clamp_min(1e-30)).item()
        for o, r in zip(outs, refs, strict=True)
    )


def _timed(fn, device, budget: float, reps: dict, retries: int, quiet: QuietWait) -> Timing:
    """measure(fn); on the CPU, measured again (at most ``retries`` times)
    after the machine quiets when other processes used more than
    quiet.threshold of the CPUs meanwhile. Keeps the least disturbed timing."""
    best = measure(fn, device, budget_s=budget, **reps)
    for _ in range(retries if device.type == "cpu" else 0):
        if (best.other_cpu or 0) <= quiet.threshold:
            break
        print(
            f"#   other processes used {best.other_cpu:.0%} of the CPUs; measuring again "
            "once the machine is quiet",
            file=sys.stderr,
        )
        if not quiet():
            print("#   the time for waiting is spent; keeping this timing", file=sys.stderr)
            break
        t = measure(fn, device, budget_s=budget, **reps)
        if (t.other_cpu or 0) < (best.other_cpu or 0):
            best = t
    return best


def _plan(args, device) -> list[tuple[Case, list]]:
    """Every case with the providers that will run it; says once per provider
    and reason why one is skipped."""
    plan, said = [], set()
    for dtype_name in args.dtype:
        for label, dims in args.shapes:
            ops = (args.sweep_ops or args.ops) if label in SWEEPS else args.ops
            for op in ops:
                for mode in args.mode:
                    dtype, amp = precision(dtype_name)
                    case = Case(op, mode, dims, dtype, device, label, amp=amp)
                    runs = []
                    for name in args.providers:
                        why = why_not(PROVIDERS[name], case)
                        if why is None:
                            runs.append(PROVIDERS[name])
                        elif (name, why) not in said:
                            said.add((name, why))
                            print(f"# skipping {name}: {why}", file=sys.stderr)
                    plan.append((case, runs))
    return plan


def _record(case, provider, t, floor_s, n_bytes, flops, env) -> dict:
    B, C, K, H, W = case.dims
    return {
        "op": case.op,
        "provider": provider.name,
        **{k: env[k] for k in ("device", "device_name")},
        "dtype": case.precision,
        "shape": case.label,
        **dict(zip("BCKHW", (B, C, K, H, W), strict=True)),
        "mode": case.mode,
        "median_ms": t.median_ms,
        "q20_ms": t.q20_ms,
        "q80_ms": t.q80_ms,
        "reps": t.reps,
        "speedup_vs_eager": None,
        "speedup_vs_compile": None,
        "gbps": n_bytes / t.median_ms / 1e6,
        "tflops": flops / t.median_ms / 1e9,
        "pct_roofline": 100 * floor_s * 1e3 / t.median_ms,
        "floor_ms": floor_s * 1e3,
        **env,
    }


def run(args, on_progress=None) -> list[dict]:
    """All rows of the run, as records; on_progress(records) after each case."""
    device = torch.device(args.device)
    env = environment(device)
    quick = args.quick
    budget = args.budget if args.budget is not None else (0.02 if quick else 1.0)
    reps = {"warmup": 1, "min_reps": 3} if quick else {"warmup": 2, "min_reps": 5}
    plan = _plan(args, device)
    quiet = QuietWait()
    settle_cpu_allocator()
    total, done, records, ceilings = sum(len(r) for _, r in plan), 0, [], {}
    for case, providers in plan:
        if case.dtype not in ceilings:
            ceil = ceilings[case.dtype] = measure_ceilings(device, case.dtype, quick=quick)
            print(
                f"# {env['device_name']}: copy {ceil.bytes_per_s / 1e9:.1f} GB/s, "
                f"{case.dtype} matmul {ceil.flops_per_s / 1e12:.3f} TFLOP/s",
                file=sys.stderr,
            )
        ceil = ceilings[case.dtype]
        n_bytes, flops = work(case)
        floor_s = max(n_bytes / ceil.bytes_per_s, flops / ceil.flops_per_s)
        inputs = make_inputs(case)
        group, eager_outs = [], None
        for provider in providers:
            fn = build(provider, case, inputs)
            err = None
            if case.mode == "fwd":  # the first call also checks the outputs against eager's
                outs = fn()
                if provider.name == "eager":
                    eager_outs = outs
                elif eager_outs is not None:
                    err = _max_rel_err(outs, eager_outs)
                del outs
            t = _timed(fn, device, budget, reps, args.retries, quiet)
            rec = _record(case, provider, t, floor_s, n_bytes, flops, env)
            rec["max_rel_err_vs_eager"] = err
            rec["other_cpu"] = t.other_cpu
            rec["peak_mem_bytes"] = peak_memory(fn, device)
            group.append(rec)
            done += 1
            print(
                f"[{done}/{total}] {case.op} {case.mode} {case.label} "
                f"B={case.dims[0]} K={case.dims[2]} N={case.dims[3] * case.dims[4]} "
                f"{rec['dtype']} {provider.name}: {t.median_ms:.3f} ms "
                f"({t.q20_ms:.3f}-{t.q80_ms:.3f}), peak {rec['peak_mem_bytes'] / 2**20:.1f} MiB"
                + (
                    f", other work {rec['other_cpu']:.0%}" if (rec["other_cpu"] or 0) > 0.05 else ""
                ),
                file=sys.stderr,
                flush=True,
            )
            if err is not None and err > TOLERANCE[case.dtype]:
                print(f"#   WARNING: outputs differ from eager's by {err:.2e}", file=sys.stderr)
            del fn
        base = {r["provider"]: r["median_ms"] for r in group}
        for rec in group:
            for ref in ("eager", "compile"):
                if ref in base:
                    rec[f"speedup_vs_{ref}"] = base[ref] / rec["median_ms"]
        records.extend(group)
        del inputs, eager_outs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if on_progress:
            on_progress(records)
    return records


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)

    def save(records):  # after every case, so that a long run that dies keeps its rows
        if args.json:
            _write(args.json, json.dumps(records, indent=1) + "\n")

    records = run(args, on_progress=save)
    save(records)
    busy = [r for r in records if (r["other_cpu"] or 0) > 0.1]
    if busy and busy[0]["device"] == "cpu":
        print(
            f"# WARNING: {len(busy)} of {len(records)} rows ran while other processes used "
            "over 10% of the CPUs; rerun on a quiet machine before trusting them",
            file=sys.stderr,
        )
    print(text_table(records))
    if args.markdown:
        _write(args.markdown, markdown(records))
    if args.plot:
        from plot import plot_sweeps

        plot_sweeps(records, args.plot)
    return records


if __name__ == "__main__":
    main()
