"""Convert Cityscapes ``*_gtFine_labelIds.png`` to ``*_gtFine_labelTrainIds.png``.

The released annotations store the 34 "label ids" (plus 255 for the licence
plate, whose id is -1); training uses the 19 evaluated classes as train ids
0..18 and 255 for everything else, following ``cityscapesscripts``'s table.
Any value that is not a Cityscapes label id is an error naming the file.

The command line is ``tools/convert_cityscapes.py`` (it writes next to each
source file; existing outputs are kept unless ``--overwrite``)::

    python tools/convert_cityscapes.py data/cityscapes [--splits train val] [--nproc 2]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .loading import read_label

IGNORE = 255
# label id -> train id, for ids 0..33 (cityscapesscripts' labels.py).
LABEL_ID_TO_TRAIN_ID = {
    0: IGNORE,
    1: IGNORE,
    2: IGNORE,
    3: IGNORE,
    4: IGNORE,
    5: IGNORE,
    6: IGNORE,
    7: 0,
    8: 1,
    9: IGNORE,
    10: IGNORE,
    11: 2,
    12: 3,
    13: 4,
    14: IGNORE,
    15: IGNORE,
    16: IGNORE,
    17: 5,
    18: IGNORE,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    29: IGNORE,
    30: IGNORE,
    31: 16,
    32: 17,
    33: 18,
    255: IGNORE,  # licence plate (id -1) as stored in the 8-bit PNGs
}
_UNKNOWN = -1
_LUT = np.full(256, _UNKNOWN, dtype=np.int16)
for _label_id, _train_id in LABEL_ID_TO_TRAIN_ID.items():
    _LUT[_label_id] = _train_id

SRC_SUFFIX = "_gtFine_labelIds.png"
DST_SUFFIX = "_gtFine_labelTrainIds.png"


def label_ids_to_train_ids(label_ids: np.ndarray, source: str = "label map") -> np.ndarray:
    """Map an ``HxW`` array of Cityscapes label ids to uint8 train ids (255 = ignore)."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype != np.uint8:
        if label_ids.size and (label_ids.min() < 0 or label_ids.max() > 255):
            bad = np.unique(label_ids[(label_ids < 0) | (label_ids > 255)])[:10]
            raise ValueError(f"{source}: values {bad.tolist()} are not Cityscapes label ids")
        label_ids = label_ids.astype(np.uint8)
    mapped = _LUT[label_ids]
    if (mapped == _UNKNOWN).any():
        bad = np.unique(label_ids[mapped == _UNKNOWN])[:10]
        raise ValueError(
            f"{source}: values {bad.tolist()} are not Cityscapes label ids (expected 0..33 or 255)"
        )
    return mapped.astype(np.uint8)


def convert_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Read a ``*_labelIds.png``, write the train-id PNG to ``dst``."""
    train_ids = label_ids_to_train_ids(read_label(src), source=os.fspath(src))
    Image.fromarray(train_ids).save(dst)


def _convert_pair(pair: tuple[str, str]) -> None:
    convert_file(*pair)


def convert_tree(
    root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    overwrite: bool = False,
    nproc: int = 1,
) -> int:
    """Convert every ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` under ``root``.

    Returns the number of files written. Raises ``FileNotFoundError`` when a
    split folder is missing or holds no ``*_labelIds.png``.
    """
    root = Path(root)
    pairs = []
    for split in splits:
        split_dir = root / "gtFine" / split
        if not split_dir.is_dir():
            raise FileNotFoundError(
                f"Cityscapes annotation folder not found: {split_dir}\n"
                f"expected <root>/gtFine/{split}/<city>/*{SRC_SUFFIX}"
            )
        sources = sorted(split_dir.glob(f"*/*{SRC_SUFFIX}"))
        if not sources:
            raise FileNotFoundError(f"no *{SRC_SUFFIX} files in {split_dir}/<city>/")
        for src in sources:
            dst = src.with_name(src.name[: -len(SRC_SUFFIX)] + DST_SUFFIX)
            if overwrite or not dst.exists():
                pairs.append((str(src), str(dst)))
    if nproc > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(nproc) as pool:
            list(pool.map(_convert_pair, pairs, chunksize=16))
    else:
        for pair in pairs:
            _convert_pair(pair)
    return len(pairs)
