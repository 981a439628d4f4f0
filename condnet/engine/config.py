"""Config files: Python files of plain values, with ``_base_`` inheritance (mmseg style).

A config file is executed in a fresh namespace; its top-level names that do not start
with ``_`` (modules, functions and classes aside) are the config. ``_base_`` (a path or
a list of paths, relative to the file) names files loaded first: dicts merge key by key,
anything else replaces, and a dict with ``_delete_=True`` replaces the inherited one.
``--cfg-options`` strings ``a.b.c=value`` merge on top the same way. The result is
checked against :data:`SCHEMA` (every default filled in) and returned as a
:class:`Config`, a nested ``dict`` with attribute access. The schema, with every key and
its default, and its validation live in :mod:`condnet.engine.config_schema`; their
public names are re-exported here::

    cfg = load_config("configs/condnet/condnet_r50-d8_512x512_160k_ade20k.py",
                      ["runner.max_iters=1000", "data.samples_per_gpu=2"])
    cfg.optimizer.lr, cfg.model.name
    dump_config(cfg, "work_dirs/x/config.py")   # loads back to an equal Config
"""

from __future__ import annotations

import ast
import math
import os
import types
from collections.abc import Iterable, Mapping
from keyword import iskeyword
from pathlib import Path

from condnet.checkpoint_files import write_text_atomic

from .config_schema import (
    DATASETS,
    MODEL_KEYS,
    SCHEMA,
    Config,
    ConfigError,
    _check_keys,
    _plain,
    validate_config,
)

__all__ = [
    "DATASETS",
    "MODEL_KEYS",
    "SCHEMA",
    "Config",
    "ConfigError",
    "dump_config",
    "format_config",
    "load_config",
    "merge",
    "parse_options",
    "validate_config",
]


# -- files, _base_ and merging -------------------------------------------------------------


def _execute(path: Path) -> dict:
    try:
        code = compile(path.read_text(), str(path), "exec")
    except SyntaxError as exc:
        msg = f"syntax error in config file {path}, line {exc.lineno}: {exc.msg}"
        raise ConfigError(msg) from None
    namespace = {"__file__": str(path), "__name__": "__condnet_config__"}
    try:
        exec(code, namespace)
    except Exception as exc:
        raise ConfigError(f"config file {path} failed: {type(exc).__name__}: {exc}") from exc
    skip = (types.ModuleType, types.FunctionType, type)
    out = {
        k: _plain(v, k, str(path))
        for k, v in namespace.items()
        if not k.startswith("_") and not isinstance(v, skip)
    }
    if "_base_" in namespace:
        out["_base_"] = namespace["_base_"]
    return out


def _strip_delete(value):
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != "_delete_"}
    return value


def merge(base: Mapping, child: Mapping) -> dict:
    """``child`` merged onto ``base``: dicts key by key (unless ``_delete_=True``), the
    rest replaces. Neither argument is modified."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping):
            if not value.get("_delete_", False) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], {k: v for k, v in value.items() if k != "_delete_"})
                continue
        out[key] = _strip_delete(value)
    return out


def _load_tree(path: Path, chain: tuple[Path, ...]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain[chain.index(resolved) :], resolved))
        raise ConfigError(f"circular _base_ inheritance: {cycle}")
    if path.suffix != ".py":
        raise ConfigError(f"config files are Python files (*.py); got {path}")
    raw = _execute(path)
    _check_keys({k: v for k, v in raw.items() if k != "_base_"}, str(path))
    bases = raw.pop("_base_", ())
    if isinstance(bases, (str, os.PathLike)):
        bases = [bases]
    if not isinstance(bases, (list, tuple)) or not all(
        isinstance(b, (str, os.PathLike)) for b in bases
    ):
        raise ConfigError(f"_base_ in {path} must be a path or a list of paths; got {bases!r}")
    tree: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise FileNotFoundError(f"config file not found: {base_path} (_base_ of {path})")
        tree = merge(tree, _load_tree(base_path, (*chain, resolved)))
    return merge(tree, raw)


# -- options -----------------------------------------------------------------------------


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_options(options: Iterable[str] | Mapping[str, object]) -> dict:
    """``["a.b=1", "c=x"]`` (``--cfg-options``) as a nested dict ``{"a": {"b": 1}, "c": "x"}``.

    A value is read with ``ast.literal_eval`` (numbers, ``None``, ``True``, tuples, lists,
    quoted strings), else kept as the raw string. A mapping of dotted keys to values
    (already parsed) is accepted too.
    """
    if isinstance(options, str):
        raise TypeError(f"options must be a list of 'key=value' strings; got {options!r}")
    if isinstance(options, Mapping):
        items = list(options.items())
    else:
        items = []
        for option in options:
            if not isinstance(option, str) or "=" not in option:
                raise ConfigError(f"config option {option!r} must look like key.path=value")
            key, text = option.split("=", 1)
            items.append((key.strip(), _parse_value(text)))
    tree: dict = {}
    for key, value in items:
        parts = str(key).split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"config option key {key!r} must be dotted names like a.b.c")
        node = tree
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"config option {key!r} conflicts with {part}={node[part]!r}")
            node = node.setdefault(part, {})
        node[parts[-1]] = _plain(value, key, "config options")
    return tree


# -- loading -----------------------------------------------------------------------------


def load_config(path: str | os.PathLike, options: Iterable[str] | Mapping | None = ()) -> Config:
    """Load a config file with its ``_base_`` files and ``options`` (``--cfg-options``
    strings ``a.b=value``, or None); returns the validated :class:`Config`.

    Raises ``FileNotFoundError`` for a missing file and :class:`ConfigError` for a syntax
    error, an unknown key (naming it and the valid keys) or an invalid value.
    """
    if isinstance(options, str):
        raise TypeError(f"options must be a list of 'key=value' strings; got {options!r}")
    tree = _load_tree(Path(path), ())
    options = () if options is None else options
    # One option at a time, so that an unknown key's error names the option it came from.
    if isinstance(options, Mapping):
        singles = [({key: value}, key) for key, value in options.items()]
    else:
        singles = [([option], option) for option in options]
    for single, label in singles:
        parsed = parse_options(single)
        _check_keys(parsed, f"--cfg-options {label!r}")
        tree = merge(tree, parsed)
    return validate_config(tree)


# -- writing -----------------------------------------------------------------------------


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


def format_config(cfg: Mapping) -> str:
    """``cfg`` as the source of a config file that :func:`load_config` reads back to an
    equal :class:`Config` (for logs and checkpoints)."""
    lines = []
    for key, value in cfg.items():
        if not (isinstance(key, str) and key.isidentifier()) or key.startswith("_"):
            raise ValueError(f"top-level config key {key!r} is not a public Python name")
        lines.append(f"{key} = {_format_value(value, 0)}")
    return "\n".join(lines) + "\n"


def dump_config(cfg: Mapping, path: str | os.PathLike) -> Path:
    """Write :func:`format_config` of ``cfg`` to ``path`` (parents created, the file
    written atomically); returns it."""
    path = Path(path)
    text = format_config(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(text, path)
