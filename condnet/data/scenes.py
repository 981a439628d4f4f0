"""The generated scene set as a dataset: 8 texture classes, read from the files the
demo's generator writes (:mod:`condnet.demo.scenes`, ``condnet-make-scenes``).

The set is in the ADE20K layout, with a metadata file::

    <root>/images/{training,validation}/scene_000000.jpg   (or .png)
    <root>/annotations/{training,validation}/scene_000000.png
    <root>/scenes.json                                     (classes, palette, settings)

Annotations hold 0 for "other" and ``k + 1`` for ``SCENE_CLASSES[k]``, so
:class:`SceneDataset` (ADE20K's reader with ``reduce_zero_label``) gives labels
0..7 with "other" as 255 (ignored). Reading needs nothing from the generator: the
scenes are ordinary image and mask files.
"""

from __future__ import annotations

import json
from pathlib import Path

from .ade import ADE_LAYOUT, ADE_SPLITS, ADE20KDataset
from .layout import LayoutDataset

SCENE_CLASSES = ("stripes", "checker", "dots", "waves", "rings", "clouds", "speckle", "grid")
SCENE_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)
#: The folder each split is written in.
SPLIT_DIRS = {"train": "training", "val": "validation"}
#: The set's metadata file, under its root.
METADATA_FILE = "scenes.json"


class SceneDataset(LayoutDataset):
    """The generated scenes, read as ADE20K with :data:`SCENE_CLASSES` (8 classes).

    Args:
        root: the folder given to ``--out`` (default ``data/scenes/cue``, the demo's
            cue set; ``data/scenes/control`` is its control set).
        split: ``"train"`` or ``"val"``.
        pipeline, on_corrupt: see :class:`~condnet.data.SegDataset`.

    The image suffix comes from ``scenes.json`` (``.jpg`` if that file is absent).
    """

    CLASSES = SCENE_CLASSES
    PALETTE = SCENE_PALETTE
    DEFAULT_ROOT = "data/scenes/cue"
    LAYOUT = ADE_LAYOUT
    FOLDERS = ADE20KDataset.FOLDERS
    SPLITS = ADE_SPLITS
    REDUCE_ZERO_LABEL = True
    OPTIONS = ("pipeline", "on_corrupt")

    def find_samples(self, img_suffix: str, ann_suffix: str) -> list[tuple[Path, Path]]:
        """ADE20K's samples, with the image suffix the set was written with."""
        meta_path = self.root / METADATA_FILE
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            img_suffix = "." + meta.get("image_format", "jpg")
            if tuple(meta.get("classes", SCENE_CLASSES)) != SCENE_CLASSES:
                raise ValueError(
                    f"{meta_path} lists classes {meta['classes']}, this version "
                    f"of condnet expects {list(SCENE_CLASSES)}; regenerate it"
                )
        return super().find_samples(img_suffix, ann_suffix)
