"""Side-by-side benchmark of the condnet kernels: PyTorch eager, torch.compile,
the compiled extension, Triton and the released model's formulation, on the
same random inputs in one process.

    python benchmarks/run_kernels.py [--device cpu|cuda] [--dtype float32,bfloat16,...]
        [--shapes ade,ade-b8,pc59,cityscapes,sweep-k,sweep-n,B=..,C=..,K=..,H=..,W=..]
        [--ops class_pool,dynamic_classify,project,classifier,cac] [--sweep-ops ...]
        [--mode fwd,fwd_bwd] [--providers eager,compile,extension,triton,released]
        [--sweep-providers ...] [--repeat N] [--sweep-repeat N] [--quick]
        [--budget SECONDS] [--retries N] [--json FILE] [--markdown FILE] [--plot FILE]

Each row: median time with 20%/80% quantiles; speedup against eager and
against compile; achieved GB/s and TFLOP/s under the work model of
kernel_cases.work; % of the roofline floor max(bytes / memory ceiling,
FLOPs / matmul ceiling), the ceilings the best of several measurements in
the same run (ceilings.py); and peak memory above what existed before the
call (memory.py). Progress goes to stderr, one line per row; the table to
stdout.

Repeats: each row is measured --repeat times (sweep rows --sweep-repeat
times), interleaved: every row once, then every row again, so that a slow
phase of the machine lands on different rows, not on all repeats of one.
A row reports the median of its repeats' medians and their spread; one
whose repeats differ by more than 15% is flagged, as is one above 100% of
its roofline (rows.py).

CPU timings are only as good as the machine is quiet. Each record keeps
other_cpu, the share of all CPUs that other processes used while the row was
timed; a CPU row above 10% is measured again once the machine is quiet
(--retries times at most, 15 minutes of waiting per run at most), and the
least disturbed timing is kept. On the CPU the run keeps malloc's memory
(timing.steady_cpu_allocator; run as a script, it restarts itself with
glibc's tcache off for that), and the warm-up lasts until a call no longer
page-faults, so that timed calls do not pay for first touches of memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
from ceilings import RunCeilings
from kernel_cases import (
    DTYPES,
    MODES,
    OPS,
    SHAPES,
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
from rows import ROOFLINE_LIMIT, SPREAD_LIMIT, add_speedups, record
from timing import QuietWait, Timing, measure, restart_without_tcache, steady_cpu_allocator

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
        help=f"comma-separated: {', '.join([*SHAPES, *SWEEPS])} or B=..,C=..,K=..,H=..,W=.. "
        "(default: ade)",
    )
    p.add_argument("--ops", type=_csv(OPS), default=list(OPS))
    p.add_argument("--sweep-ops", type=_csv(OPS), help="ops run on the sweeps (default: --ops)")
    p.add_argument("--mode", type=_csv(MODES), default=list(MODES))
    p.add_argument("--providers", type=_csv(list(PROVIDERS)), default=list(PROVIDERS))
    p.add_argument(
        "--sweep-providers",
        type=_csv(list(PROVIDERS)),
        help="providers run on the sweeps (default: --providers)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        help="times each row of the named and explicit shapes is measured, interleaved with "
        "the other rows (default 2; --quick: 1)",
    )
    p.add_argument(
        "--sweep-repeat", type=int, default=1, help="the same for the sweeps' rows (default 1)"
    )
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
    if args.repeat is None:
        args.repeat = 1 if args.quick else 2
    for name in ("repeat", "sweep_repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be at least 1")
    args.dtype = args.dtype or (["bfloat16"] if args.device == "cuda" else ["float32"])
    specs = [s for text in args.shapes or ["ade"] for s in split_shape_specs(text)]
    if not specs:
        p.error("--shapes: empty list")
    try:
        args.shapes = [x for s in specs for x in expand_shape(s, args.quick)]
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


def passes(repeats: list[int]) -> list[list[int]]:
    """The interleaved order of a run: pass r measures, in plan order, every
    case still owed a repeat. ``[2, 1, 2]`` -> ``[[0, 1, 2], [0, 2]]``."""
    return [[i for i, n in enumerate(repeats) if n > r] for r in range(max(repeats, default=0))]


def _plan(args, device) -> list[tuple[Case, list, int]]:
    """Every case with the providers that will run it and its repeat count;
    says once per provider and reason why one is skipped."""
    plan, said = [], set()
    for dtype_name in args.dtype:
        for label, dims in args.shapes:
            swept = label in SWEEPS
            ops = (args.sweep_ops or args.ops) if swept else args.ops
            names = (args.sweep_providers or args.providers) if swept else args.providers
            for op in ops:
                for mode in args.mode:
                    dtype, amp = precision(dtype_name)
                    case = Case(op, mode, dims, dtype, device, label, amp=amp)
                    runs = []
                    for name in names:
                        why = why_not(PROVIDERS[name], case)
                        if why is None:
                            runs.append(PROVIDERS[name])
                        elif (name, why) not in said:
                            said.add((name, why))
                            print(f"# skipping {name}: {why}", file=sys.stderr)
                    plan.append((case, runs, args.sweep_repeat if swept else args.repeat))
    return plan


def _first_look(provider, case, fn, device, eager_outs) -> tuple[dict, object]:
    """What a row needs once, not per repeat: the forward's largest relative
    difference from eager's outputs (eager's own outputs are kept for the
    others) and the call's peak memory."""
    err = None
    if case.mode == "fwd":
        outs = fn()
        if provider.name == "eager":
            eager_outs = outs
        elif eager_outs is not None:
            err = _max_rel_err(outs, eager_outs)
        del outs
    if err is not None and err > TOLERANCE[case.dtype]:
        print(f"#   WARNING: outputs differ from eager's by {err:.2e}", file=sys.stderr)
    return {"max_rel_err_vs_eager": err, "peak_mem_bytes": peak_memory(fn, device)}, eager_outs


def _records(plan, timings, first, ceilings, env) -> list[dict]:
    """The records of every row measured so far, in plan order."""
    records = []
    for i, (case, providers, _) in enumerate(plan):
        group = [
            record(case, p.name, timings[i, p.name], ceilings.for_case(case), work(case), env)
            | first[i, p.name]
            for p in providers
            if (i, p.name) in timings
        ]
        add_speedups(group)
        records.extend(group)
    return records


def run(args, on_progress=None) -> list[dict]:
    """All rows of the run, as records; on_progress(records) after each case."""
    device = torch.device(args.device)
    env = environment(device)
    quick = args.quick
    budget = args.budget if args.budget is not None else (0.02 if quick else 1.0)
    reps = {"warmup": 1, "min_reps": 3} if quick else {"warmup": 2, "min_reps": 5}
    plan = _plan(args, device)
    order = passes([n for *_, n in plan])
    quiet, ceilings = QuietWait(), RunCeilings(device, quick)
    timings: dict[tuple[int, str], list] = {}
    first: dict[tuple[int, str], dict] = {}
    total, done = sum(len(plan[i][1]) for step in order for i in step), 0
    with steady_cpu_allocator(device) as allocator:
        env["cpu_allocator"] = allocator
        for r, step in enumerate(order):
            for line in ceilings.measure([plan[i][0] for i in step]):
                print(f"# {env['device_name']}, pass {r + 1}: {line}", file=sys.stderr)
            for i in step:
                case, providers, repeats = plan[i]
                inputs, eager_outs = make_inputs(case), None
                for provider in providers:
                    fn = build(provider, case, inputs)
                    if (i, provider.name) not in first:
                        first[i, provider.name], eager_outs = _first_look(
                            provider, case, fn, device, eager_outs
                        )
                    t = _timed(fn, device, budget, reps, args.retries, quiet)
                    timings.setdefault((i, provider.name), []).append(t)
                    done += 1
                    _progress(done, total, case, provider, t, r, repeats, first[i, provider.name])
                    del fn
                del inputs, eager_outs
                gc.collect()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if on_progress:
                    on_progress(_records(plan, timings, first, ceilings, env))
    return _records(plan, timings, first, ceilings, env)


def _progress(done, total, case, provider, t, r, repeats, first) -> None:
    B, _, K, H, W = case.dims
    peak = first["peak_mem_bytes"]
    print(
        f"[{done}/{total}] {case.op} {case.mode} {case.label} B={B} K={K} N={H * W} "
        f"{case.precision} {provider.name}"
        + (f" (repeat {r + 1}/{repeats})" if repeats > 1 else "")
        + f": {t.median_ms:.3f} ms ({t.q20_ms:.3f}-{t.q80_ms:.3f}), "
        f"peak {peak / 2**20:.1f} MiB"
        + (f", other work {t.other_cpu:.0%}" if (t.other_cpu or 0) > 0.05 else "")
        + (f", {t.page_faults:.0f} page faults a call" if (t.page_faults or 0) >= 1 else ""),
        file=sys.stderr,
        flush=True,
    )


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
    unsteady = [r for r in records if r["unsteady"]]
    if unsteady:
        print(
            f"# WARNING: {len(unsteady)} rows' repeats differ by more than "
            f"{SPREAD_LIMIT:.0%} (flagged 'unsteady'): the method, not the kernel, decided them",
            file=sys.stderr,
        )
    over = [r for r in records if r["over_roofline"]]
    if over:
        print(
            f"# HARNESS BUG: {len(over)} rows above {ROOFLINE_LIMIT:.0f}% of their roofline "
            "(flagged 'over_roofline'): a ceiling is too low or a work model counts too much",
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
    restart_without_tcache()
    main()
