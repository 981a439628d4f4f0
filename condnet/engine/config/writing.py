"""Writing a config back as the source of a config file that loads to an equal one
(the work dir's copy, and the text checkpoints keep)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from keyword import iskeyword
from pathlib import Path

from condnet.checkpoint_files import write_text_atomic

from .run_config import Config


def _format_value(value, indent: int) -> str:
    if isinstance(value, Mapping):
        if not value:
            return "dict()"
        pad = " " * (indent + 4)
        named = all(isinstance(k, str) and k.isidentifier() and not iskeyword(k) for k in value)
        items = []
        for k, v in value.items():
            key = f"{k}=" if named else f"{k!r}: "
            items.append(f"{pad}{key}{_format_value(v, indent + 4)},")
        inner = "\n".join(items)
        return f"dict(\n{inner}\n{' ' * indent})" if named else f"{{\n{inner}\n{' ' * indent}}}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_format_value(v, indent) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise TypeError(f"cannot write config value {value!r} of type {type(value).__name__}")


def format_config(cfg: Config | Mapping) -> str:
    """``cfg`` (a :class:`Config`, or a tree of plain values) as the source of a config
    file that :func:`~condnet.engine.config.load_config` reads back to an equal one."""
    tree = cfg.to_dict() if isinstance(cfg, Config) else cfg
    lines = []
    for key, value in tree.items():
        if not (isinstance(key, str) and key.isidentifier()) or key.startswith("_"):
            raise ValueError(f"top-level config key {key!r} is not a public Python name")
        lines.append(f"{key} = {_format_value(value, 0)}")
    return "\n".join(lines) + "\n"


def dump_config(cfg: Config | Mapping, path: str | os.PathLike) -> Path:
    """Write :func:`format_config` of ``cfg`` to ``path`` (parents created, the file
    written atomically); returns it."""
    path = Path(path)
    text = format_config(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(text, path)
