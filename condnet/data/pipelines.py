"""Chaining transforms, the final conversion to tensors, and the standard pipelines.

:func:`train_pipeline` is mmseg's ADE20K/Cityscapes training recipe::

    Resize((2048, 512), ratio_range=(0.5, 2.0))  # random 0.5x-2x rescale, keep ratio
    RandomCrop((512, 512), cat_max_ratio=0.75)
    RandomFlip(0.5)
    PhotoMetricDistortion()
    Normalize(IMAGENET_MEAN, IMAGENET_STD)
    Pad((512, 512), pad_val=0, seg_pad_val=255)
    ToTensor()

:func:`eval_pipeline` resizes the image only (keep ratio) and leaves
``gt_semantic_seg`` at the original resolution ``ori_shape``, where metrics are
computed (resize the prediction back to ``ori_shape`` first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .transforms import (
    LABEL_KEY,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    Resize,
)

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255 units
IMAGENET_STD = (58.395, 57.12, 57.375)


class Compose:
    """Apply ``transforms`` in order: ``Compose([...])(results, rng)``."""

    def __init__(self, transforms: Sequence[Callable[[dict, np.random.Generator], dict]]):
        self.transforms = list(transforms)

    def __call__(self, results: dict, rng: np.random.Generator | None = None) -> dict:
        if rng is None:
            rng = np.random.default_rng()
        for transform in self.transforms:
            results = transform(results, rng)
        return results

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class ToTensor:
    """``img`` to a float32 ``3xHxW`` tensor; ``gt_semantic_seg`` to an int64 ``HxW`` tensor.

    mmseg's ``DefaultFormatBundle``. A uint8 image becomes float32 0-255 values.
    """

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        img = np.asarray(results["img"], dtype=np.float32)
        results["img"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if LABEL_KEY in results:
            label = np.asarray(results[LABEL_KEY], dtype=np.int64)
            results[LABEL_KEY] = torch.from_numpy(np.ascontiguousarray(label))
        return results

    def __repr__(self) -> str:
        return "ToTensor()"


def train_pipeline(
    scale: Sequence[int] = (2048, 512),
    ratio_range: Sequence[float] | None = (0.5, 2.0),
    crop_size: Sequence[int] = (512, 512),
    cat_max_ratio: float = 0.75,
    flip_prob: float = 0.5,
    photometric: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    ignore_index: int = 255,
) -> Compose:
    """The training pipeline above; every step's setting is an argument."""
    steps: list = [
        Resize(scale, ratio_range=ratio_range, keep_ratio=True),
        RandomCrop(crop_size, cat_max_ratio=cat_max_ratio, ignore_index=ignore_index),
        RandomFlip(flip_prob),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion())
    steps += [Normalize(mean, std), Pad(crop_size, pad_val=0, seg_pad_val=ignore_index), ToTensor()]
    return Compose(steps)


def eval_pipeline(
    scale: Sequence[int] = (2048, 512),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Resize the image to ``scale`` (keep ratio), normalise; the label stays at ``ori_shape``."""
    return Compose(
        [Resize(scale, keep_ratio=True, resize_label=False), Normalize(mean, std), ToTensor()]
    )
