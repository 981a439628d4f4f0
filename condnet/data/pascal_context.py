"""PASCAL Context with its 59 most frequent classes, in the VOC2010 layout.

Layout (default root ``data/VOCdevkit/VOC2010``)::

    VOC2010/
      JPEGImages/2008_000002.jpg ...
      SegmentationClassContext/2008_000002.png ...
      ImageSets/SegmentationContext/train.txt   (4996 names)
      ImageSets/SegmentationContext/val.txt     (5104 names)

``SegmentationClassContext`` holds 0 for background/the other 400 classes and
1..59 for the 59 classes, as written by mmsegmentation's
``tools/convert_datasets/pascal_context.py`` (from ``trainval_merged.json``
with the Detail API). ``reduce_zero_label=True`` (the default) maps 0 to 255
(ignored) and 1..59 to 0..58.
"""

from __future__ import annotations

from .ade import ADE_PALETTE
from .layout import DatasetFolders, LayoutDataset

CONTEXT59_CLASSES = (
    "aeroplane",
    "bag",
    "bed",
    "bedclothes",
    "bench",
    "bicycle",
    "bird",
    "boat",
    "book",
    "bottle",
    "building",
    "bus",
    "cabinet",
    "car",
    "cat",
    "ceiling",
    "chair",
    "cloth",
    "computer",
    "cow",
    "cup",
    "curtain",
    "dog",
    "door",
    "fence",
    "floor",
    "flower",
    "food",
    "grass",
    "ground",
    "horse",
    "keyboard",
    "light",
    "motorbike",
    "mountain",
    "mouse",
    "person",
    "plate",
    "platform",
    "pottedplant",
    "road",
    "rock",
    "sheep",
    "shelves",
    "sidewalk",
    "sign",
    "sky",
    "snow",
    "sofa",
    "table",
    "track",
    "train",
    "tree",
    "truck",
    "tvmonitor",
    "wall",
    "water",
    "window",
    "wood",
)
# mmsegmentation's Pascal Context 59 colours: ADE's palette entries 1..59.
CONTEXT59_PALETTE = ADE_PALETTE[1:60]

CONTEXT_LAYOUT = """  <root>/JPEGImages/<name>.jpg
  <root>/SegmentationClassContext/<name>.png   (0 = background, 1..59 = classes)
  <root>/ImageSets/SegmentationContext/{train,val}.txt   (one <name> per line)"""


class PascalContext59Dataset(LayoutDataset):
    """PASCAL Context 59 (see the module docstring).

    Args:
        root: the ``VOC2010`` folder.
        split: a file name stem under ``ImageSets/SegmentationContext`` (``"train"``, ``"val"``).
        pipeline, reduce_zero_label, on_corrupt, ignore_index: see :class:`SegDataset`.
    """

    CLASSES = CONTEXT59_CLASSES
    PALETTE = CONTEXT59_PALETTE
    DEFAULT_ROOT = "data/VOCdevkit/VOC2010"
    LAYOUT = CONTEXT_LAYOUT
    FOLDERS = DatasetFolders(
        img_dir="JPEGImages",
        ann_dir="SegmentationClassContext",
        split_file="ImageSets/SegmentationContext/{split}.txt",
    )
    REDUCE_ZERO_LABEL = True
    OPTIONS = ("pipeline", "reduce_zero_label", "on_corrupt", "ignore_index", "classes", "palette")
