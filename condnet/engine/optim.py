"""The optimizer, with mmcv's parameter groups (``DefaultOptimizerConstructor``).

Each parameter gets an ``lr_mult`` and a ``decay_mult``:

- ``lr_mult = head_lr_mult`` for parameters under ``decode_head.`` or
  ``auxiliary_head.`` (mmseg's ``paramwise_cfg=dict(custom_keys={"head": dict(lr_mult=...)})``),
  1 elsewhere;
- ``decay_mult = 0`` for the weight and bias of norm layers (BatchNorm,
  SyncBatchNorm, GroupNorm, LayerNorm, InstanceNorm, RMSNorm) when
  ``no_decay_norm`` (mmcv's ``norm_decay_mult=0``, which finds norm layers by
  their type), and for parameters whose name contains one of
  ``no_decay_keys``; 1 elsewhere. Other biases keep their weight decay
  (mmcv's ``bias_decay_mult`` stays 1).

Unlike mmcv, where a matching custom key overrides the norm rule, the two
rules combine: a head's BatchNorm gets the head's lr and no decay. mmseg's
Swin configs use ``custom_keys={"norm": dict(decay_mult=0.)}``, a name rule
that misses the heads' BatchNorm layers (named ``bn``); ``no_decay_keys=("norm",)``
reproduces that exactly, ``no_decay_norm=True`` also exempts the heads' norms.

Parameters with equal ``(lr_mult, decay_mult)`` share one group, in order of
first appearance; each group stores ``lr = lr * lr_mult``,
``weight_decay = weight_decay * decay_mult`` and both multipliers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

OPTIMIZERS = ("SGD", "AdamW")
HEAD_PREFIXES = ("decode_head.", "auxiliary_head.")
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d and SyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
)
DEFAULTS = {
    "type": "SGD",
    "lr": 0.01,
    "momentum": 0.9,
    "betas": (0.9, 0.999),
    "weight_decay": 5e-4,
    "head_lr_mult": 1.0,
    "no_decay_norm": False,
    "no_decay_keys": (),
    "grad_clip": None,  # used by the trainer, which clips
}


def _number(cfg: Mapping, key: str, *, positive: bool, upper: float | None = None) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"optimizer.{key} must be a finite number; got {value!r}")
    if (positive and value <= 0) or value < 0 or (upper is not None and value >= upper):
        bound = "> 0" if positive else ">= 0"
        bound += "" if upper is None else f" and < {upper}"
        raise ValueError(f"optimizer.{key} must be {bound}; got {value!r}")
    return float(value)


def _validated(optimizer_cfg: Mapping) -> dict:
    if not isinstance(optimizer_cfg, Mapping):
        raise TypeError(f"optimizer_cfg must be a mapping; got {type(optimizer_cfg).__name__}")
    unknown = sorted(set(optimizer_cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown optimizer keys {unknown}; valid keys: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **optimizer_cfg}
    if cfg["type"] not in OPTIMIZERS:
        raise ValueError(f"optimizer.type must be one of {OPTIMIZERS}; got {cfg['type']!r}")
    for key in ("lr", "head_lr_mult"):
        cfg[key] = _number(cfg, key, positive=True)
    cfg["weight_decay"] = _number(cfg, "weight_decay", positive=False)
    cfg["momentum"] = _number(cfg, "momentum", positive=False)
    betas = cfg["betas"]
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise ValueError(f"optimizer.betas must be a pair (beta1, beta2); got {betas!r}")
    cfg["betas"] = tuple(
        _number({f"betas[{i}]": b}, f"betas[{i}]", positive=False, upper=1.0)
        for i, b in enumerate(betas)
    )
    if not isinstance(cfg["no_decay_norm"], bool):
        raise ValueError(f"optimizer.no_decay_norm must be a bool; got {cfg['no_decay_norm']!r}")
    keys = cfg["no_decay_keys"]
    if (
        isinstance(keys, str)
        or not isinstance(keys, Sequence)
        or not all(isinstance(k, str) and k for k in keys)
    ):
        raise ValueError(
            f"optimizer.no_decay_keys must be a list of non-empty name substrings; got {keys!r}"
        )
    if cfg["grad_clip"] is not None:
        cfg["grad_clip"] = _number(cfg, "grad_clip", positive=True)
    return cfg


def _named_parameters(model: nn.Module):
    """``(name, parameter, owning module)`` for every trainable parameter, once."""
    seen = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{module_name}.{name}" if module_name else name), param, module


def param_groups(model: nn.Module, optimizer_cfg: Mapping) -> list[dict]:
    """The parameter groups :func:`build_optimizer` passes to the optimizer
    (see the module docstring)."""
    cfg = _validated(optimizer_cfg)
    groups: dict[tuple[float, float], dict] = {}
    for name, param, module in _named_parameters(model):
        lr_mult = cfg["head_lr_mult"] if name.startswith(HEAD_PREFIXES) else 1.0
        no_decay = (cfg["no_decay_norm"] and isinstance(module, NORM_TYPES)) or any(
            key in name for key in cfg["no_decay_keys"]
        )
        decay_mult = 0.0 if no_decay else 1.0
        group = groups.setdefault(
            (lr_mult, decay_mult),
            {
                "params": [],
                "lr": cfg["lr"] * lr_mult,
                "weight_decay": cfg["weight_decay"] * decay_mult,
                "lr_mult": lr_mult,
                "decay_mult": decay_mult,
            },
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(model: nn.Module, optimizer_cfg: Mapping) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``AdamW`` over ``model``'s trainable parameters.

    Args:
        model: the model (unwrapped from DDP, so that names start with
            ``decode_head.`` etc.).
        optimizer_cfg: the config's ``optimizer`` section: ``type`` (SGD |
            AdamW), ``lr``, ``momentum`` (SGD), ``betas`` (AdamW),
            ``weight_decay``, ``head_lr_mult``, ``no_decay_norm``,
            ``no_decay_keys``, ``grad_clip`` (checked, not used here). Absent
            keys take the config defaults.

    Raises:
        TypeError: ``model`` is not a module or ``optimizer_cfg`` not a mapping.
        ValueError: an unknown key or type, a bad value, or no trainable parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    cfg = _validated(optimizer_cfg)
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    if cfg["type"] == "SGD":
        return torch.optim.SGD(
            groups, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
        )
    return torch.optim.AdamW(
        groups, lr=cfg["lr"], betas=cfg["betas"], weight_decay=cfg["weight_decay"]
    )
