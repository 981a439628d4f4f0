"""Choosing the backend of a built model's condnet ops.

Which implementation runs an op is decided, first match wins, by:

1. a module's ``backend`` attribute, set with :func:`set_backend` (None: not set);
2. the innermost ``with condnet.ops.use_backend(name):`` block;
3. the ``CONDNET_BACKEND`` environment variable;
4. ``"auto"``.

Models are built without one (no constructor or config takes a backend), so
``use_backend`` and ``CONDNET_BACKEND`` decide unless code sets the attribute.
"""

from __future__ import annotations

from torch import nn

from condnet import ops

from .conditional_classifier import ConditionalClassifier
from .context_aware_classifier import ContextAwareClassifier


def set_backend(
    model: nn.Module, backend: str | None
) -> list[ConditionalClassifier | ContextAwareClassifier]:
    """Sets ``backend`` (one of :data:`condnet.ops.BACKENDS`, or None to follow
    ``use_backend`` / ``CONDNET_BACKEND`` again) on every
    :class:`ConditionalClassifier` and :class:`ContextAwareClassifier` in
    ``model``; returns them.

    Raises:
        ValueError: ``backend`` is not a backend name, or ``model`` has no
            conditional classifier: a plain 1x1-conv classifier runs no condnet
            op, so a backend would have no effect.
    """
    if backend is not None and backend not in ops.BACKENDS:
        raise ValueError(f"backend must be None or one of {ops.BACKENDS}; got {backend!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    classifiers = [
        m for m in model.modules() if isinstance(m, ConditionalClassifier | ContextAwareClassifier)
    ]
    if not classifiers:
        raise ValueError(
            f"{type(model).__name__} has no ConditionalClassifier: its plain classifier runs "
            "no condnet op, so a backend has no effect (nor has it a ContextAwareClassifier)"
        )
    for classifier in classifiers:
        classifier.backend = backend
    return classifiers
