"""What the commands of :mod:`condnet.tools` share: the name a command shows in its
usage and errors, argument types (a config by name or path among them), ``--device``,
``--shape`` and ``--cfg-options``, a config loaded as an argument error, output paths
checked before any work, and ``--json`` results written atomically."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..checkpoint_files import check_destination, write_text_atomic
from ..engine import dist


def command_name(tool: str) -> str:
    """The name the command ``condnet.tools.<tool>`` was run by, as its parser's ``prog``
    (shown by ``--help`` and in argument errors), from ``sys.argv[0]``:

    - the installed console script, ``condnet-<tool>`` with ``_`` as ``-`` (what
      ``[project.scripts]`` in pyproject.toml names): that name;
    - a script file named ``<tool>.py`` (the ``tools/<tool>.py`` shims, also under
      torchrun): the path as typed when relative (``tools/train.py``), its file name
      when absolute (``train.py``);
    - ``python -m condnet.tools.<tool>``: that command line;
    - anything else (``main()`` called from Python, e.g. by the tests, where
      ``sys.argv[0]`` is the interpreter's or pytest's): the console-script name.
    """
    console = "condnet-" + tool.replace("_", "-")
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == f"condnet.tools.{tool}":
        return f"python -m condnet.tools.{tool}"
    invoked = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = os.path.basename(invoked)
    # pip's Windows launchers: condnet-train.exe or condnet-train-script.py.
    for suffix in (".exe", "-script.pyw", "-script.py"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name == console:
        return console
    if name == f"{tool}.py":
        return name if os.path.isabs(invoked) else invoked
    return console


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


CONFIG_HELP = "a packaged config's name (condnet-configs lists them) or a config file"


def config_file(text: str) -> Path:
    """argparse type of a config argument: the file that a path or a packaged config's
    name stands for (:func:`condnet.engine.config.find_config`); a missing file or an
    unknown name (with the close matches) is an argument error."""
    # Imported here: the config imports the model zoo, which --help does not need.
    from ..engine.config import find_config

    try:
        return find_config(text)
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def device_argument(text: str) -> str:
    """argparse type for ``--device``: cuda only where CUDA is available (other
    names are left to the argument's choices)."""
    if text != "cuda":
        return text
    try:
        return dist.choose_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--device cpu|cuda``, checked while parsing; with no default,
    ``dist.choose_device(args.device)`` picks cuda when available."""
    parser.add_argument(
        "--device",
        type=device_argument,
        choices=("cpu", "cuda"),
        default=default,
        help=f"default: {default}" if default else "default: cuda when available, else cpu",
    )


def add_cfg_options_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """``--cfg-options KEY=VALUE ...``: config overrides, as every config tool takes them."""
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config fields, e.g. {example}",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shape H W`` and ``--cfg-options``, as every model tool takes them."""
    parser.add_argument(
        "--shape",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="input height and width (default: the config's data.crop_size)",
    )
    add_cfg_options_argument(parser, "model.channels=256 data.crop_size=(512,1024)")


def load_config_or_exit(parser: argparse.ArgumentParser, path, options):
    """:func:`condnet.engine.config.load_config`; a bad file or option is an argument
    error (exit status 2)."""
    # Imported here: the config imports the model zoo, which --help does not need.
    from ..engine.config import ConfigError, load_config

    try:
        return load_config(path, options)
    except (ConfigError, FileNotFoundError) as err:
        parser.error(str(err))


def load_model_config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The config of ``args.config`` with ``args.cfg_options``, as an argument error
    when bad. The backbone's pretrained weights are never loaded: these tools time,
    count or export the network, or load a checkpoint."""
    options = [*args.cfg_options, "model.pretrained_backbone=False"]
    return load_config_or_exit(parser, args.config, options)


def input_shape(cfg, args: argparse.Namespace) -> tuple[int, int]:
    """``--shape`` or else the config's training crop (h, w)."""
    return tuple(args.shape) if args.shape else tuple(cfg.data.crop_size)


def check_output_path(parser: argparse.ArgumentParser, path: str | None, flag: str) -> None:
    """An argument error unless a file can be written at ``path`` (if given): checked
    before the work starts (:func:`condnet.checkpoint_files.check_destination`)."""
    if path is None:
        return
    try:
        check_destination(path)
    except OSError as err:
        parser.error(f"{flag}: {err}")


def write_json(obj: dict, path: str | os.PathLike) -> None:
    """Writes ``obj`` as indented JSON to ``path``, atomically."""
    write_text_atomic(json.dumps(obj, indent=2) + "\n", path)
