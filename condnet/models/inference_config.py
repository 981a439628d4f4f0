"""How a model predicts at test time (mmseg's ``test_cfg``), and how settings from
several places combine into one.

:class:`InferenceConfig` is the one settings object: the mode (``"whole"`` image or
``"slide"`` windows), the window (``crop_size``, ``stride``), the test-time scales and
flipping. Its constructor is the only place these values are checked, whoever gives
them (a model's released setting, a config's ``evaluation`` section, a command line,
a ``predict`` call).

:func:`resolve_inference` is the one rule that combines them: it starts from a base
(a model's ``test_cfg``) and lays each further layer on top, field by field, a field
left at None keeping the value below it. ``Segmentor.predict``, the Trainer's
periodic evaluation and ``tools/test.py`` all resolve their settings with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

INFERENCE_MODES = ("whole", "slide")


def size_pair(value: object, key: str) -> tuple[int, int] | None:
    """None, or a positive int or (h, w) pair of them as ``(h, w)``; errors name ``key``."""
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise ValueError(f"{key} must be a positive int or a pair (h, w) of them; got {value!r}")
    return (int(pair[0]), int(pair[1]))


def _mode(value: object, key: str) -> str:
    if isinstance(value, bool) or value not in INFERENCE_MODES:
        raise ValueError(f"{key} must be one of {INFERENCE_MODES}; got {value!r}")
    return value


def scale_factors(value: object, key: str) -> tuple[float, ...]:
    """A positive number or a non-empty sequence of them as a tuple of floats; errors
    name ``key``."""
    scales = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not scales or not all(
        isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales
    ):
        raise ValueError(f"{key} must be a non-empty sequence of positive numbers; got {value!r}")
    return tuple(float(s) for s in scales)


def _flip(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be True or False; got {value!r}")
    return value


_CHECKS: dict[str, Callable[[object, str], object]] = {
    "mode": _mode,
    "crop_size": size_pair,
    "stride": size_pair,
    "scales": scale_factors,
    "flip": _flip,
}


def check_inference_fields(
    values: Mapping[str, object], keys: Mapping[str, str] | None = None
) -> dict[str, object]:
    """The fields given in ``values`` (None: not set), each checked and normalised
    alone (pairs and tuples made of lists, ints made pairs); the errors name each
    field by ``keys[field]`` (default: its own name)."""
    keys = keys or {}
    out: dict[str, object] = {}
    for name, value in values.items():
        if name not in _CHECKS:
            raise ValueError(f"unknown inference setting {name!r}; valid: {', '.join(_CHECKS)}")
        key = keys.get(name, name)
        out[name] = None if value is None else _CHECKS[name](value, key)
    return out


def check_window(mode: object, crop_size, stride, keys: Mapping[str, str] | None = None) -> None:
    """The rules between the fields: ``"slide"`` needs a ``crop_size`` and a ``stride``,
    and a stride larger than the crop would skip pixels."""
    keys = {name: (keys or {}).get(name, name) for name in ("mode", "crop_size", "stride")}
    if mode != "slide":
        return
    crop_key, stride_key = keys["crop_size"], keys["stride"]
    if crop_size is None or stride is None:
        raise ValueError(
            f"{keys['mode']}='slide' needs {crop_key} and {stride_key}; got "
            f"{crop_key}={crop_size}, {stride_key}={stride}"
        )
    if stride[0] > crop_size[0] or stride[1] > crop_size[1]:
        raise ValueError(
            f"{stride_key} must not exceed {crop_key} in either direction (pixels would be "
            f"skipped); got {stride_key}={stride}, {crop_key}={crop_size}"
        )


@dataclass(frozen=True)
class InferenceConfig:
    """How :meth:`~condnet.models.Segmentor.predict` runs (see the module docstring).

    ``mode="whole"`` runs the full image at once; ``mode="slide"`` runs ``crop_size``
    windows every ``stride`` pixels (ints or ``(h, w)`` pairs) and averages overlaps.
    Each of ``scales`` rescales the image, ``flip`` adds mirrored copies; the results
    are averaged (mmseg's multi-scale test).
    """

    mode: str = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        values = check_inference_fields({f.name: getattr(self, f.name) for f in fields(self)})
        if values["scales"] is None or values["flip"] is None or values["mode"] is None:
            raise ValueError("mode, scales and flip must be set (None is for crop_size, stride)")
        check_window(values["mode"], values["crop_size"], values["stride"])
        for name, value in values.items():
            object.__setattr__(self, name, value)


def resolve_inference(
    base: InferenceConfig, *layers: Mapping[str, object] | None
) -> InferenceConfig:
    """``base`` with each layer of settings laid on top in turn, field by field.

    A layer maps some of :class:`InferenceConfig`'s fields to values; None (or a
    missing field) keeps the value from below, so later layers win only where they
    say something. In ``"whole"`` mode the window is dropped. The result is checked
    by the :class:`InferenceConfig` constructor, e.g.::

        resolve_inference(model.test_cfg, {"mode": cfg_mode}, {"crop_size": cli_crop})
    """
    if not isinstance(base, InferenceConfig):
        raise TypeError(f"base must be an InferenceConfig; got {type(base).__name__}")
    values = {f.name: getattr(base, f.name) for f in fields(base)}
    for layer in layers:
        if layer is not None:
            given = check_inference_fields(layer)
            values.update((k, v) for k, v in given.items() if v is not None)
    if values["mode"] == "whole":
        values["crop_size"] = values["stride"] = None
    return InferenceConfig(**values)
