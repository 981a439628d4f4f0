"""The work-model tables of benchmarks/NOTES.md, printed from
kernel_cases.work: for each named shape, a whole classifier (CondNet's
``classifier`` or ``cac``) as users train it (amp-bfloat16: bf16 features,
float32 parameters) and in float32, forward and forward+backward, with the
bytes that cannot be avoided, the shares of x and of the parameters (CondNet:
the projection weight) in them, the FLOPs, and the floors on the lent H200.

    python benchmarks/roofline_table.py [classifier|cac]
"""

from __future__ import annotations

import sys

import torch
from kernel_cases import MODES, SHAPES, Case, parameter_bytes, work

# The H200 as lent (../shared/DESIGN.md section 2): measured, then on paper.
# float32 products run on FMA units (no TF32): 67 TFLOP/s on paper, not
# measured, so both columns use it.
COPY_BYTES_PER_S = (4.3e12, 4.8e12)
MATMUL_FLOPS_PER_S = {"amp-bfloat16": (790e12, 989e12), "float32": (67e12, 67e12)}
# How often the work model reads x in each mode (kernel_cases.work), both ops.
X_READS = {"fwd": 2, "fwd_bwd": 5}
PRECISIONS = (("amp-bfloat16", torch.bfloat16, True), ("float32", torch.float32, False))


WHOLE_CLASSIFIERS = ("classifier", "cac")


def rows(op: str = "classifier") -> list[list[str]]:
    if op not in WHOLE_CLASSIFIERS:
        raise ValueError(f"op must be one of {', '.join(WHOLE_CLASSIFIERS)}; got {op!r}")
    out = []
    for precision, dtype, amp in PRECISIONS:
        for name, dims in SHAPES.items():
            B, C, K, H, W = dims
            x = B * C * H * W * torch.finfo(dtype).bits // 8
            for mode in MODES:
                case = Case(op, mode, dims, dtype, torch.device("cpu"), name, amp=amp)
                weight = parameter_bytes(case)
                n_bytes, flops = work(case)
                weight_reads = 1 if mode == "fwd" else 3  # read; read again, gradient written
                rates = MATMUL_FLOPS_PER_S[precision]
                floors = [
                    max(n_bytes / bw, flops / mm) * 1e6
                    for bw, mm in zip(COPY_BYTES_PER_S, rates, strict=True)
                ]
                bound = "bytes" if n_bytes / COPY_BYTES_PER_S[0] > flops / rates[0] else "FLOPs"
                out.append(
                    [
                        name,
                        f"B={B}, K={K}, {H}x{W}",
                        precision,
                        mode,
                        f"{x / 1e6:.1f}",
                        f"{n_bytes / 1e6:.0f}",
                        f"{X_READS[mode] * x / n_bytes:.0%}",
                        f"{weight_reads * weight / n_bytes:.0%}",
                        f"{flops / 1e9:.1f}",
                        f"{floors[0]:.0f} / {floors[1]:.0f}",
                        bound,
                    ]
                )
    return out


HEAD = [
    "shape",
    "dims (C=512)",
    "precision",
    "mode",
    "x MB",
    "MB moved",
    "x's share",
    "weight's share",
    "GFLOP",
    "floor us (measured / paper)",
    "bound by",
]


def table(op: str = "classifier") -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(op)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(*sys.argv[1:2]), end="")
