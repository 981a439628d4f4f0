"""``condnet-make-scenes``: write the generated scene set (:mod:`condnet.demo.scenes`).

Example::

    python tools/make_scenes.py --out data/scenes --seed 0 --num-train 200 --num-val 50 --size 192

The files are byte-identical for a given seed (and the same numpy and Pillow).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..demo.scenes import write_scenes
from .cli_common import command_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("make_scenes"),
        description="Write the generated scene set (ADE20K layout, 8 classes).",
    )
    parser.add_argument("--out", default="data/scenes", help="output root (data/scenes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--size", type=int, default=192, help="image height in pixels")
    parser.add_argument("--format", choices=("jpg", "png"), default="jpg", dest="image_format")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the scenes already in --out"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        write_scenes(
            args.out,
            args.seed,
            args.num_train,
            args.num_val,
            args.size,
            args.image_format,
            args.overwrite,
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.num_train} training and {args.num_val} validation scenes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
