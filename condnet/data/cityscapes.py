"""Cityscapes (fine annotations, 19 evaluated classes).

Layout (default root ``data/cityscapes``)::

    cityscapes/
      leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

The ``*_labelTrainIds.png`` files (0..18, 255 = ignore) are not in the
download; make them from the released ``*_labelIds.png`` once with
``python -m condnet.tools.convert_cityscapes data/cityscapes``. Samples are every
``*_leftImg8bit.png`` of the split, sorted by city and name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .base import Pipeline, SegDataset, require_dir, require_files

CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)

CITYSCAPES_LAYOUT = """  <root>/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
  <root>/gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png"""
IMG_SUFFIX = "_leftImg8bit.png"
ANN_SUFFIX = "_gtFine_labelTrainIds.png"


class CityscapesDataset(SegDataset):
    """Cityscapes fine (see the module docstring).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` (or ``"test"``, whose labels are all ignore).
        pipeline, on_corrupt, ignore_index: see :class:`SegDataset`
            (``reduce_zero_label`` is off: train ids start at 0).
    """

    CLASSES = CITYSCAPES_CLASSES
    PALETTE = CITYSCAPES_PALETTE
    DEFAULT_ROOT = "data/cityscapes"
    LAYOUT = CITYSCAPES_LAYOUT

    def __init__(
        self,
        root: str | os.PathLike = DEFAULT_ROOT,
        split: str = "train",
        *,
        pipeline: Pipeline | None = None,
        on_corrupt: str = "error",
        ignore_index: int = 255,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
    ):
        self.root = Path(root)
        self.split = split
        img_dir = require_dir(self.root / "leftImg8bit" / split, self.LAYOUT)
        ann_dir = require_dir(self.root / "gtFine" / split, self.LAYOUT)
        images = sorted(img_dir.glob(f"*/*{IMG_SUFFIX}"))
        if not images:
            raise FileNotFoundError(
                f"no *{IMG_SUFFIX} images in {img_dir}/<city>/\nexpected layout:\n{self.LAYOUT}"
            )
        samples = [
            (p, ann_dir / p.parent.name / (p.name[: -len(IMG_SUFFIX)] + ANN_SUFFIX)) for p in images
        ]
        require_files(
            samples,
            self.LAYOUT,
            hint=f"\nmake the *{ANN_SUFFIX} files with: python -m "
            f"condnet.tools.convert_cityscapes {self.root}",
        )
        super().__init__(
            samples,
            classes=classes,
            palette=palette,
            pipeline=pipeline,
            reduce_zero_label=False,
            ignore_index=ignore_index,
            on_corrupt=on_corrupt,
        )
