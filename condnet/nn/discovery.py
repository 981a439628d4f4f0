"""Finding a network's final classifier conv from one forward pass.

The classifier is the last ``nn.Conv2d`` producing the main output's K
channels that ran on the way to that output: the hooks record every conv
call's output, and the main output's autograd graph tells which of them it
depends on. An auxiliary head's classifier runs too, but the main output does
not depend on it, so it is never taken for the main one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.autograd.graph import Node

__all__ = ["ConvCall", "find_classifiers", "main_output"]

_MAIN_KEYS = ("out", "logits")  # torchvision's dict outputs, transformers' ModelOutput


@dataclass
class ConvCall:
    """One call of an ``nn.Conv2d`` during the probing forward."""

    name: str
    conv: nn.Conv2d
    node: Node  # the autograd node of its output

    def describe(self) -> str:
        c = self.conv
        kernel = "x".join(map(str, c.kernel_size))
        return f"{self.name or '<model>'}: Conv2d({c.in_channels}, {c.out_channels}, {kernel})"


def _tensors(out: object, where: str = "") -> list[tuple[str, torch.Tensor]]:
    """Every tensor of a (nested) output with its access path."""
    if isinstance(out, torch.Tensor):
        return [(where, out)]
    items: Iterable[tuple[object, object]]
    if isinstance(out, Mapping):
        items = out.items()
    elif isinstance(out, Sequence) and not isinstance(out, (str, bytes)):
        items = enumerate(out)
    else:
        return []
    found = []
    for key, value in items:
        found += _tensors(value, f"{where}[{key!r}]")
    return found


def main_output(out: object, output: str | int | None = None) -> tuple[str, torch.Tensor]:
    """``(path, tensor)`` of the main logits in a model's return value.

    ``output`` names it (a key or an index); by default a tensor is itself,
    a mapping's ``"out"`` (torchvision) or ``"logits"`` (transformers) entry
    is taken, else its only 4-D tensor; a tuple or list gives its first item.
    """
    if output is not None:
        try:
            # Whatever the model returned: what cannot be indexed raises TypeError.
            value = cast(Any, out)[output]
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(
                f"output={output!r} does not select anything in the model's output "
                f"({type(out).__name__}): {exc}"
            ) from None
        path = f"[{output!r}]"
    elif isinstance(out, torch.Tensor):
        value, path = out, ""
    elif isinstance(out, Mapping):
        key = next((k for k in _MAIN_KEYS if out.get(k) is not None), None)
        if key is None:
            four_d = [(p, t) for p, t in _tensors(out) if t.dim() == 4]
            if len(four_d) != 1:
                paths = [p for p, _ in four_d]
                raise ValueError(
                    f"cannot tell which entry of the model's {type(out).__name__} output is "
                    f"the main logits (4-D tensors at {paths}); pass output=<key>"
                )
            return four_d[0]
        value, path = out[key], f"[{key!r}]"
    elif isinstance(out, Sequence) and not isinstance(out, (str, bytes)) and len(out) > 0:
        value, path = out[0], "[0]"
    else:
        raise ValueError(
            f"the model returned {type(out).__name__}; expected a tensor, a mapping or a "
            "sequence holding the (B, K, H, W) logits"
        )
    if not isinstance(value, torch.Tensor) or value.dim() != 4:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"the main output{path} must be (B, K, H, W) logits; got {got}")
    return path, value


def _ancestors(root: Node) -> set[Node]:
    """Every autograd node that ``root`` depends on, ``root`` included."""
    seen: set[Node] = set()
    stack: list[Node | None] = [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


def _default_input(model: nn.Module) -> torch.Tensor:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the model has no nn.Conv2d, so there is no classifier conv to replace")
    weight = conv.weight
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, conv.in_channels, 64, 64, generator=generator, dtype=torch.float32)
    return x.to(device=weight.device, dtype=weight.dtype)


def _needs_grad(value: object) -> object:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().requires_grad_(True)
    return value


def _probe(model: nn.Module, example_input: object) -> tuple[object, list[ConvCall]]:
    """Runs the model once in eval mode with gradients on, recording conv calls."""
    if example_input is None:
        example_input = _default_input(model)
    args: tuple[object, ...]
    kwargs: dict[str, object]
    if isinstance(example_input, torch.Tensor):
        args, kwargs = (example_input,), {}
    elif isinstance(example_input, Mapping):
        args, kwargs = (), dict(example_input)
    elif isinstance(example_input, tuple):
        args, kwargs = example_input, {}
    else:
        raise TypeError(
            "example_input must be a tensor, a tuple of positional arguments or a dict of "
            f"keyword arguments; got {type(example_input).__name__}"
        )
    # A floating input that needs grad gives every op a node, even with frozen weights.
    args = tuple(_needs_grad(a) for a in args)
    kwargs = {key: _needs_grad(value) for key, value in kwargs.items()}
    calls: list[ConvCall] = []
    names: dict[nn.Module, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            names.setdefault(module, name)

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            calls.append(ConvCall(names[module], module, output.grad_fn))

    modes = {module: module.training for module in model.modules()}
    handles = [module.register_forward_hook(record) for module in names]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            out = model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return out, calls


def _report(calls: list[ConvCall], main: set[Node], K: int, path: str) -> str:
    if not calls:
        return "no nn.Conv2d ran"
    lines = []
    for call in calls:
        on_main = "on the way to the main output" if call.node in main else "not feeding it"
        lines.append(f"  {call.describe()} ({on_main})")
    return f"convs seen (main output{path} has K={K} channels):\n" + "\n".join(lines)


def _single_call(call: ConvCall, calls: list[ConvCall], report: str) -> str:
    count = sum(c.conv is call.conv for c in calls)
    if count > 1:
        raise ValueError(
            f"the classifier conv is ambiguous: {call.name!r} ran {count} times in one forward "
            "(a shared classifier), and a conditional classifier keeps the guide logits of one "
            "call; pass target=<module name> to choose a conv.\n" + report
        )
    return call.name


def find_classifiers(
    model: nn.Module,
    example_input: object = None,
    *,
    output: str | int | None = None,
    auxiliary: bool = False,
) -> list[str]:
    """Module names of the classifier conv(s) that :func:`make_conditional` replaces.

    Runs ``model`` once on ``example_input`` (default: one 64x64 random image
    with the first conv's input channels) in eval mode, with gradients on,
    and restores each module's training flag afterwards.

    Returns the name of the last ``nn.Conv2d`` with K outputs (K = the main
    output's channels) and ``groups=1`` that ran on the way to the main output.
    Where several feed it side by side (torchvision's LR-ASPP sums
    ``low_classifier`` and ``high_classifier``), that is the one that ran last.
    With ``auxiliary=True`` it also returns, for each auxiliary branch, the last
    such conv that ran without feeding the main output (torchvision's
    ``aux_classifier``, transformers' UperNet ``auxiliary_head``).

    Raises ``ValueError``, listing every conv that ran, when no conv
    qualifies or when the one found ran more than once per forward.
    """
    out, calls = _probe(model, example_input)
    path, logits = main_output(out, output)
    K = logits.shape[1]
    if logits.grad_fn is None:
        raise ValueError(f"the main output{path} does not depend on the input or any parameter")
    main = _ancestors(logits.grad_fn)
    report = _report(calls, main, K, path)
    fits = [c for c in calls if c.conv.out_channels == K and c.conv.groups == 1]
    on_main = [c for c in fits if c.node in main]
    if not on_main:
        raise ValueError(
            "found no nn.Conv2d(C, K, k) with groups=1 on the way to the main output; "
            "pass target=<module name>.\n" + report
        )
    names = [_single_call(on_main[-1], calls, report)]
    if auxiliary:
        others = [c for c in fits if c.node not in main]
        # An auxiliary branch's classifier is an off-main candidate that no
        # other off-main candidate depends on.
        upstream = set()
        for call in others:
            upstream |= _ancestors(call.node) - {call.node}
        finals = [c for c in others if c.node not in upstream]
        if not finals:
            raise ValueError(
                "auxiliary=True, but no nn.Conv2d with K outputs ran outside the path to the "
                "main output; pass target=[...] to name the classifiers.\n" + report
            )
        names += [_single_call(call, calls, report) for call in finals]
    return names
