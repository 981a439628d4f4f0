"""What every config section shares: being built from a dict (unknown keys are errors
that list the valid ones) and written back to one.

A section is a frozen dataclass whose fields are its keys, with their defaults, and
whose ``__post_init__`` checks them (:mod:`~condnet.engine.config.checks`). That
dataclass is the only place a key, its default and its check are written: the file
loader, ``--cfg-options``, the writer and the code that consumes the section all
read it from there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from .checks import unknown_key


def check_keys(given: Mapping, valid: tuple[str, ...], where: str, section: str) -> None:
    """Raises for the first key of ``given`` that is not in ``valid``."""
    for key in given:
        if key not in valid:
            dotted = f"{section}.{key}" if section else str(key)
            raise unknown_key(dotted, valid, where, section)


class Section:
    """Base of the section dataclasses; ``KEY`` is the section's name in the config."""

    KEY: ClassVar[str]
    # Every subclass is a dataclass: this declares it to the type checker
    # (dataclasses.fields takes the class).
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The section's valid keys, in order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "the config"):
        """The section from a mapping of its keys (absent ones take their defaults)."""
        check_keys(values, cls.keys(), where, cls.KEY)
        return cls(**values)

    def to_dict(self) -> dict:
        """The section's keys and values (dicts copied), as a config file holds them."""
        return {k: copied(getattr(self, k)) for k in self.keys()}

    def _set(self, name: str, value) -> None:
        """Stores a checked value on the frozen dataclass (for ``__post_init__``)."""
        object.__setattr__(self, name, value)

    def _key(self, name: str) -> str:
        return f"{self.KEY}.{name}"


def copied(value):
    """``value`` with its dicts copied (so a written tree shares nothing with the config)."""
    if isinstance(value, Mapping):
        return {k: copied(v) for k, v in value.items()}
    return value
