"""Datasets, transforms and loaders for semantic segmentation (mmsegmentation style).

Datasets are plain ``torch.utils.data.Dataset`` objects configured by their
constructor. A sample is a dict:

``img``
    float32 tensor ``3xHxW``, normalised with the ImageNet mean/std (RGB, 0-255 units).
``gt_semantic_seg``
    int64 tensor ``HxW`` of class indices in ``[0, num_classes)``, 255 = ignore. In the
    training pipeline it matches ``img`` pixel for pixel (padded with 255); in the
    evaluation pipeline it stays at the original resolution ``ori_shape``.
metadata
    ``filename``, ``ann_filename``, ``index``, ``ori_shape`` ``(H, W)`` as decoded,
    ``img_shape`` ``(H, W)`` after resize/crop, ``scale_factor`` ``(sx, sy)``,
    and as the pipeline adds them ``crop_bbox``, ``flip``, ``pad_shape``, ``img_norm_cfg``.

Example::

    from condnet.data import ADE20KDataset, build_dataloader, train_pipeline
    ds = ADE20KDataset("data/ade/ADEChallengeData2016", "train", pipeline=train_pipeline())
    loader = build_dataloader(ds, batch_size=16, seed=0, num_workers=8, drop_last=True)
"""

from .ade import ADE_CLASSES, ADE_PALETTE, ADE20KDataset
from .base import SegDataset
from .cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, CityscapesDataset
from .cityscapes_convert import label_ids_to_train_ids
from .folder import FolderDataset
from .layout import DatasetFolders, LayoutDataset
from .loader import SeededSampler, build_dataloader, collate_samples, worker_init_fn
from .loading import CorruptFileError, read_image, read_label
from .palette import colorize, label_colormap
from .pascal_context import CONTEXT59_CLASSES, CONTEXT59_PALETTE, PascalContext59Dataset
from .pipelines import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    ToTensor,
    eval_pipeline,
    train_pipeline,
)
from .scenes import SCENE_CLASSES, SCENE_PALETTE, SceneDataset
from .transforms import Normalize, Pad, PhotoMetricDistortion, RandomCrop, RandomFlip, Resize
from .voc import VOC_CLASSES, VOC_PALETTE, VOCDataset

__all__ = [
    "ADE20KDataset",
    "ADE_CLASSES",
    "ADE_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "CONTEXT59_CLASSES",
    "CONTEXT59_PALETTE",
    "CityscapesDataset",
    "Compose",
    "CorruptFileError",
    "DatasetFolders",
    "FolderDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LayoutDataset",
    "Normalize",
    "Pad",
    "PascalContext59Dataset",
    "PhotoMetricDistortion",
    "RandomCrop",
    "RandomFlip",
    "Resize",
    "SCENE_CLASSES",
    "SCENE_PALETTE",
    "SceneDataset",
    "SeededSampler",
    "SegDataset",
    "ToTensor",
    "VOCDataset",
    "VOC_CLASSES",
    "VOC_PALETTE",
    "build_dataloader",
    "collate_samples",
    "colorize",
    "eval_pipeline",
    "label_colormap",
    "label_ids_to_train_ids",
    "read_image",
    "read_label",
    "train_pipeline",
    "worker_init_fn",
]
