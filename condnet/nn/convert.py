"""``make_conditional``: CondNet's or CAC's classifier in a network that has a plain one."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from condnet.ops.layouts import check_layout

from .conditional_classifier import ConditionalClassifier
from .context_aware_classifier import ContextAwareClassifier
from .discovery import find_classifiers
from .drop_in import INITS, DropInConditionalClassifier
from .drop_in_context_aware import DropInContextAwareClassifier

__all__ = ["VARIANTS", "conditional_classifiers", "make_conditional"]

# "condnet": CondNet's conditional classifier; "cac": CAC's context-aware one.
VARIANTS = ("condnet", "cac")


def _targets(target: object) -> list[str]:
    if isinstance(target, str):
        return [target]
    if isinstance(target, Sequence) and len(target) > 0 and all(isinstance(t, str) for t in target):
        return list(dict.fromkeys(target))
    raise TypeError(
        f"target must be None, a module name or a non-empty list of them; got {target!r}"
    )


def _lookup(model: nn.Module, name: str) -> nn.Conv2d:
    if name == "":
        raise ValueError(
            "the classifier conv is the model itself; put it in a parent module to replace it"
        )
    try:
        module = model.get_submodule(name)
    except AttributeError:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        shown = ", ".join(convs[-8:]) or "none"
        raise ValueError(
            f"target {name!r} is not a submodule of the model; its last nn.Conv2d modules "
            f"are: {shown}"
        ) from None
    if isinstance(module, (ConditionalClassifier, ContextAwareClassifier)):
        kind = "a conditional" if isinstance(module, ConditionalClassifier) else "a context-aware"
        raise ValueError(f"target {name!r} is already {kind} classifier")
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"target {name!r} must be an nn.Conv2d; it is a {type(module).__name__}")
    return module


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Puts ``new`` wherever ``old`` is registered (a conv shared by several
    parents is replaced in all of them)."""
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, child_name, new)


def make_conditional(
    model: nn.Module,
    target: str | Sequence[str] | None = None,
    *,
    variant: str = "condnet",
    layout: str | None = None,
    init: str = "from_classifier",
    dropout: float = 0.0,
    auxiliary: bool = False,
    example_input: object = None,
    output: str | int | None = None,
) -> nn.Module:
    """Replaces a network's final classifier conv(s) with CondNet's conditional
    classifier or CAC's context-aware classifier, in place, and returns the network.

    Each replaced ``nn.Conv2d(C, K, k)`` becomes a drop-in classifier that the
    network calls as before and that returns logits of the same shape, dtype
    and device: a :class:`DropInConditionalClassifier` (``variant="condnet"``;
    train with :func:`condnet.nn.guidance_loss` added to the network's own
    loss) or a :class:`DropInContextAwareClassifier` (``variant="cac"``; train
    with :func:`condnet.nn.cac_auxiliary_loss` added to it).

    Args:
        model: the network (convert it before ``torch.compile`` or DDP).
        target: the module name of the conv to replace (``"classifier.4"``),
            or a list of names; None finds it (see :func:`find_classifiers`):
            the last ``nn.Conv2d`` with the main output's K channels that ran
            on the way to the main output. For torchvision's LR-ASPP, whose
            output is ``low_classifier(low) + high_classifier(high)``, that is
            ``classifier.high_classifier``, the classifier of the semantic
            branch; ``low_classifier`` stays a plain conv (pass both names to
            convert both).
        variant: ``"condnet"`` (default) or ``"cac"``.
        layout: CondNet only: ``"grouped_conv"`` (the released grouped-conv
            projection; None means this) or ``"per_class"``.
        init: ``"from_classifier"`` (default) starts from the conv's weights.
            CondNet: the guidance conv copies it and the projection's weight is
            0 with the conv in its bias, so the converted network computes the
            same logits as before (equal up to float rounding; tested in
            float64). CAC: ``conv_seg`` copies it and ``proj``/``apd_proj`` are
            freshly initialised, so the static logits are the old ones but the
            cosine logits are not (docs/integrations.md says how far apart).
            ``"random"`` uses the released initialisation instead.
        dropout: ``Dropout2d`` on the classifier's input (CAC: on the static
            logits' input only, as released); 0 by default since the host
            heads keep their own dropout.
        auxiliary: with ``target=None``, also replace the classifier of each
            auxiliary head (one that runs but does not feed the main output).
        example_input: the input of the probing forward when ``target`` is
            None: a tensor, a tuple of positional arguments or a dict of
            keyword arguments. Default: one random 64x64 image with as many
            channels as the first conv takes.
        output: with ``target=None``, the key or index of the main logits in
            the model's return value. Default: a tensor itself, ``"out"``
            (torchvision), ``"logits"`` (transformers), the first of a tuple.

    Returns:
        ``model``, with the conv(s) replaced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}; got {variant!r}")
    if variant == "cac" and layout is not None:
        raise ValueError(
            f"layout={layout!r} applies only to variant='condnet' (the layout of CondNet's "
            "projection); CAC's generators have one layout, so leave layout unset"
        )
    if variant == "condnet":
        layout = check_layout("grouped_conv" if layout is None else layout)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {init!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a number in [0, 1); got {dropout!r}")
    wrapped = isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    if wrapped or type(model).__name__ == "OptimizedModule":
        raise TypeError(
            f"model is a {type(model).__name__}; convert the plain model first, then "
            "wrap it (torch.compile, DataParallel, DistributedDataParallel)"
        )
    if target is None:
        names = find_classifiers(model, example_input, output=output, auxiliary=auxiliary)
    else:
        if auxiliary:
            raise ValueError(
                "auxiliary=True applies only to target=None; name the auxiliary classifier in "
                "target instead"
            )
        names = _targets(target)
    convs = [_lookup(model, name) for name in names]
    for conv in dict.fromkeys(convs):
        new: nn.Module
        if variant == "cac":
            new = DropInContextAwareClassifier.from_conv(conv, init=init, dropout=dropout)
        else:
            assert layout is not None  # checked above
            new = DropInConditionalClassifier.from_conv(
                conv, layout=layout, init=init, dropout=dropout
            )
        _replace(model, conv, new)
    return model


def conditional_classifiers(model: nn.Module) -> list[tuple[str, DropInConditionalClassifier]]:
    """``(name, module)`` of every classifier that :func:`make_conditional` put in ``model``."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, DropInConditionalClassifier)
    ]
