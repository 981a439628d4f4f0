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

from pathlib import Path

from .base import require_dir, require_files
from .layout import DatasetFolders, LayoutDataset

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


class CityscapesDataset(LayoutDataset):
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
    FOLDERS = DatasetFolders(
        img_dir="leftImg8bit/{split}",
        ann_dir="gtFine/{split}",
        img_suffix=IMG_SUFFIX,
        ann_suffix=ANN_SUFFIX,
    )
    OPTIONS = ("pipeline", "on_corrupt", "ignore_index", "classes", "palette")

    def find_samples(self, img_suffix: str, ann_suffix: str) -> list[tuple[Path, Path]]:
        """Every image one city folder down, paired with the same city's train ids."""
        img_dir = require_dir(self.folder(self.FOLDERS.img_dir), self.LAYOUT)
        ann_dir = require_dir(self.folder(self.FOLDERS.ann_dir), self.LAYOUT)
        images = sorted(img_dir.glob(f"*/*{img_suffix}"))
        if not images:
            raise FileNotFoundError(
                f"no *{img_suffix} images in {img_dir}/<city>/\nexpected layout:\n{self.LAYOUT}"
            )
        samples = [
            (p, ann_dir / p.parent.name / (p.name[: -len(img_suffix)] + ann_suffix)) for p in images
        ]
        require_files(
            samples,
            self.LAYOUT,
            hint=f"\nmake the *{ann_suffix} files with: python -m "
            f"condnet.tools.convert_cityscapes {self.root}",
        )
        return samples
