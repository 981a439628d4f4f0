"""Batch normalisation that is synchronised across processes only when there
are processes to synchronise with.

The released CondNet models train with SyncBN (statistics over the global
batch of 8 or 16 images). A plain ``nn.SyncBatchNorm`` refuses to run without
an initialised process group, so single-GPU and CPU runs would fail; these
helpers pick ``nn.SyncBatchNorm`` only when a GPU process group (any backend
but gloo) with more than one process is running.

gloo groups get plain BatchNorm on purpose: PyTorch's ``SyncBatchNorm``
trains only on GPU inputs (CUDA, XPU, HPU or a private-use backend), so on
CPUs it would work in ``eval()`` mode and raise in training.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn


def sync_bn_available() -> bool:
    """True when SyncBN has other processes to talk to and can train: the
    default process group is initialised, has more than one process, and its
    backend is not gloo (the CPU one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size() > 1 and dist.get_backend() != "gloo"


def norm2d(num_features: int) -> nn.BatchNorm2d | nn.SyncBatchNorm:
    """A BatchNorm layer for (B, C, H, W) maps: ``nn.SyncBatchNorm`` when
    :func:`sync_bn_available`, ``nn.BatchNorm2d`` otherwise.

    The choice is made when the layer is built; to build a model first and
    start ``torch.distributed`` later, use :func:`convert_norm` afterwards.
    """
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive int; got {num_features!r}")
    if sync_bn_available():
        return nn.SyncBatchNorm(num_features)
    return nn.BatchNorm2d(num_features)


def convert_norm(module: nn.Module) -> nn.Module:
    """Replaces every ``BatchNorm*d`` in ``module`` by ``nn.SyncBatchNorm``
    (weights and running statistics kept) when :func:`sync_bn_available`;
    returns ``module`` unchanged otherwise.

    Returns the converted module; like ``nn.SyncBatchNorm.convert_sync_batchnorm``
    it converts in place, except that a bare BatchNorm passed as ``module``
    comes back as a new object, so always use the return value.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module; got {type(module).__name__}")
    if not sync_bn_available():
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)
