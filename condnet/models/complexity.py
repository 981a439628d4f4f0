"""Parameter and FLOP counts, per module.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts
the matrix products and convolutions of one forward pass (at 2 FLOPs per
multiply-accumulate, so twice the "MACs" that many papers call FLOPs) and
ignores elementwise work (norms, activations, softmax, bias adds). It cannot
see inside the compiled condnet ops, so this module registers their formulas
(see :func:`register_flop_formulas`); with them the fused path counts the same
FLOPs as the reference path.

Command line::

    python -m condnet.models.complexity NAME [--shape 1,3,512,512] [--depth 2] [--device cpu]

NAME is a backbone (``resnet50_v1c``, ...) or a model name of
``condnet.models.build_model``. ``--device meta`` counts without computing.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

from condnet.ops import extension


def _bkcn(x_shape, weight_shape) -> int:
    """B*K*C*N of a condnet op from x (B, C, H, W) and a weight whose
    second-to-last dim is K: (K, C) for class_pool, (B, K, C) for dynamic_classify."""
    B, C, H, W = x_shape
    return B * weight_shape[-2] * C * H * W


def class_pool_flops(x_shape, guide_weight_shape, *args, **kwargs) -> int:
    """Guide logits 2BKCN + class pooling 2BKCN."""
    return 4 * _bkcn(x_shape, guide_weight_shape)


def dynamic_classify_flops(x_shape, weight_shape, *args, **kwargs) -> int:
    """The per-image classifier: 2BKCN."""
    return 2 * _bkcn(x_shape, weight_shape)


def class_pool_backward_flops(
    grad_guide_shape,
    grad_feats_shape,
    x_shape,
    guide_weight_shape,
    guide_shape,
    mask,
    grad_logits_shape=None,
    classifier_weight_shape=None,
    **kwargs,
) -> int:
    """2BKCN per product that the requested gradients need, as autograd of the
    reference does: dp (if class features get a gradient), the pooling and
    guide parts of dx, and dWg; plus the dynamic classifier's dx term w^T dy
    when the whole classifier's backward passes it."""
    need_x, need_w, _ = mask
    pooled = grad_feats_shape is not None
    guided = pooled or grad_guide_shape is not None
    products = (pooled and any(mask)) + (pooled and need_x) + (guided and need_x) + need_w
    flops = 2 * products * _bkcn(x_shape, guide_weight_shape)
    if need_x and grad_logits_shape is not None:
        flops += 2 * _bkcn(x_shape, classifier_weight_shape)
    return flops


def dynamic_classify_backward_flops(grad_shape, x_shape, weight_shape, mask, **kwargs) -> int:
    """2BKCN each for dx and dw."""
    need_x, need_w, _ = mask
    return 2 * (need_x + need_w) * _bkcn(x_shape, weight_shape)


def _bkjc(feats_shape) -> int:
    """B*K*(C+1)*C of the projection from class features (B, K, C)."""
    B, K, C = feats_shape
    return B * K * (C + 1) * C


def project_flops(feats_shape, weight_shape, *args, **kwargs) -> int:
    """theta = A f: 2BK(C+1)C."""
    return 2 * _bkjc(feats_shape)


def project_backward_flops(grad_shape, feats_shape, weight_shape, mask, **kwargs) -> int:
    """2BK(C+1)C each for df and dA."""
    need_f, need_w, _ = mask
    return 2 * (need_f + need_w) * _bkjc(feats_shape)


def conditional_classifier_flops(x_shape, guide_weight_shape, *args, **kwargs) -> int:
    """class_pool, the projection and dynamic_classify."""
    B, C = x_shape[:2]
    K = guide_weight_shape[0]
    pool = class_pool_flops(x_shape, guide_weight_shape)
    return pool + project_flops((B, K, C), None) + dynamic_classify_flops(x_shape, (B, K, C))


def conditional_classifier_backward_flops(
    grad_logits_shape,
    grad_guide_shape,
    grad_feats_shape,
    grad_theta_shape,
    x_shape,
    guide_weight_shape,
    guide_shape,
    feats_shape,
    proj_weight_shape,
    theta_shape,
    official,
    mask,
    **kwargs,
) -> int:
    """What its three backward steps compute: dw of the dynamic classifier,
    the projection's df and dA, class_pool's backward with the dx term w^T dy."""
    need_pool = any(mask[:3])
    flops, dtheta = 0, grad_theta_shape is not None
    if grad_logits_shape is not None and (need_pool or mask[3] or mask[4]):
        flops += 2 * _bkcn(x_shape, feats_shape)  # dw = dy x^T
        dtheta = True
    if dtheta:
        flops += project_backward_flops(None, feats_shape, None, [need_pool, mask[3], mask[4]])
    pooled = dtheta or grad_feats_shape is not None
    if need_pool:
        flops += class_pool_backward_flops(
            grad_guide_shape,
            feats_shape if pooled else None,
            x_shape,
            guide_weight_shape,
            guide_shape,
            mask[:3],
            grad_logits_shape,
            feats_shape,
        )
    return flops


FLOP_FORMULAS = {
    "class_pool": class_pool_flops,
    "dynamic_classify": dynamic_classify_flops,
    "class_pool_backward": class_pool_backward_flops,
    "dynamic_classify_backward": dynamic_classify_backward_flops,
    "project": project_flops,
    "project_backward": project_backward_flops,
    "conditional_classifier": conditional_classifier_flops,
    "conditional_classifier_backward": conditional_classifier_backward_flops,
}


def register_flop_formulas(namespace: str = "condnet") -> list[str]:
    """Registers :data:`FLOP_FORMULAS` for the ops of ``torch.ops.<namespace>``
    that exist; returns the names registered now. Safe to call again.

    Ops with the same names and schemas in another namespace (e.g. Triton
    ops registered with ``torch.library.triton_op``) can be covered by
    calling this with that namespace.
    """
    done = []
    ops = getattr(torch.ops, namespace)
    for name, formula in FLOP_FORMULAS.items():
        try:
            packet = getattr(ops, name)
        except (AttributeError, RuntimeError):
            continue
        if packet not in flop_registry:
            register_flop_formula(packet)(formula)
            done.append(name)
    return done


if extension.LOAD_ERROR is None:
    register_flop_formulas()


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


def _build(name: str, device: str) -> nn.Module:
    from .backbones import BACKBONES, build_backbone

    if name in BACKBONES:
        return build_backbone(name, device=device)  # built in place: no init on "meta"
    try:
        from condnet.models import build_model
    except ImportError as exc:
        raise SystemExit(
            f"{name!r} is not a backbone ({', '.join(BACKBONES)}) and "
            f"condnet.models.build_model is unavailable ({exc})"
        ) from exc
    return build_model(name)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        return _check_shape(tuple(int(s) for s in text.split(",")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--shape must be comma-separated positive ints like 1,3,512,512; got {text!r}"
        ) from exc


def _parse_device(text: str) -> str:
    try:
        torch.device(text)
    except RuntimeError as exc:
        raise argparse.ArgumentTypeError(
            f"--device must be a torch device such as cpu, cuda or meta; got {text!r}"
        ) from exc
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m condnet.models.complexity",
        description="Parameters and forward FLOPs of a condnet model or backbone, per module.",
    )
    parser.add_argument("name", help="a backbone name or a condnet.models.build_model name")
    parser.add_argument("--shape", type=_parse_shape, default=(1, 3, 512, 512))
    parser.add_argument("--depth", type=int, default=2, help="module nesting depth to show")
    parser.add_argument(
        "--device", type=_parse_device, default="cpu", help="cpu, cuda, or meta (no compute)"
    )
    args = parser.parse_args(argv)
    if args.depth < 0:
        parser.error(f"--depth must be >= 0; got {args.depth}")
    rows = complexity_report(_build(args.name, args.device), args.shape, args.device)
    print(f"{args.name} at input {'x'.join(map(str, args.shape))}")
    print(format_report(rows, args.depth))


if __name__ == "__main__":
    main()
