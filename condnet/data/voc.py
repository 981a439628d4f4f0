"""PASCAL VOC 2012 (21 classes, background included), optionally with SBD's extra masks.

Layout (default root ``data/VOCdevkit/VOC2012``)::

    VOC2012/
      JPEGImages/<name>.jpg
      SegmentationClass/<name>.png          (palette PNG: 0..20, 255 = boundary/ignore)
      ImageSets/Segmentation/{train,val,trainval}.txt
      # only for split="trainaug" / "aug" (SBD, 10582 / 9118 names):
      SegmentationClassAug/<name>.png       (8-bit PNG: 0..20)
      ImageSets/Segmentation/{trainaug,aug}.txt

SBD ("VOCaug", ``data/VOCdevkit/VOCaug/dataset/cls/*.mat``) stores its masks in
MATLAB files; ``python -m condnet.tools.convert_voc_aug data/VOCdevkit`` (needs scipy)
converts them into ``SegmentationClassAug`` and writes the two split files, as
mmsegmentation's converter does. A ``SegmentationClassAug`` folder from another
source (e.g. the widely shared ``SegmentationClassAug.zip``) works too, with
your own ``trainaug.txt``.

For ``trainaug``/``aug`` each name takes VOC's own ``SegmentationClass`` mask when
there is one (it has the ignore boundaries) and the SBD mask otherwise.
"""

from __future__ import annotations

from pathlib import Path

from .base import read_split_file, require_dir, require_files
from .layout import DatasetFolders, LayoutDataset
from .palette import label_colormap

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_PALETTE = label_colormap(len(VOC_CLASSES))

VOC_LAYOUT = """  <root>/JPEGImages/<name>.jpg
  <root>/SegmentationClass/<name>.png
  <root>/ImageSets/Segmentation/{train,val,trainval}.txt   (one <name> per line)
  for split='trainaug'/'aug' also (from SBD, see condnet.tools.convert_voc_aug):
  <root>/SegmentationClassAug/<name>.png
  <root>/ImageSets/Segmentation/{trainaug,aug}.txt"""
AUG_SPLITS = ("trainaug", "aug")
# SBD's masks, for AUG_SPLITS, where VOC's own SegmentationClass has none.
AUG_ANN_DIR = "SegmentationClassAug"
SPLIT_FILE = "ImageSets/Segmentation/{split}.txt"


class VOCDataset(LayoutDataset):
    """PASCAL VOC 2012 segmentation (see the module docstring).

    Args:
        root: the ``VOC2012`` folder.
        split: a stem under ``ImageSets/Segmentation`` (``train``, ``val``,
            ``trainval``), or ``trainaug``/``aug`` to add the SBD masks.
        pipeline, reduce_zero_label, on_corrupt, ignore_index: see :class:`SegDataset`
            (``reduce_zero_label`` is off: 0 is the background class).
    """

    CLASSES = VOC_CLASSES
    PALETTE = VOC_PALETTE
    DEFAULT_ROOT = "data/VOCdevkit/VOC2012"
    LAYOUT = VOC_LAYOUT
    FOLDERS = DatasetFolders(
        img_dir="JPEGImages",
        ann_dir="SegmentationClass",
        split_file=SPLIT_FILE,
    )
    OPTIONS = ("pipeline", "reduce_zero_label", "on_corrupt", "ignore_index", "classes", "palette")

    def find_samples(self, img_suffix: str, ann_suffix: str) -> list[tuple[Path, Path]]:
        """The split file's names; for ``AUG_SPLITS`` each takes VOC's own mask where
        there is one and SBD's otherwise."""
        require_dir(self.root, self.LAYOUT)
        hint = ""
        ann_dirs = [self.folder(self.FOLDERS.ann_dir)]
        if self.split in AUG_SPLITS:
            ann_dirs.append(self.folder(AUG_ANN_DIR))
            hint = (
                f"\nfor split={self.split!r} convert SBD first: python -m "
                f"condnet.tools.convert_voc_aug {self.root.parent}"
            )
            require_dir(ann_dirs[-1], self.LAYOUT + hint)
        names = read_split_file(self.folder(SPLIT_FILE), self.LAYOUT + hint)
        img_dir = self.folder(self.FOLDERS.img_dir)
        samples = []
        for name in names:
            candidates = [d / f"{name}{ann_suffix}" for d in ann_dirs]
            ann = next((c for c in candidates if c.is_file()), candidates[-1])
            samples.append((img_dir / f"{name}{img_suffix}", ann))
        require_files(samples, self.LAYOUT, hint)
        return samples
