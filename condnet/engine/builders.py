"""The model, datasets and training loader that a :class:`~condnet.engine.config.Config`
describes (see :mod:`condnet.engine.config` for the keys). The config's sections have
checked every value; these functions only build."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import torch

from condnet import data as cdata
from condnet.models import Segmentor
from condnet.models import build_model as _build_model

from .config import Config, ConfigError

_SPLITS = ("train", "val")


def build_model(cfg: Config) -> Segmentor:
    """The :class:`~condnet.models.Segmentor` of ``cfg.model.config``, with the backbone
    weights ``cfg.model.pretrained_backbone`` (False, True for timm's, or a checkpoint
    path).

    Built on torch's current default device (``with torch.device("meta"): ...`` works).
    """
    return _build_model(cfg.model.config, pretrained_backbone=cfg.model.pretrained_backbone)


def _root_hint(name: str, cls: type) -> str:
    if name == "scenes":
        return (
            "generate the scene set with: python -m condnet.tools.make_scenes --out data/scenes "
            "(or point data.root at one)"
        )
    default = getattr(cls, "DEFAULT_ROOT", None)
    where = f" or place the data under {default}" if default else ""
    return (
        f"set data.root (e.g. --cfg-options data.root=/path/to/data){where}; see docs/datasets.md"
    )


def build_dataset(cfg: Config, split: str):
    """The ``split`` ("train" or "val") dataset of ``cfg.data`` with its pipeline:
    ``train_pipeline`` from the ``data`` settings for "train", ``eval_pipeline(
    scale=data.test_scale)`` for "val".

    Raises ``FileNotFoundError`` when the data root is missing (with how to get it) and
    :class:`ConfigError` when ``data.dataset_kwargs`` do not fit the dataset class or the
    model's ``num_classes`` differs from the dataset's.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}; got {split!r}")
    data = cfg.data
    cls = data.dataset_class
    root = data.root if data.root is not None else getattr(cls, "DEFAULT_ROOT", None)
    if root is None:
        raise ConfigError(f"data.root is required for data.dataset={data.dataset!r}")
    if not Path(root).is_dir():
        raise FileNotFoundError(
            f"data.root {str(root)!r} (data.dataset={data.dataset!r}) is not a directory; "
            + _root_hint(data.dataset, cls)
        )
    kwargs = dict(data.dataset_kwargs)
    if split == "train":
        kwargs["pipeline"] = cdata.train_pipeline(
            scale=data.img_scale,
            ratio_range=data.ratio_range,
            crop_size=data.crop_size,
            cat_max_ratio=data.cat_max_ratio,
            flip_prob=data.flip_prob,
            photometric=data.photometric,
            ignore_index=kwargs.get("ignore_index", 255),
        )
    else:
        kwargs["pipeline"] = cdata.eval_pipeline(scale=data.test_scale)
    kwargs["split"] = data.train_split if split == "train" else data.val_split
    try:
        inspect.signature(cls).bind(root, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"data.dataset_kwargs {dict(data.dataset_kwargs)} do not fit {cls.__name__}: {exc}"
        ) from None
    dataset = cls(root, **kwargs)
    check_num_classes(cfg, dataset)
    return dataset


def check_num_classes(cfg: Config, dataset) -> None:
    """Raise :class:`ConfigError` unless the model predicts as many classes as ``dataset``
    has (a check between two sections that needs the dataset built)."""
    model_k, data_k = cfg.model.config.num_classes, len(dataset_meta(dataset)[0])
    if model_k != data_k:
        raise ConfigError(
            f"the model predicts {model_k} classes (model.num_classes) but data.dataset="
            f"{cfg.data.dataset!r} ({type(dataset).__name__}) has {data_k}; set "
            f"model.num_classes={data_k} or pick the matching model or dataset"
        )


def build_train_loader(cfg: Config, dataset, rank: int = 0, world_size: int = 1):
    """The training ``DataLoader`` (:func:`condnet.data.build_dataloader`): shuffled,
    reproducible from ``runner.seed``, ``data.samples_per_gpu`` per batch on each of
    ``world_size`` processes, ``data.workers_per_gpu`` workers, incomplete batches
    dropped."""
    batch = cfg.data.samples_per_gpu
    per_rank = math.ceil(len(dataset) / world_size)
    if per_rank < batch:
        raise ValueError(
            f"the training set has {len(dataset)} samples ({per_rank} per process with "
            f"{world_size} process(es)), fewer than data.samples_per_gpu={batch}: "
            "no full batch to train on"
        )
    workers = cfg.data.workers_per_gpu
    return cdata.build_dataloader(
        dataset,
        batch,
        seed=cfg.runner.seed,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        rank=rank,
        world_size=world_size,
    )


def dataset_meta(dataset) -> tuple[tuple[str, ...], list[tuple[int, int, int]]]:
    """``(class_names, palette)`` of a ``condnet.data`` dataset (or a ``Subset`` of one)."""
    while not hasattr(dataset, "classes") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset  # torch.utils.data.Subset and similar wrappers
    if not hasattr(dataset, "classes"):
        raise TypeError(f"{type(dataset).__name__} has no class names (a condnet.data dataset)")
    return tuple(dataset.classes), [(int(r), int(g), int(b)) for r, g, b in dataset.palette]
