"""Convert the SBD ("VOCaug") masks to PNG for :class:`~condnet.data.VOCDataset`.

Reads (under a ``VOCdevkit`` folder)::

    VOCaug/dataset/cls/<name>.mat            (MATLAB struct GTcls.Segmentation: 0..20)
    VOCaug/dataset/{train,val}.txt
    VOC2012/ImageSets/Segmentation/{train,val}.txt

and writes::

    VOC2012/SegmentationClassAug/<name>.png  (8-bit, one per .mat file)
    VOC2012/ImageSets/Segmentation/trainaug.txt  = VOC train + SBD train/val - VOC val
    VOC2012/ImageSets/Segmentation/aug.txt       = SBD train/val - VOC train - VOC val

(10582 and 9118 names for the real data; the lists are written sorted.) Reading
``.mat`` files needs scipy, which is an optional dependency. The command line
is ``tools/convert_voc_aug.py``::

    python tools/convert_voc_aug.py data/VOCdevkit [--nproc 2]
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from .base import read_split_file, require_dir

SBD_LAYOUT = """  <devkit>/VOCaug/dataset/cls/<name>.mat
  <devkit>/VOCaug/dataset/{train,val}.txt
  <devkit>/VOC2012/ImageSets/Segmentation/{train,val}.txt"""


def read_sbd_mask(path: str | Path) -> np.ndarray:
    """The ``GTcls.Segmentation`` array of an SBD ``.mat`` file, as uint8."""
    try:
        from scipy.io import loadmat
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading SBD .mat files needs scipy: pip install scipy") from err
    try:
        mask = loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
    except (KeyError, AttributeError, ValueError, OSError) as err:
        raise ValueError(f"{path}: not an SBD class mask (no GTcls.Segmentation): {err}") from err
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0 or mask.min() < 0 or mask.max() > 255:
        raise ValueError(f"{path}: GTcls.Segmentation is not an HxW mask of 0..255 values")
    return mask.astype(np.uint8)


def _convert(pair: tuple[str, str]) -> None:
    Image.fromarray(read_sbd_mask(pair[0])).save(pair[1])


def convert_sbd(devkit: str | Path, nproc: int = 1) -> tuple[int, int, int]:
    """Do the conversion above; returns (masks written, trainaug names, aug names)."""
    devkit = Path(devkit)
    cls_dir = require_dir(devkit / "VOCaug" / "dataset" / "cls", SBD_LAYOUT)
    sbd_names = set(read_split_file(devkit / "VOCaug" / "dataset" / "train.txt", SBD_LAYOUT))
    sbd_names |= set(read_split_file(devkit / "VOCaug" / "dataset" / "val.txt", SBD_LAYOUT))
    sets_dir = devkit / "VOC2012" / "ImageSets" / "Segmentation"
    voc_train = set(read_split_file(sets_dir / "train.txt", SBD_LAYOUT))
    voc_val = set(read_split_file(sets_dir / "val.txt", SBD_LAYOUT))

    mats = sorted(cls_dir.glob("*.mat"))
    if not mats:
        raise FileNotFoundError(f"no .mat files in {cls_dir}\nexpected layout:\n{SBD_LAYOUT}")
    out_dir = devkit / "VOC2012" / "SegmentationClassAug"
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(str(m), str(out_dir / f"{m.stem}.png")) for m in mats]
    if nproc > 1:
        with ProcessPoolExecutor(nproc) as pool:
            list(pool.map(_convert, pairs, chunksize=32))
    else:
        for pair in pairs:
            _convert(pair)

    trainaug = sorted((voc_train | sbd_names) - voc_val)
    aug = sorted(sbd_names - voc_train - voc_val)
    (sets_dir / "trainaug.txt").write_text("".join(f"{n}\n" for n in trainaug))
    (sets_dir / "aug.txt").write_text("".join(f"{n}\n" for n in aug))
    return len(pairs), len(trainaug), len(aug)
