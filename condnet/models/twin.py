"""From a trained ``-plain`` zoo model to its warm-started CondNet twin.

A ``-plain`` model and its twin differ only in the decode head's classifier:
``decode_head.classifier.conv_seg.{weight,bias}`` (mmseg's 1x1 ``conv_seg``)
against the conditional classifier's ``guidance_project`` and projection.
The twin starts from the plain classifier (see
:func:`condnet.nn.warm_start_tensors`), so before fine-tuning it predicts
exactly what the plain model predicts. ``tools/train.py --load-from`` then
fine-tunes it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

import torch

from condnet.nn import warm_start_tensors
from condnet.ops.layouts import check_layout

from .segmentor import Segmentor
from .zoo import PLAIN_SUFFIX, build_model, get_config

__all__ = [
    "PLAIN_CLASSIFIER",
    "WARM_START_TOLERANCE",
    "check_warm_start",
    "conditional_twin",
    "conditional_twin_state_dict",
    "twin_name",
]

#: Prefix of the plain decode-head classifier's parameters in a zoo state dict.
PLAIN_CLASSIFIER = "decode_head.classifier.conv_seg."
_CONDITIONAL = "decode_head.classifier."

#: Largest |logit difference| between a plain model and its twin, as a fraction
#: of the largest |logit|, before the conversion counts as broken (float64: the
#: two compute the same sums in different orders).
WARM_START_TOLERANCE = 1e-9


def twin_name(plain_name: str) -> str:
    """``"condnet_r50-d8_ade20k-plain"`` -> ``"condnet_r50-d8_ade20k"``."""
    if not isinstance(plain_name, str) or not plain_name.endswith(PLAIN_SUFFIX):
        raise ValueError(
            f"plain_name must be the name of a plain zoo model (ending in {PLAIN_SUFFIX!r}); "
            f"got {plain_name!r}"
        )
    get_config(plain_name)  # raises for unknown names, listing the valid ones
    return plain_name[: -len(PLAIN_SUFFIX)]


def conditional_twin_state_dict(
    plain_state: Mapping[str, torch.Tensor], *, layout: str = "grouped_conv"
) -> dict[str, torch.Tensor]:
    """The warm-started state dict of a plain zoo model's conditional twin.

    Args:
        plain_state: the state dict of a ``-plain`` model of
            :func:`~condnet.models.list_models` (``model.state_dict()``, or
            ``checkpoint["state_dict"]`` of a training checkpoint).
        layout: the twin's conditional-classifier layout, ``"grouped_conv"``
            (default, as the zoo builds) or ``"per_class"``.

    Returns:
        A new dict: every entry of ``plain_state`` but the plain classifier's
        ``decode_head.classifier.conv_seg.*``, and the conditional classifier's
        ``decode_head.classifier.*`` in its place. It loads strictly into
        ``build_model(twin_name(name), layout=layout)``.
    """
    if not isinstance(plain_state, Mapping):
        raise TypeError(f"plain_state must be a state dict; got {type(plain_state).__name__}")
    layout = check_layout(layout)
    key = PLAIN_CLASSIFIER + "weight"
    if key not in plain_state:
        conditional = _CONDITIONAL + "guidance_project.weight" in plain_state
        hint = (
            "it already holds a conditional classifier"
            if conditional
            else "a checkpoint file's weights are under its 'state_dict' key"
        )
        raise ValueError(f"plain_state has no {key!r}, so it is not a plain zoo model ({hint})")
    weight = plain_state[key]
    bias = plain_state.get(PLAIN_CLASSIFIER + "bias")
    state = {k: v for k, v in plain_state.items() if not k.startswith(PLAIN_CLASSIFIER)}
    for name, value in warm_start_tensors(weight, bias, layout).items():
        state[_CONDITIONAL + name] = value
    return state


def conditional_twin(plain: Segmentor, *, layout: str | None = None) -> Segmentor:
    """A new conditional twin of the plain zoo model ``plain``, warm-started.

    ``plain`` must have been made by :func:`~condnet.models.build_model` with
    ``classifier="plain"`` (it keeps its configuration in ``plain.config``).
    The twin has the same configuration with ``classifier="conditional"`` and
    ``layout`` (default: the plain configuration's), the same device, dtype
    and training mode, and the weights of :func:`conditional_twin_state_dict`.
    """
    config = getattr(plain, "config", None)
    if not isinstance(plain, Segmentor) or config is None:
        raise TypeError(
            f"plain must be a Segmentor made by build_model; got {type(plain).__name__}"
        )
    if config.classifier != "plain":
        raise ValueError(f"plain has classifier={config.classifier!r}; expected 'plain'")
    layout = config.layout if layout is None else layout
    state = conditional_twin_state_dict(plain.state_dict(), layout=layout)
    weight = plain.get_parameter("decode_head.classifier.conv_seg.weight")
    twin = build_model(dataclasses.replace(config, classifier="conditional", layout=layout))
    twin = twin.to(device=weight.device, dtype=weight.dtype)
    twin.load_state_dict(state, strict=True)
    return twin.train(plain.training)


def check_warm_start(
    plain: torch.nn.Module, twin: torch.nn.Module, image_size: tuple[int, int] = (64, 64)
) -> float:
    """The largest |logit difference| of ``plain`` and its warm-started ``twin``
    on one random image, computed in float64 on copies of both (the models
    themselves are left as they are).

    Raises:
        ValueError: the difference exceeds :data:`WARM_START_TOLERANCE` times
            the largest |logit| (at least 1): the twin would not start from the
            plain model's predictions.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *image_size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        a = copy.deepcopy(plain).cpu().double().eval()(x)
        b = copy.deepcopy(twin).cpu().double().eval()(x)
    diff, scale = (a - b).abs().max().item(), a.abs().max().item()
    if not diff <= WARM_START_TOLERANCE * max(scale, 1.0):
        raise ValueError(
            f"the converted model's logits differ from the plain model's by {diff:.3g} "
            f"(largest logit {scale:.3g})"
        )
    return diff
