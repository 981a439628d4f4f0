"""Devices, process groups under ``torchrun``, and the few collectives the tools need.

One process needs nothing: every function here works without a process group
(rank 0 of 1). Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the
environment) :func:`init_distributed` joins the group: NCCL on CUDA, gloo on
the CPU.
"""

from __future__ import annotations

import os
import platform
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """Whether the environment carries torchrun's rank variables."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(
    device: str | torch.device = "cpu", timeout_s: float = 1800
) -> tuple[int, int]:
    """Joins torchrun's process group when launched by it; returns ``(rank, world_size)``.

    On CUDA each process takes the GPU ``LOCAL_RANK`` (set as the current device).
    Without torchrun this does nothing and returns ``(0, 1)``.
    """
    device = torch.device(device)
    if not launched_by_torchrun():
        return 0, 1
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible"
            )
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def choose_device(requested: str | None) -> str:
    """A tool's ``--device``: ``None`` means cuda when available, else cpu.

    Raises ValueError when cuda is requested on a machine without it.
    """
    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    return device


def local_device(device: str | torch.device) -> torch.device:
    """``cuda`` becomes this process's GPU (``cuda:LOCAL_RANK`` under torchrun)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (the only rank without a process group) writes logs and checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Averages a dict of floats over the ranks (the same keys on every rank)."""
    if get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= get_world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
