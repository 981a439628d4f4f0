"""``tools/convert_cityscapes.py ROOT``: write Cityscapes' ``*_gtFine_labelTrainIds.png``
(:mod:`condnet.data.cityscapes_convert`).

Example::

    python tools/convert_cityscapes.py data/cityscapes [--splits train val] [--nproc 2]

Each output is written next to its ``*_gtFine_labelIds.png``; existing outputs
are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..data.cityscapes_convert import DST_SUFFIX, convert_tree
from .cli_common import command_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("convert_cityscapes"),
        description="Write *_gtFine_labelTrainIds.png (19 classes, 255 = ignore) next to "
        "each *_gtFine_labelIds.png of a Cityscapes tree.",
    )
    parser.add_argument("root", help="the Cityscapes root holding gtFine/ (data/cityscapes)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--nproc", type=int, default=1, help="worker processes")
    parser.add_argument("--overwrite", action="store_true", help="redo existing outputs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = convert_tree(args.root, args.splits, args.overwrite, args.nproc)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {written} *{DST_SUFFIX} file(s) under {Path(args.root) / 'gtFine'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
