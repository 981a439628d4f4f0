"""``tools/convert_voc_aug.py DEVKIT``: SBD's ("VOCaug") masks as PNGs for
:class:`~condnet.data.VOCDataset` (:mod:`condnet.data.voc_aug`; needs scipy).

Example::

    python tools/convert_voc_aug.py data/VOCdevkit [--nproc 2]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..data.voc_aug import convert_sbd
from .cli_common import command_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("convert_voc_aug"),
        description="Convert SBD (VOCaug) .mat masks to VOC2012/SegmentationClassAug PNGs "
        "and write ImageSets/Segmentation/{trainaug,aug}.txt.",
    )
    parser.add_argument("devkit", help="the VOCdevkit folder (data/VOCdevkit)")
    parser.add_argument("--nproc", type=int, default=1, help="worker processes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        masks, n_trainaug, n_aug = convert_sbd(args.devkit, args.nproc)
    except (OSError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {masks} masks; trainaug.txt: {n_trainaug} names, aug.txt: {n_aug} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
