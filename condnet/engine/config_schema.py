"""The config schema: every key with its default and check, and :func:`validate_config`.

:data:`SCHEMA` maps each top-level key (or each key of a section dict) to
``(default, (predicate, what it expects))``; :func:`validate_config` checks a merged
config tree against it, fills in the defaults and returns a :class:`Config`. Loading
files, ``_base_`` inheritance and ``--cfg-options`` live in :mod:`condnet.engine.config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping

DATASETS = ("ade20k", "pascal_context_59", "cityscapes", "voc", "scenes", "folder")
# Model keys that are not ModelConfig fields.
MODEL_KEYS = ("name", "pretrained_backbone")


class ConfigError(ValueError):
    """A config file or option that is malformed, unknown or out of range."""


class Config(dict):
    """A nested ``dict`` whose keys also read and write as attributes (``cfg.data.root``)."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.update(*args, **kwargs)

    def __setitem__(self, key, value):
        is_plain_dict = isinstance(value, dict) and not isinstance(value, Config)
        super().__setitem__(key, Config(value) if is_plain_dict else value)

    def update(self, *args, **kwargs):  # dict.update would bypass __setitem__
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}; keys: {', '.join(self)}") from None

    def __setattr__(self, name, value):
        self[name] = value

    def to_dict(self) -> dict:
        """A deep copy made of plain ``dict`` s."""
        return {k: v.to_dict() if isinstance(v, Config) else v for k, v in self.items()}


# -- value checks: (predicate, what it expects) ------------------------------------------


def _is_int(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_of(*options):
    what = "one of " + ", ".join(map(repr, options))
    return (lambda v: not isinstance(v, bool) and v in options), what


def _optional(spec):
    return (lambda v: v is None or spec[0](v)), f"None or {spec[1]}"


def _tuple_of(spec, length: int | None = None, min_length: int = 0, what: str = ""):
    def check(v):
        if not isinstance(v, tuple) or len(v) < min_length:
            return False
        return (length is None or len(v) == length) and all(spec[0](x) for x in v)

    return check, what or f"a tuple/list of {length or 'any number of'} values, each {spec[1]}"


INT0 = (lambda v: _is_int(v, 0)), "an int >= 0"
INT1 = (lambda v: _is_int(v, 1)), "an int >= 1"
NUM0 = (lambda v: _is_num(v) and v >= 0), "a number >= 0"
POS = (lambda v: _is_num(v) and v > 0), "a number > 0"
FRAC = (lambda v: _is_num(v) and 0 <= v <= 1), "a number in [0, 1]"
BOOL = (lambda v: isinstance(v, bool)), "True or False"
STR = (lambda v: isinstance(v, str) and bool(v)), "a non-empty string"
DICT = (lambda v: isinstance(v, dict)), "a dict"
SIZE = _tuple_of(INT1, 2, what="a pair (tuple or list) of ints >= 1")

#: Every valid key with its default and check. ``model`` also takes every
#: ``condnet.models.ModelConfig`` field (checked by building the ModelConfig).
SCHEMA: dict[str, object] = {
    "model": {"name": (None, None), "pretrained_backbone": (False, None)},
    "data": {
        "dataset": ("ade20k", _one_of(*DATASETS)),
        "root": (None, _optional(STR)),
        "train_split": ("train", _optional(STR)),  # None: only for "folder" (no sub-folder)
        "val_split": ("val", _optional(STR)),
        "dataset_kwargs": ({}, DICT),
        "img_scale": ((2048, 512), SIZE),
        "ratio_range": ((0.5, 2.0), _optional(_tuple_of(POS, 2))),
        "crop_size": ((512, 512), SIZE),
        "cat_max_ratio": (0.75, (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]")),
        "flip_prob": (0.5, FRAC),
        "photometric": (True, BOOL),
        "test_scale": ((2048, 512), SIZE),
        "samples_per_gpu": (4, INT1),
        "workers_per_gpu": (4, INT0),
    },
    "optimizer": {
        "type": ("SGD", _one_of("SGD", "AdamW")),
        "lr": (0.01, POS),
        "momentum": (0.9, NUM0),
        "betas": ((0.9, 0.999), _tuple_of(FRAC, 2)),
        "weight_decay": (5e-4, NUM0),
        "head_lr_mult": (1.0, POS),
        "no_decay_norm": (False, BOOL),
        "no_decay_keys": ((), _tuple_of(STR)),
        "grad_clip": (None, _optional(POS)),
    },
    "lr_config": {
        "policy": ("poly", _one_of("poly", "constant")),
        "power": (0.9, NUM0),
        "min_lr": (1e-4, NUM0),
        "warmup": (None, _one_of(None, "linear")),
        "warmup_iters": (0, INT0),
        "warmup_ratio": (1e-6, (lambda v: _is_num(v) and 0 < v <= 1, "a number in (0, 1]")),
    },
    "runner": {
        "max_iters": (80000, INT1),
        "accumulate_steps": (1, INT1),
        "amp": (None, _one_of(None, "bf16", "fp16")),
        "channels_last": (False, BOOL),
        "log_interval": (50, INT1),
        "seed": (0, INT0),
        "deterministic": (False, BOOL),
    },
    "checkpoint": {"interval": (8000, INT1), "max_keep": (None, _optional(INT1))},
    "evaluation": {
        "interval": (8000, INT0),
        "metric": ("mIoU", _one_of("mIoU", "mAcc", "aAcc")),
        "save_best": (True, BOOL),
        "mode": (None, _one_of(None, "whole", "slide")),
        "crop_size": (None, _optional(SIZE)),
        "stride": (None, _optional(SIZE)),
        "aug_scales": ((0.5, 0.75, 1.0, 1.25, 1.5, 1.75), _tuple_of(POS, min_length=1)),
        "flip": (True, BOOL),
        "samples_per_gpu": (1, INT1),
        "workers_per_gpu": (2, INT0),
    },
    "work_dir": (None, _optional(STR)),
    "load_from": (None, _optional(STR)),
    "resume_from": (None, _optional(STR)),
    "auto_resume": (False, BOOL),
}


def _valid_keys(dotted: str) -> tuple[str, ...] | None:
    """Valid keys of the dict at ``dotted`` ("" = top level); None if free-form."""
    if dotted == "":
        return tuple(SCHEMA)
    if dotted == "model":
        from condnet.models import ModelConfig

        return MODEL_KEYS + tuple(f.name for f in dataclasses.fields(ModelConfig))
    if isinstance(SCHEMA.get(dotted), dict):
        return tuple(SCHEMA[dotted])
    return None


def _check_keys(tree: Mapping, where: str, prefix: str = "") -> None:
    valid = _valid_keys(prefix)
    if valid is None:
        return
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key == "_delete_" and prefix:
            continue
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            level = f"in {prefix!r}" if prefix else "at the top level"
            raise ConfigError(
                f"unknown config key {dotted!r} in {where}{hint}; valid keys {level}: "
                + ", ".join(valid)
            )
        if isinstance(value, Mapping):
            _check_keys(value, where, dotted)


def _plain(value, dotted: str, where: str):
    """``value`` as plain literals (paths become strings); anything else is an error."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{dotted}[{i}]", where) for i, v in enumerate(value))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{dotted} in {where}: dict keys must be strings; got {k!r}")
            out[k] = _plain(v, f"{dotted}.{k}", where)
        return out
    raise ConfigError(
        f"{dotted} in {where} must be None, a bool, int, float, str, list, tuple or dict; "
        f"got {type(value).__name__}"
    )


# -- validation --------------------------------------------------------------------------


def _fail(dotted: str, expected: str, value) -> ConfigError:
    return ConfigError(f"{dotted} must be {expected}; got {value!r}")


def _section(tree: Mapping, key: str) -> Mapping:
    value = tree.get(key, {})
    if not isinstance(value, Mapping):
        raise _fail(key, "a dict", value)
    return value


def _check_model(model: Mapping) -> dict:
    from condnet.models import BACKBONES, list_models

    from .builders import model_config

    out = dict(name=model.get("name"), pretrained_backbone=model.get("pretrained_backbone", False))
    if out["name"] is not None and out["name"] not in list_models():
        raise _fail("model.name", "None or one of " + ", ".join(list_models()), out["name"])
    pretrained = out["pretrained_backbone"]
    if not (isinstance(pretrained, bool) or (isinstance(pretrained, str) and pretrained)):
        raise _fail("model.pretrained_backbone", "False, True or a checkpoint path", pretrained)
    out.update((k, v) for k, v in model.items() if k not in MODEL_KEYS)
    missing = [f"model.{k}" for k in ("backbone", "head", "num_classes") if k not in out]
    if out["name"] is None and missing:
        raise ConfigError(
            "model.name is None, so model.backbone, model.head and model.num_classes are "
            f"required; missing: {', '.join(missing)}"
        )
    if "num_classes" in out and not _is_int(out["num_classes"], 1):
        raise _fail("model.num_classes", "an int >= 1", out["num_classes"])
    if not isinstance(out.get("backbone_kwargs", {}), dict):
        raise _fail("model.backbone_kwargs", "a dict", out["backbone_kwargs"])
    backbone = model_config({"model": out}).backbone  # ModelConfig checks the other fields
    if backbone not in BACKBONES:
        raise _fail("model.backbone", "one of " + ", ".join(BACKBONES), backbone)
    return out


def _check(dotted: str, value, spec):
    if isinstance(value, list) and spec is not DICT:
        value = tuple(value)  # pairs and sequences are tuples, whichever was written
    if not spec[0](value):
        raise _fail(dotted, spec[1], value)
    return value


def validate_config(tree: Mapping) -> Config:
    """``tree`` checked against :data:`SCHEMA`, defaults filled in, as a :class:`Config`."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"config must be a mapping; got {type(tree).__name__}")
    tree = {k: _plain(v, str(k), "the config") for k, v in tree.items()}
    _check_keys(tree, "the config")
    out: dict = {"model": _check_model(_section(tree, "model"))}
    for key, spec in SCHEMA.items():
        if key == "model":
            continue
        if isinstance(spec, dict):
            section = _section(tree, key)
            out[key] = {
                name: _check(f"{key}.{name}", section.get(name, default), check)
                for name, (default, check) in spec.items()
            }
        else:
            out[key] = _check(key, tree.get(key, spec[0]), spec[1])
    _check_together(out)
    return Config(out)


def _check_together(cfg: dict) -> None:
    data, lr = cfg["data"], cfg["lr_config"]
    if data["ratio_range"] is not None and data["ratio_range"][0] > data["ratio_range"][1]:
        raise _fail("data.ratio_range", "(low, high) with low <= high", data["ratio_range"])
    if data["dataset"] == "folder":
        if data["root"] is None:
            raise ConfigError("data.dataset='folder' needs data.root (it has no default)")
        if "classes" not in data["dataset_kwargs"]:
            raise ConfigError(
                "data.dataset='folder' needs data.dataset_kwargs.classes: a list of class "
                "names or the path of a file with one name per line"
            )
    else:
        for key in ("train_split", "val_split"):
            if data[key] is None:
                raise _fail(f"data.{key}", "a split name (None only for 'folder')", None)
    if lr["warmup"] is not None and lr["warmup_iters"] < 1:
        raise _fail("lr_config.warmup_iters", f"> 0 with warmup={lr['warmup']!r}", 0)
