"""``condnet-configs [FILTER]``: the configs shipped with the package, by name.

Every command that takes a config (``condnet-train``, ``condnet-test``,
``condnet-benchmark``, ...) takes one of these names as well as a file path, as
``mim`` does for mmseg. Examples::

    condnet-configs                  # every packaged config: its name and its file
    condnet-configs ade20k           # those whose name contains "ade20k"
    condnet-train condnet_r18-d8_scenes --cfg-options runner.max_iters=20
"""

from __future__ import annotations

import argparse
import sys

from .cli_common import command_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("configs"),
        description="List the configs shipped with condnet: the name every command takes "
        "in place of a config file, and the file it stands for.",
    )
    parser.add_argument(
        "filter", nargs="?", default="", help="only names containing this (any case)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here: the config package imports the model zoo, which --help does not need.
    from ..engine.config import close_config_names, packaged_configs

    needle = args.filter.lower()
    chosen = {name: path for name, path in packaged_configs().items() if needle in name.lower()}
    if not chosen:
        close = close_config_names(args.filter)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        print(f"error: no packaged config name contains {args.filter!r}{hint}", file=sys.stderr)
        return 1
    width = max(len(name) for name in chosen)
    for name, path in chosen.items():
        print(f"{name:<{width}}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
