"""The value checks of the config sections, and their errors.

Each check takes the value's dotted key (``"optimizer.lr"``), returns the value
normalised (lists become tuples, ints stay ints) and raises :class:`ConfigError`
``"<key> must be <what>; got <value>"`` otherwise.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Iterable, Mapping


class ConfigError(ValueError):
    """A config file or option that is malformed, unknown or out of range."""


def fail(key: str, expected: str, value) -> ConfigError:
    return ConfigError(f"{key} must be {expected}; got {value!r}")


def unknown_key(dotted: str, valid: Iterable[str], where: str, level: str) -> ConfigError:
    """The error for an unknown key: where it was given, the closest valid key, and all
    of them (``level`` is ``""`` for the top level, else the section's dotted name)."""
    valid = tuple(valid)
    close = difflib.get_close_matches(dotted.rsplit(".", 1)[-1], valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    at = f"in {level!r}" if level else "at the top level"
    return ConfigError(
        f"unknown config key {dotted!r} in {where}{hint}; valid keys {at}: " + ", ".join(valid)
    )


def integer(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(key, f"an int >= {low}", value)
    return value


def number(
    key: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float | int:
    """A finite int or float within the bounds (closed unless ``*_open``)."""
    if low is not None and high is not None:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        expected = f"a number in {left}{low:g}, {high:g}{right}"
    elif low is not None:
        expected = f"a number {'>' if low_open else '>='} {low:g}"
    else:
        expected = "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (math.isfinite(value) or (high is None and value == math.inf))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise fail(key, expected, value)
    return value


def choice(key: str, value, options: tuple):
    if isinstance(value, bool) or value not in options:
        raise fail(key, "one of " + ", ".join(map(repr, options)), value)
    return value


def boolean(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise fail(key, "True or False", value)
    return value


def text(key: str, value) -> str:
    if not isinstance(value, str) or not value:
        raise fail(key, "a non-empty string", value)
    return value


def optional(check: Callable, key: str, value, *args, **kwargs):
    """``check(key, value, ...)`` unless ``value`` is None; its error says None is fine."""
    if value is None:
        return None
    try:
        return check(key, value, *args, **kwargs)
    except ConfigError as err:
        raise ConfigError(str(err).replace(" must be ", " must be None or ", 1)) from None


def sequence(
    key: str, value, item: Callable, length: int | None = None, min_length: int = 0
) -> tuple:
    """A tuple or list of ``length`` (or at least ``min_length``) values, each passing
    ``item(key, value)``; returned as a tuple."""
    count = "any number of" if length is None else str(length)
    expected = f"a tuple/list of {count} values"
    if not isinstance(value, (tuple, list)) or len(value) < min_length:
        raise fail(key, expected, value)
    if length is not None and len(value) != length:
        raise fail(key, expected, value)
    return tuple(item(f"{key}[{i}]", v) for i, v in enumerate(value))


def size(key: str, value) -> tuple[int, int]:
    """An (h, w) pair of ints >= 1, written as a tuple or a list."""
    expected = "a pair (tuple or list) of ints >= 1"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise fail(key, expected, value)
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise fail(key, expected, value)
    return (value[0], value[1])


def mapping(key: str, value) -> dict:
    if not isinstance(value, Mapping):
        raise fail(key, "a dict", value)
    return dict(value)


def plain(value, dotted: str, where: str):
    """``value`` as plain literals (paths become strings); anything else is an error."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f"{dotted}[{i}]", where) for i, v in enumerate(value))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{dotted} in {where}: dict keys must be strings; got {k!r}")
            out[k] = plain(v, f"{dotted}.{k}", where)
        return out
    raise ConfigError(
        f"{dotted} in {where} must be None, a bool, int, float, str, list, tuple or dict; "
        f"got {type(value).__name__}"
    )
