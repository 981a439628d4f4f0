"""A dataset of your own: an ``images/`` and an ``annotations/`` folder plus class names.

Layout::

    <root>/images[/<split>]/<name><img_suffix>          (e.g. .jpg)
    <root>/annotations[/<split>]/<name><ann_suffix>     (e.g. .png, class index per pixel)

Every image (sorted by name) pairs with the annotation of the same stem.
``classes`` is a sequence of names or the path of a text file with one name per
line (blank lines ignored). Annotations hold 0..K-1 and 255 for ignore, or, with
``reduce_zero_label=True``, 0 for "other" and 1..K.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .layout import DatasetFolders, LayoutDataset

FOLDER_LAYOUT = """  <root>/images[/<split>]/<name>.jpg
  <root>/annotations[/<split>]/<name>.png"""


def read_class_names(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from a text file, one per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path} (one class name per line)")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise ValueError(f"class list {path} has no names")
    return names


class FolderDataset(LayoutDataset):
    """Images and annotations in two folders (see the module docstring).

    Args:
        root: the folder holding ``images/`` and ``annotations/``.
        classes: class names, or a path to a file with one name per line.
        split: optional sub-folder of both (e.g. ``"train"``).
        img_suffix, ann_suffix: file endings.
        palette: one ``(r, g, b)`` per class; default the VOC colour map.
        pipeline, reduce_zero_label, on_corrupt, ignore_index: see :class:`SegDataset`.
    """

    LAYOUT = FOLDER_LAYOUT
    FOLDERS = DatasetFolders(img_dir="images/{split}", ann_dir="annotations/{split}")
    POSITIONAL = ("root", "classes", "split")
    DEFAULT_SPLIT = None
    OPTIONS = (
        "img_suffix",
        "ann_suffix",
        "palette",
        "pipeline",
        "reduce_zero_label",
        "on_corrupt",
        "ignore_index",
    )

    def class_names(self, classes: Any) -> Sequence[str]:
        """The names given, or read from the file whose path is given."""
        if isinstance(classes, (str, os.PathLike)):
            return read_class_names(classes)
        return classes
