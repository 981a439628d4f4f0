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

import torch
from torch import nn

from .config import OptimizerConfig

HEAD_PREFIXES = ("decode_head.", "auxiliary_head.")
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d and SyncBatchNorm
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.RMSNorm,
)


def _checked_type(config) -> OptimizerConfig:
    # The values were checked when the OptimizerConfig was made; only its type is here.
    if not isinstance(config, OptimizerConfig):
        raise TypeError(f"config must be an OptimizerConfig; got {type(config).__name__}")
    return config


def _named_parameters(model: nn.Module):
    """``(name, parameter, owning module)`` for every trainable parameter, once."""
    seen = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{module_name}.{name}" if module_name else name), param, module


def param_groups(model: nn.Module, config: OptimizerConfig) -> list[dict]:
    """The parameter groups :func:`build_optimizer` passes to the optimizer
    (see the module docstring)."""
    cfg = _checked_type(config)
    groups: dict[tuple[float, float], dict] = {}
    for name, param, module in _named_parameters(model):
        lr_mult = cfg.head_lr_mult if name.startswith(HEAD_PREFIXES) else 1.0
        no_decay = (cfg.no_decay_norm and isinstance(module, NORM_TYPES)) or any(
            key in name for key in cfg.no_decay_keys
        )
        decay_mult = 0.0 if no_decay else 1.0
        group = groups.setdefault(
            (lr_mult, decay_mult),
            {
                "params": [],
                "lr": cfg.lr * lr_mult,
                "weight_decay": cfg.weight_decay * decay_mult,
                "lr_mult": lr_mult,
                "decay_mult": decay_mult,
            },
        )
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` or ``AdamW`` over ``model``'s trainable parameters.

    Args:
        model: the model (unwrapped from DDP, so that names start with
            ``decode_head.`` etc.).
        config: the config's ``optimizer`` section
            (:class:`~condnet.engine.config.OptimizerConfig`: ``type``, ``lr``,
            ``momentum`` for SGD, ``betas`` for AdamW, ``weight_decay``,
            ``head_lr_mult``, ``no_decay_norm``, ``no_decay_keys``; ``grad_clip`` is
            the trainer's).

    Raises:
        TypeError: ``model`` is not a module or ``config`` not an OptimizerConfig.
        ValueError: no trainable parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    cfg = _checked_type(config)
    groups = param_groups(model, cfg)
    if not groups:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    if cfg.type == "SGD":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
