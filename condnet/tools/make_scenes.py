"""``condnet-make-scenes``: write the generated scene set (:mod:`condnet.demo.scenes`).

Example::

    python tools/make_scenes.py --out data/scenes/cue --num-train 200 --num-val 50 --size 128
    python tools/make_scenes.py --out data/scenes/control --colours region --size 128

The files are byte-identical for a given seed (and the same numpy and Pillow).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..demo.scenes import COLOUR_MODES, write_scenes
from .cli_common import command_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("make_scenes"),
        description="Write the generated scene set (ADE20K layout, 8 classes).",
    )
    parser.add_argument(
        "--out",
        default="data/scenes/cue",
        help="output root (data/scenes/cue, where the configs read; the demo writes the "
        "control set to data/scenes/control)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=200)
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--size", type=int, default=128, help="image height in pixels (128)")
    parser.add_argument(
        "--colours",
        choices=COLOUR_MODES,
        default="image",
        help="a class's colours drawn per image (the per-image cue; default) or per "
        "region (the control set without it)",
    )
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
            args.colours,
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.num_train} training and {args.num_val} validation scenes "
        f"(colours per {args.colours}) to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
