"""Config files: Python files of plain values, with ``_base_`` inheritance (mmseg
style), and ``--cfg-options``.

A config file is executed in a fresh namespace; its top-level names that do not start
with ``_`` (modules, functions and classes aside) are the config. ``_base_`` (a path or
a list of paths, relative to the file) names files loaded first: dicts merge key by key,
anything else replaces, and a dict with ``_delete_=True`` replaces the inherited one.
``--cfg-options`` strings ``a.b.c=value`` merge on top the same way. Unknown keys are
reported with the file or option that gave them; the merged tree becomes a
:class:`~condnet.engine.config.Config`, whose sections check the values.

The configs shipped with the package (``condnet/configs``, data files, not modules) are
also known by name, the file stem, as ``mim`` knows mmseg's: wherever a config file is
taken, ``condnet_r50-d8_512x512_160k_ade20k`` stands for its packaged file.
"""

from __future__ import annotations

import ast
import difflib
import os
import types
from collections.abc import Iterable, Mapping
from pathlib import Path

from .checks import ConfigError, plain
from .run_config import Config, check_tree_keys

# The packaged configs; the files under _base_ are only included by the others.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
_BASE_FOLDER = "_base_"


def packaged_configs() -> dict[str, Path]:
    """The configs shipped in ``condnet/configs`` by name (file stem), sorted by name;
    the ``_base_`` files are not among them."""
    found: dict[str, Path] = {}
    for path in sorted(CONFIG_DIR.rglob("*.py")):
        if _BASE_FOLDER in path.relative_to(CONFIG_DIR).parts:
            continue
        if path.stem in found:  # a name must say which file it is
            raise RuntimeError(
                f"two packaged configs named {path.stem!r}: {found[path.stem]}, {path}"
            )
        found[path.stem] = path
    return dict(sorted(found.items()))


def close_config_names(text: str, limit: int = 5) -> list[str]:
    """Packaged config names like ``text``, at most ``limit``: those containing it, then
    the closest spellings of a whole name, then names with a ``_``-separated part spelt
    like it (so that a misspelt fragment, ``scenez``, finds ``..._scenes``)."""
    names = list(packaged_configs())
    needle = text.lower()
    containing = [n for n in names if needle and needle in n.lower()]
    similar = difflib.get_close_matches(needle, names, n=limit, cutoff=0.6)
    parts: dict[str, list[str]] = {}
    for name in names:
        for part in name.split("_"):
            parts.setdefault(part, []).append(name)
    near = difflib.get_close_matches(needle, list(parts), n=limit, cutoff=0.75)
    by_part = [name for part in near for name in parts[part]]
    return list(dict.fromkeys(containing + similar + by_part))[:limit]


def _is_name(text: str) -> bool:
    separators = {os.sep, os.altsep or os.sep, "/"}
    return not any(sep in text for sep in separators)


def find_config(config: str | os.PathLike) -> Path:
    """The config file that ``config`` names: an existing file as given; else a packaged
    config's name (the file stem, ``.py`` optional).

    Raises ``FileNotFoundError`` for a path that is not a file (saying so when its stem
    is a packaged config's name) and for an unknown name (listing close matches).
    """
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"config must be a file path or a config name; got {config!r}")
    path = Path(config)
    if path.is_file() or not isinstance(config, str):
        return path
    packaged = packaged_configs()
    if not _is_name(config):
        hint = ""
        if path.stem in packaged:
            hint = f"; the packaged config of that name is found by its name alone: {path.stem}"
        raise FileNotFoundError(f"config file not found: {config}{hint}")
    name = config.removesuffix(".py")
    if name in packaged:
        return packaged[name]
    close = close_config_names(name)
    suggestion = f"; close matches: {', '.join(close)}" if close else ""
    raise FileNotFoundError(
        f"no config file or packaged config named {config!r}{suggestion} "
        f"(condnet-configs lists all {len(packaged)})"
    )


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
        k: plain(v, k, str(path))
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
    check_tree_keys({k: v for k, v in raw.items() if k != "_base_"}, str(path))
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
        node[parts[-1]] = plain(value, key, "config options")
    return tree


# -- loading -----------------------------------------------------------------------------


def _merge_options(tree: dict, options: Iterable[str] | Mapping | None) -> dict:
    if isinstance(options, str):
        raise TypeError(f"options must be a list of 'key=value' strings; got {options!r}")
    options = () if options is None else options
    # One option at a time, so that an unknown key's error names the option it came from.
    singles: list[tuple[Iterable[str] | Mapping[str, object], str]]
    if isinstance(options, Mapping):
        singles = [({key: value}, key) for key, value in options.items()]
    else:
        singles = [([option], option) for option in options]
    for single, label in singles:
        parsed = parse_options(single)
        check_tree_keys(parsed, f"--cfg-options {label!r}")
        tree = merge(tree, parsed)
    return tree


def load_config(path: str | os.PathLike, options: Iterable[str] | Mapping | None = ()) -> Config:
    """Load a config file (a path, or a packaged config's name: :func:`find_config`) with
    its ``_base_`` files and ``options`` (``--cfg-options`` strings ``a.b=value``, a
    mapping of dotted keys to values, or None); returns the checked :class:`Config`.

    Raises ``FileNotFoundError`` for a missing file or unknown name and
    :class:`ConfigError` for a syntax error, an unknown key (naming it, where it was given
    and the valid keys) or an invalid value.
    """
    if isinstance(options, str):
        raise TypeError(f"options must be a list of 'key=value' strings; got {options!r}")
    return Config.from_dict(_merge_options(_load_tree(find_config(path), ()), options))


def with_options(cfg: Config, options: Iterable[str] | Mapping | None) -> Config:
    """``cfg`` with ``options`` (as for :func:`load_config`) merged on top and checked
    again: the way to change a loaded config, e.g.
    ``with_options(cfg, {"model.pretrained_backbone": False})``."""
    return Config.from_dict(_merge_options(cfg.to_dict(), options))
