"""The config sections besides ``model``: one frozen dataclass each, whose fields are
the section's keys with their defaults and whose constructor is their only check.

To add a key, add a field (with its default) to its section here and check it in
``__post_init__``; loading, ``--cfg-options``, the "valid keys" of errors and the
written config follow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from condnet import data as cdata
from condnet.models import check_inference_fields

from ..amp import AMP_DTYPES
from . import checks
from .checks import ConfigError
from .section import Section

#: ``data.dataset`` -> the dataset class.
DATASET_CLASSES = {
    "ade20k": cdata.ADE20KDataset,
    "pascal_context_59": cdata.PascalContext59Dataset,
    "cityscapes": cdata.CityscapesDataset,
    "voc": cdata.VOCDataset,
    "scenes": cdata.SceneDataset,
    "folder": cdata.FolderDataset,
}
DATASETS = tuple(DATASET_CLASSES)


def _positive(key, value):
    return checks.number(key, value, 0, low_open=True)


def _beta(key, value):
    # AdamW divides by 1 - beta: a beta of 1 is an error there.
    return checks.number(key, value, 0, 1, high_open=True)


@dataclass(frozen=True)
class DataConfig(Section):
    """``data``: the dataset, its pipelines (mmseg's recipe) and the loaders."""

    KEY = "data"

    dataset: str = "ade20k"
    root: str | None = None
    train_split: str | None = "train"  # None: only for "folder" (no sub-folder)
    val_split: str | None = "val"
    dataset_kwargs: Mapping = field(default_factory=dict)
    img_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] | None = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    test_scale: tuple[int, int] = (2048, 512)
    samples_per_gpu: int = 4
    workers_per_gpu: int = 4

    def __post_init__(self) -> None:
        k = self._key
        self._set("dataset", checks.choice(k("dataset"), self.dataset, DATASETS))
        for name in ("root", "train_split", "val_split"):
            self._set(name, checks.optional(checks.text, k(name), getattr(self, name)))
        self._set("dataset_kwargs", checks.mapping(k("dataset_kwargs"), self.dataset_kwargs))
        for name in ("img_scale", "crop_size", "test_scale"):
            self._set(name, checks.size(k(name), getattr(self, name)))
        ratio = checks.optional(checks.sequence, k("ratio_range"), self.ratio_range, _positive, 2)
        if ratio is not None and ratio[0] > ratio[1]:
            raise checks.fail(k("ratio_range"), "(low, high) with low <= high", ratio)
        self._set("ratio_range", ratio)
        cat_max = checks.number(k("cat_max_ratio"), self.cat_max_ratio, 0, 1, low_open=True)
        self._set("cat_max_ratio", cat_max)
        self._set("flip_prob", checks.number(k("flip_prob"), self.flip_prob, 0, 1))
        self._set("photometric", checks.boolean(k("photometric"), self.photometric))
        self._set("samples_per_gpu", checks.integer(k("samples_per_gpu"), self.samples_per_gpu, 1))
        self._set("workers_per_gpu", checks.integer(k("workers_per_gpu"), self.workers_per_gpu, 0))
        if self.dataset == "folder":
            if self.root is None:
                raise ConfigError("data.dataset='folder' needs data.root (it has no default)")
            if "classes" not in self.dataset_kwargs:
                raise ConfigError(
                    "data.dataset='folder' needs data.dataset_kwargs.classes: a list of class "
                    "names or the path of a file with one name per line"
                )
        else:
            for name in ("train_split", "val_split"):
                if getattr(self, name) is None:
                    raise checks.fail(k(name), "a split name (None only for 'folder')", None)

    @property
    def dataset_class(self) -> type:
        return DATASET_CLASSES[self.dataset]


@dataclass(frozen=True)
class OptimizerConfig(Section):
    """``optimizer``: SGD or AdamW with mmcv's parameter groups
    (:func:`condnet.engine.optim.build_optimizer`) and gradient clipping."""

    KEY = "optimizer"

    type: str = "SGD"
    lr: float = 0.01
    momentum: float = 0.9  # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 5e-4
    head_lr_mult: float = 1.0
    no_decay_norm: bool = False
    no_decay_keys: tuple[str, ...] = ()
    grad_clip: float | None = None  # max gradient norm; the trainer clips

    def __post_init__(self) -> None:
        k = self._key
        self._set("type", checks.choice(k("type"), self.type, ("SGD", "AdamW")))
        for name in ("lr", "head_lr_mult"):
            self._set(name, _positive(k(name), getattr(self, name)))
        for name in ("momentum", "weight_decay"):
            self._set(name, checks.number(k(name), getattr(self, name), 0))
        self._set("betas", checks.sequence(k("betas"), self.betas, _beta, 2))
        self._set("no_decay_norm", checks.boolean(k("no_decay_norm"), self.no_decay_norm))
        self._set(
            "no_decay_keys", checks.sequence(k("no_decay_keys"), self.no_decay_keys, checks.text)
        )
        self._set("grad_clip", checks.optional(_positive, k("grad_clip"), self.grad_clip))


@dataclass(frozen=True)
class LrConfig(Section):
    """``lr_config``: the learning-rate schedule by iteration
    (:class:`condnet.engine.lr_schedule.IterLRScheduler`)."""

    KEY = "lr_config"

    policy: str = "poly"
    power: float = 0.9
    min_lr: float = 1e-4
    warmup: str | None = None
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6

    def __post_init__(self) -> None:
        k = self._key
        self._set("policy", checks.choice(k("policy"), self.policy, ("poly", "constant")))
        self._set("power", _positive(k("power"), self.power))
        self._set("min_lr", checks.number(k("min_lr"), self.min_lr, 0))
        self._set("warmup", checks.choice(k("warmup"), self.warmup, (None, "linear")))
        self._set("warmup_iters", checks.integer(k("warmup_iters"), self.warmup_iters, 0))
        ratio = checks.number(k("warmup_ratio"), self.warmup_ratio, 0, 1, low_open=True)
        self._set("warmup_ratio", ratio)
        if self.warmup is not None and self.warmup_iters < 1:
            raise checks.fail(k("warmup_iters"), f"> 0 with warmup={self.warmup!r}", 0)


@dataclass(frozen=True)
class RunnerConfig(Section):
    """``runner``: the length of training and how each iteration runs."""

    KEY = "runner"

    max_iters: int = 80000
    accumulate_steps: int = 1
    amp: str | None = None
    channels_last: bool = False
    log_interval: int = 50
    seed: int = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        k = self._key
        for name in ("max_iters", "accumulate_steps", "log_interval"):
            self._set(name, checks.integer(k(name), getattr(self, name), 1))
        self._set("amp", checks.choice(k("amp"), self.amp, (None, *AMP_DTYPES)))
        for name in ("channels_last", "deterministic"):
            self._set(name, checks.boolean(k(name), getattr(self, name)))
        self._set("seed", checks.integer(k("seed"), self.seed, 0))


@dataclass(frozen=True)
class CheckpointConfig(Section):
    """``checkpoint``: how often ``iter_N.pth`` is written and how many are kept."""

    KEY = "checkpoint"

    interval: int = 8000
    max_keep: int | None = None  # None: all

    def __post_init__(self) -> None:
        self._set("interval", checks.integer(self._key("interval"), self.interval, 1))
        max_keep = checks.optional(checks.integer, self._key("max_keep"), self.max_keep, 1)
        self._set("max_keep", max_keep)


@dataclass(frozen=True)
class EvaluationConfig(Section):
    """``evaluation``: the periodic evaluation during training, and the inference
    settings the evaluations (``tools/test.py`` too) lay over the model's own."""

    KEY = "evaluation"

    interval: int = 8000  # 0: never
    metric: str = "mIoU"
    save_best: bool = True
    mode: str | None = None  # None: the model's test setting
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    aug_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # --aug-test
    flip: bool = True  # --aug-test
    samples_per_gpu: int = 1
    workers_per_gpu: int = 2

    def __post_init__(self) -> None:
        k = self._key
        self._set("interval", checks.integer(k("interval"), self.interval, 0))
        self._set("metric", checks.choice(k("metric"), self.metric, ("mIoU", "mAcc", "aAcc")))
        self._set("save_best", checks.boolean(k("save_best"), self.save_best))
        # Checked by the inference settings' own rules, under this section's names.
        names = {"mode": "mode", "crop_size": "crop_size", "stride": "stride"}
        names |= {"scales": "aug_scales", "flip": "flip"}
        given = {setting: getattr(self, key) for setting, key in names.items()}
        try:
            values = check_inference_fields(given, {s: k(key) for s, key in names.items()})
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if values["scales"] is None:  # None means "not set" to the inference settings
            raise checks.fail(k("aug_scales"), "a non-empty sequence of positive numbers", None)
        if values["flip"] is None:
            raise checks.fail(k("flip"), "True or False", None)
        for setting, key in names.items():
            self._set(key, values[setting])
        self._set("samples_per_gpu", checks.integer(k("samples_per_gpu"), self.samples_per_gpu, 1))
        self._set("workers_per_gpu", checks.integer(k("workers_per_gpu"), self.workers_per_gpu, 0))

    def inference_layer(self, aug_test: bool = False) -> dict:
        """The settings this section lays over the model's ``test_cfg`` (for
        :func:`condnet.models.resolve_inference`): the mode and window, and with
        ``aug_test`` (``tools/test.py --aug-test``) the scales and flip."""
        layer: dict[str, object] = {
            "mode": self.mode,
            "crop_size": self.crop_size,
            "stride": self.stride,
        }
        if aug_test:
            layer.update(scales=self.aug_scales, flip=self.flip)
        return layer
