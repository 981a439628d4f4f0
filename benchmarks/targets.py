"""The whole classifier's CPU rows against the targets of issue 24, as a
markdown table: forward at least 1.0x eager and torch.compile; forward and
backward at least 2x eager and 1.5x compile; peak memory at most 0.6x
eager's. For each row that misses a time target, the share of its roofline
the extension would need to meet it: the provider it is judged against runs
at p% of the same floor, so r times that provider's speed is r * p% of it.

    python benchmarks/targets.py [results.json ...]

Without arguments it reads the committed CPU results
(benchmarks/results/cpu_kernels*.json); the table in docs/benchmarks.md is
its output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from report import md_table, ratio_text

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_FILES = ("cpu_kernels.json", "cpu_kernels_b8.json", "cpu_kernels_amp.json")
DEFAULT_FILES += ("cpu_kernels_cac.json",)
WHOLE = ("classifier", "cac")  # the ops that are a whole classifier
# mode -> {baseline provider: the speed-up the extension must reach}
TIME_TARGETS = {"fwd": {"eager": 1.0, "compile": 1.0}, "fwd_bwd": {"eager": 2.0, "compile": 1.5}}
PEAK_TARGET = 0.6  # the extension's peak memory over eager's, at most
COLUMNS = [
    "op",
    "shape",
    "precision",
    "mode",
    "extension ms",
    "vs eager",
    "vs compile",
    "peak vs eager",
    "% roofline",
    "unsteady",
    "targets",
    "needed % roofline",
]


def load(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        records += json.loads(path.read_text())
    return records


def _key(rec: dict) -> tuple:
    return (
        rec["op"],
        rec["shape"],
        rec["B"],
        rec["C"],
        rec["K"],
        rec["H"],
        rec["W"],
        rec["dtype"],
        rec["mode"],
    )


def shape_text(rec: dict) -> str:
    """The named shape, or a sweep's point: "sweep-k (K=19)"."""
    if rec["shape"] == "sweep-k":
        return f"sweep-k (K={rec['K']})"
    if rec["shape"] == "sweep-n":
        return f"sweep-n ({rec['H']}x{rec['W']})"
    return rec["shape"]


def verdicts(records: list[dict]) -> list[dict]:
    """One entry per whole-classifier row group with an extension row, in the
    order the records come: its numbers, the targets met or missed, and the
    roofline share each missed time target would take."""
    groups: dict[tuple, dict[str, dict]] = {}
    for rec in records:
        if rec["op"] in WHOLE and rec["mode"] in TIME_TARGETS:
            groups.setdefault(_key(rec), {})[rec["provider"]] = rec
    out = []
    for key, by_provider in groups.items():
        op, dtype, mode = key[0], key[-2], key[-1]
        ext = by_provider.get("extension")
        if ext is None:
            continue
        missed, needed = [], []
        for base, target in TIME_TARGETS[mode].items():
            row = by_provider.get(base)
            if row is None:
                continue
            if ext["median_ms"] * target > row["median_ms"]:
                missed.append(f"{target:g}x {base}")
                needed.append(f"{target * row['pct_roofline']:.0f}% ({target:g}x {base})")
        eager = by_provider.get("eager")
        peak = None
        if eager is not None and ext.get("peak_mem_bytes") and eager.get("peak_mem_bytes"):
            peak = ext["peak_mem_bytes"] / eager["peak_mem_bytes"]
        if peak is not None and peak > PEAK_TARGET:
            missed.append("peak")
        out.append(
            {
                "op": op,
                "shape": shape_text(ext),
                "precision": dtype,
                "mode": mode,
                "ms": ext["median_ms"],
                "vs_eager": ext["speedup_vs_eager"],
                "vs_compile": ext.get("speedup_vs_compile"),
                "peak": peak,
                "pct_roofline": ext["pct_roofline"],
                "unsteady": [p for p, r in by_provider.items() if r.get("unsteady")],
                "missed": missed,
                "needed": needed,
            }
        )
    return out


def markdown(entries: list[dict]) -> str:
    rows = [
        [
            e["op"],
            e["shape"],
            e["precision"],
            e["mode"],
            f"{e['ms']:.3g}",
            ratio_text(e["vs_eager"]),
            ratio_text(e["vs_compile"]),
            ratio_text(e["peak"]),
            f"{e['pct_roofline']:.0f}%",
            ", ".join(e["unsteady"]),
            "met" if not e["missed"] else "missed: " + ", ".join(e["missed"]),
            "; ".join(e["needed"]),
        ]
        for e in entries
    ]
    return "\n".join(md_table(COLUMNS, rows)) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="results JSON files")
    args = parser.parse_args(argv)
    paths = args.files or [RESULTS / name for name in DEFAULT_FILES]
    for path in paths:
        if not path.is_file():
            parser.error(f"no results file {path}")
    print(markdown(verdicts(load(paths))), end="")


if __name__ == "__main__":
    main()
