"""The sweep plot of the kernel benchmark: median time against the number of
classes K (sweep-k) and against the number of pixels N (sweep-n), one line per
provider with its 20-80% band, one row of panels per op, mode and dtype, and
the roofline floor dashed."""

from __future__ import annotations

from pathlib import Path

from kernel_cases import MODES, OPS, SWEEPS
from report import PROVIDER_ORDER, sweep_x


def _fixed(sweep: str, rec: dict) -> str:
    if sweep == "sweep-k":
        return f"B={rec['B']}, C={rec['C']}, {rec['H']}x{rec['W']}"
    return f"B={rec['B']}, C={rec['C']}, K={rec['K']}"


def plot_sweeps(records: list[dict], path: Path) -> None:
    """Write the PNG; records that are not from a sweep are ignored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [r for r in records if r["shape"] in SWEEPS]
    if not swept:
        raise ValueError("--plot: no sweep-k or sweep-n records to plot")
    sweeps = [s for s in SWEEPS if any(r["shape"] == s for r in swept)]
    rows = sorted(
        {(r["op"], r["mode"], r["dtype"]) for r in swept},
        key=lambda k: (OPS.index(k[0]), MODES.index(k[1]), k[2]),
    )
    fig, axes = plt.subplots(
        len(rows),
        len(sweeps),
        figsize=(6 * len(sweeps), 4 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for i, (op, mode, dtype) in enumerate(rows):
        for j, sweep in enumerate(sweeps):
            ax = axes[i][j]
            here = [
                r
                for r in swept
                if r["shape"] == sweep and (r["op"], r["mode"], r["dtype"]) == (op, mode, dtype)
            ]
            if not here:
                ax.set_visible(False)
                continue
            for provider in [p for p in PROVIDER_ORDER if any(r["provider"] == p for r in here)]:
                pts = sorted(
                    (sweep_x(sweep, r), r["median_ms"], r["q20_ms"], r["q80_ms"])
                    for r in here
                    if r["provider"] == provider
                )
                xs, med, lo, hi = zip(*pts, strict=True)
                ax.plot(xs, med, marker="o", label=provider)
                ax.fill_between(xs, lo, hi, alpha=0.2)
            floor = sorted({(sweep_x(sweep, r), r["floor_ms"]) for r in here})
            ax.plot(*zip(*floor, strict=True), "k--", linewidth=1, label="roofline floor")
            ax.set_xscale("log", base=2)
            ax.set_xticks([x for x, _ in floor], [str(x) for x, _ in floor])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("K (classes)" if sweep == "sweep-k" else "N = H*W (pixels)")
            ax.set_ylabel("median ms")
            ax.set_title(f"{op} {mode}, {dtype} ({_fixed(sweep, here[0])})", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    r0 = swept[0]
    threads = f", {r0['threads']} threads" if r0["device"] == "cpu" else ""
    fig.suptitle(
        f"{r0['device_name']}{threads}; torch {r0['torch_version']}; commit {r0['commit']}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
