"""Warm start of a conditional classifier from a trained plain 1x1 classifier.

The guidance conv takes the plain classifier's weight and bias, and the
projection is set so that every generated per-image classifier *is* the plain
one: projection weight 0, projection bias = the plain weight and bias laid out
as the projection's output. The converted network then computes the plain
network's logits (up to float rounding of a matmul against a conv) until
fine-tuning moves the projection weight off 0, and its guidance starts from a
trained classifier instead of chance.
"""

from __future__ import annotations

import torch

from condnet.ops.layouts import check_layout

from .conditional_classifier import ConditionalClassifier

__all__ = ["warm_start_", "warm_start_tensors"]


def _as_plain(weight: object, bias: object) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, C) or (K, C, 1, 1) weight and (K,) or None bias -> (K, C), (K,)."""
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        got: object = (
            f"dtype {weight.dtype}" if isinstance(weight, torch.Tensor) else type(weight).__name__
        )
        raise TypeError(f"weight must be a floating-point tensor; got {got}")
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight.flatten(1)
    if weight.dim() != 2:
        raise ValueError(
            f"weight must be the plain classifier's (K, C) or (K, C, 1, 1) weight; "
            f"got shape {tuple(weight.shape)}"
        )
    K = weight.shape[0]
    if bias is None:
        bias = weight.new_zeros(K)
    if not isinstance(bias, torch.Tensor) or bias.shape != (K,):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"bias must be None or a ({K},) tensor for a weight with K={K}; got {got}")
    if bias.dtype != weight.dtype or bias.device != weight.device:
        raise ValueError(
            f"bias ({bias.dtype}, {bias.device}) must have the dtype and device of weight "
            f"({weight.dtype}, {weight.device})"
        )
    return weight, bias


def warm_start_tensors(
    weight: torch.Tensor, bias: torch.Tensor | None = None, layout: str = "grouped_conv"
) -> dict[str, torch.Tensor]:
    """The warm-started parameters of a :class:`ConditionalClassifier`, by name.

    Args:
        weight: the plain 1x1 classifier's weight, (K, C) or (K, C, 1, 1).
        bias: its bias (K,), or None for a conv without bias (taken as 0).
        layout: the conditional classifier's layout, ``"grouped_conv"`` or
            ``"per_class"``.

    Returns:
        A state dict of the classifier's parameters (keys relative to it):
        ``guidance_project.weight`` (K, C, 1, 1) and ``guidance_project.bias``
        (K,), copies of the plain classifier; and the projection with weight 0
        and a bias holding the plain classifier:

        - ``"grouped_conv"``: ``filter_project.bias`` (C*K + K,) is
          ``cat(weight.flatten(), bias)``, because the released grouped conv's
          first C*K outputs, read class-major, are the per-image weights and
          its last K outputs the biases (group boundaries do not follow the
          classes); ``filter_project.weight`` (C*K + K, C, 1, 1) is 0.
        - ``"per_class"``: ``filter_bias[k]`` (K, C + 1) is ``[weight[k], bias[k]]``;
          ``filter_weight`` (K, C + 1, C) is 0.
    """
    layout = check_layout(layout)
    weight, bias = _as_plain(weight, bias)
    K, C = weight.shape
    weight, bias = weight.detach(), bias.detach()
    state = {
        "guidance_project.weight": weight.reshape(K, C, 1, 1).clone(),
        "guidance_project.bias": bias.clone(),
    }
    if layout == "grouped_conv":
        state["filter_project.weight"] = weight.new_zeros(C * K + K, C, 1, 1)
        state["filter_project.bias"] = torch.cat([weight.reshape(-1), bias])
    else:
        state["filter_weight"] = weight.new_zeros(K, C + 1, C)
        state["filter_bias"] = torch.cat([weight, bias[:, None]], dim=1)
    return state


@torch.no_grad()
def warm_start_(
    classifier: ConditionalClassifier, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> ConditionalClassifier:
    """Sets ``classifier`` in place to compute the plain classifier ``(weight, bias)``.

    ``weight`` is (K, C) or (K, C, 1, 1) with K = ``classifier.num_classes`` and
    C = ``classifier.in_channels``; ``bias`` is (K,) or None. See
    :func:`warm_start_tensors` for the values. Returns ``classifier``.
    """
    if not isinstance(classifier, ConditionalClassifier):
        raise TypeError(
            f"classifier must be a ConditionalClassifier; got {type(classifier).__name__}"
        )
    weight, bias = _as_plain(weight, bias)
    expected = (classifier.num_classes, classifier.in_channels)
    if tuple(weight.shape) != expected:
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}; this classifier needs (K, C) = {expected}"
        )
    params = dict(classifier.named_parameters())
    for name, value in warm_start_tensors(weight, bias, classifier.layout).items():
        params[name].copy_(value)
    return classifier
