"""Measured, not assumed: how much a global colour classifier loses on the scenes.

The scene set (:mod:`condnet.demo.scenes`) is meant to hold the situation a
conditional classifier is for: a class's colour varies from image to image
but is consistent inside one. :func:`colour_cue_check` measures that on the
written files, with colour as the only cue:

- **global**: one colour -> class table for the whole dataset (the majority
  class of each of 16^3 colour bins over the training pixels), as a
  classifier with one set of weights can at best do with colour;
- **per image**: each validation image's own class-mean colours, and every
  pixel labelled with the nearest one, as a classifier conditioned on the
  image could do (an oracle: it is given the image's class means).

Colours are 7x7 box-blurred first (the textures average out); ignored
("other") pixels are left out. The gap between the two is what the per-image
classifier can use and a global one cannot.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from condnet.data.scenes import SCENE_CLASSES, SPLIT_DIRS

__all__ = ["colour_cue_check"]

_BINS = 16
_BLUR = 7


def _box_blur(img: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window (edges padded by reflection)."""
    pad = size // 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    total = padded.cumsum(0).cumsum(1)
    total = np.pad(total, ((1, 0), (1, 0), (0, 0)))
    h, w = img.shape[:2]
    window = (
        total[size : size + h, size : size + w]
        - total[:h, size : size + w]
        - total[size : size + h, :w]
        + total[:h, :w]
    )
    return window / (size * size)


def _pixels(root: Path, split: str, limit: int | None):
    """(blurred colours (N, 3) in 0-255, labels (N,) in 0..K-1) per image of ``split``."""
    images = sorted((root / "images" / SPLIT_DIRS[split]).glob("scene_*"))
    if not images:
        raise FileNotFoundError(f"no scenes in {root / 'images' / SPLIT_DIRS[split]}")
    for path in images[:limit]:
        img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        ann = root / "annotations" / SPLIT_DIRS[split] / (path.stem + ".png")
        label = np.asarray(Image.open(ann), dtype=np.int64) - 1  # 0 = other -> -1
        keep = label >= 0
        yield _box_blur(img, _BLUR)[keep], label[keep]


def _bins(colours: np.ndarray) -> np.ndarray:
    q = np.clip((colours * _BINS / 256).astype(np.int64), 0, _BINS - 1)
    return (q[:, 0] * _BINS + q[:, 1]) * _BINS + q[:, 2]


def colour_cue_check(root: str | os.PathLike, max_images: int | None = None) -> dict:
    """Pixel accuracy of the global and the per-image colour classifiers (see the module).

    Args:
        root: a scene set written by :func:`condnet.demo.write_scenes`.
        max_images: use at most this many images of each split (None: all).

    Returns:
        ``{"global_accuracy", "per_image_accuracy"}`` (fractions of the
        validation pixels that are not ignored) and ``"images"`` (train, val).
    """
    root = Path(root)
    K = len(SCENE_CLASSES)
    counts = np.zeros(_BINS**3 * K, dtype=np.int64)
    num_train = 0
    for colours, label in _pixels(root, "train", max_images):
        counts += np.bincount(_bins(colours) * K + label, minlength=counts.size)
        num_train += 1
    table = counts.reshape(_BINS**3, K).argmax(1)
    right_global = right_image = total = num_val = 0
    for colours, label in _pixels(root, "val", max_images):
        right_global += int((table[_bins(colours)] == label).sum())
        present = np.unique(label)
        means = np.stack([colours[label == k].mean(0) for k in present])
        nearest = ((colours[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
        right_image += int((present[nearest] == label).sum())
        total += label.size
        num_val += 1
    total = max(total, 1)
    return {
        "global_accuracy": right_global / total,
        "per_image_accuracy": right_image / total,
        "images": (num_train, num_val),
    }
