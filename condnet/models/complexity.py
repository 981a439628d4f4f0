"""Parameter and FLOP counts, per module.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts
the matrix products and convolutions of one forward pass (at 2 FLOPs per
multiply-accumulate, so twice the "MACs" that many papers call FLOPs) and
ignores elementwise work (norms, activations, softmax, bias adds). It cannot
see inside the fused condnet ops; :mod:`condnet.ops.flops` registers their
formulas, so the fused path counts the same FLOPs as the reference path.

The command line is ``tools/complexity.py`` (a config file, a model name or a
backbone name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# Imported for what importing it does: the condnet ops get their FLOP formulas.
import condnet.ops.flops  # noqa: F401


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameter elements of ``module`` (shared ones once)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module; got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@dataclass(frozen=True)
class ComplexityRow:
    """One module: its qualified name ("" for the whole model), nesting
    depth (0 for the whole model), class name, parameters and forward FLOPs."""

    name: str
    depth: int
    type: str
    params: int
    flops: int


def _check_shape(input_shape: object) -> tuple[int, ...]:
    if (
        not isinstance(input_shape, Sequence)
        or not input_shape
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_shape)
    ):
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive ints; got {input_shape!r}"
        )
    return tuple(input_shape)


def complexity_report(
    model: nn.Module,
    input_shape: Sequence[int] = (1, 3, 512, 512),
    device: str | torch.device = "cpu",
) -> list[ComplexityRow]:
    """Parameters and forward FLOPs of ``model`` and of each of its submodules.

    Runs one forward pass in ``eval()`` mode under ``torch.no_grad()`` on a
    random input of ``input_shape``. The model is moved to ``device`` (with
    ``"meta"`` nothing is computed, and the weights are replaced by meta
    tensors) and keeps its training mode afterwards.

    Returns:
        Rows in ``model.named_modules()`` order, the whole model first. FLOPs
        are 2 per multiply-accumulate (see the module docstring); a module
        called twice counts both calls; a module whose own forward is not
        called (its parent calls its children) gets its children's sum.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    shape = _check_shape(input_shape)
    model = model.to(device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(torch.randn(shape, device=device))
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    flops: dict[str, int] = {}

    def flops_of(name: str, module: nn.Module) -> int:
        # A module whose forward was bypassed (its parent calls its children
        # directly, as the Swin backbone does) is credited with its children's.
        if name not in flops:
            key = f"{root}.{name}" if name else root
            if key in counts:
                flops[name] = int(sum(counts[key].values()))
            else:
                flops[name] = sum(
                    flops_of(f"{name}.{child_name}" if name else child_name, child)
                    for child_name, child in module.named_children()
                )
        return flops[name]

    return [
        ComplexityRow(
            name=name,
            depth=name.count(".") + 1 if name else 0,
            type=type(module).__name__,
            params=count_parameters(module),
            flops=flops_of(name, module),
        )
        for name, module in model.named_modules()
    ]


def format_report(rows: Sequence[ComplexityRow], depth: int = 2) -> str:
    """A text table of the rows down to nesting ``depth`` (0: the total only)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be a non-negative int; got {depth!r}")
    shown = [r for r in rows if r.depth <= depth]
    labels = [
        ("  " * r.depth + (r.name.rsplit(".", 1)[-1] if r.name else "(total)")) for r in shown
    ]
    width = max([len("module"), *(len(label) for label in labels)])
    type_width = max([len("type"), *(len(r.type) for r in shown)])
    lines = [f"{'module':<{width}}  {'type':<{type_width}}  {'params (M)':>11}  {'GFLOPs':>10}"]
    for label, r in zip(labels, shown, strict=True):
        params, gflops = r.params / 1e6, r.flops / 1e9
        lines.append(f"{label:<{width}}  {r.type:<{type_width}}  {params:>11.3f}  {gflops:>10.3f}")
    lines.append("GFLOPs: 2 per multiply-accumulate; elementwise ops not counted.")
    return "\n".join(lines)
