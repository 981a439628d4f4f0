"""Training checkpoints: atomic writes, ``iter_N.pth`` / ``latest.pth`` /
``best.pth`` in a work directory, safe loading, weights for ``--load-from``,
and the random number generators' state.

A checkpoint file is never seen half-written: it is written under a temporary
name in the same directory (``<name>.tmp.<pid>``), flushed to disk and renamed
over the target. ``latest.pth`` and ``best.pth`` are hard links to an
``iter_N.pth`` (a copy where the file system has no hard links), so pruning
old ``iter_N.pth`` files never loses the best one.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from condnet.models.released import convert_released, load_converted

_ITER_FILE = re.compile(r"iter_(\d+)\.pth")
_TEMP_FILE = re.compile(r".+\.tmp\.\d+")
# Key prefixes only an mmseg EncoderDecoder state dict has (released CondNet models).
_MMSEG_PREFIXES = (
    "backbone.stem.",
    "backbone.stages.",
    "backbone.patch_embed.projection.",
    "decode_head.conv_seg.",
    "decode_head.guidance_project.conv.",
    "decode_head.filter_project.conv.",
    "auxiliary_head.conv_seg.",
)


def _temp_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp.{os.getpid()}")


def _fsync_dir(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (a no-op where directories
    cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` so that ``path`` holds either its old
    content or the complete new one, even if the process dies midway.

    Writes ``<path>.tmp.<pid>``, flushes and fsyncs it, renames it over
    ``path`` and fsyncs the directory. On any error the temporary file is
    removed and the error re-raised. Returns ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory of {str(path)!r} does not exist")
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _link_atomic(source: Path, target: Path) -> None:
    """Points ``target`` at ``source``'s content atomically: a hard link (or,
    where links fail, a copy) under a temporary name, renamed over ``target``."""
    tmp = _temp_path(target)
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except (OSError, NotImplementedError):  # FAT, some network and FUSE file systems
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # POSIX rename does nothing when both names are links to the same file.
    tmp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _load(path: str | os.PathLike, map_location, mmap: bool = False):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {str(path)!r}")
    is_zip = zipfile.is_zipfile(path)  # torch.save's format; a truncated one is not
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except PermissionError:
        raise
    except Exception as exc:  # the zip reader and the unpickler raise many types
        reason = str(exc).strip()
        found = re.search(r"WeightsUnpickler error: ([^\n]*)", reason)
        reason = (
            found[1].split(" Please use")[0].rstrip(".")
            if found
            else (reason.splitlines() or [""])[0]
        )
        reason = f"{type(exc).__name__}: {reason}"
        if is_zip and "Weights only load failed" in str(exc):
            raise ValueError(
                f"{str(path)!r} is not a plain-tensor checkpoint: torch.load(weights_only=True) "
                f"refused it ({reason}). If you trust the file, load it with "
                "weights_only=False yourself and pass the state dict"
            ) from exc
        raise ValueError(
            f"{str(path)!r} is truncated or not a checkpoint ({reason}); "
            "a checkpoint written by an interrupted save can be deleted"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} is not a checkpoint: it holds a {type(obj).__name__}")
    return obj


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Reads a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is truncated or not a checkpoint, or it pickles
            something other than tensors and plain containers.
    """
    return _load(path, map_location)


class CheckpointManager:
    """The checkpoints of one training run in ``work_dir``.

    Files: ``iter_{N}.pth`` (N = iteration), ``latest.pth`` (the last saved)
    and ``best.pth`` (the last saved with ``best=True``).

    Args:
        work_dir: the run's directory (created on the first save).
        max_keep: keep at most this many ``iter_*.pth`` files (None: all).
    """

    def __init__(self, work_dir: str | os.PathLike, max_keep: int | None = None) -> None:
        if max_keep is not None and (
            isinstance(max_keep, bool) or not isinstance(max_keep, int) or max_keep < 1
        ):
            raise ValueError(f"max_keep must be None or an int >= 1; got {max_keep!r}")
        self.work_dir = Path(work_dir)
        self.max_keep = max_keep

    def iter_path(self, iteration: int) -> Path:
        return self.work_dir / f"iter_{iteration}.pth"

    def iter_files(self) -> list[tuple[int, Path]]:
        """``(N, path)`` of the ``iter_N.pth`` files, by ascending N."""
        if not self.work_dir.is_dir():
            return []
        found = []
        for path in self.work_dir.iterdir():
            if (m := _ITER_FILE.fullmatch(path.name)) and path.is_file():
                found.append((int(m[1]), path))
        return sorted(found)

    def save(self, iteration: int, state, best: bool = False) -> Path:
        """Writes ``iter_{iteration}.pth``, points ``latest.pth`` (and
        ``best.pth`` when ``best``) at it and prunes old ``iter_*.pth``
        beyond ``max_keep``. Returns the ``iter_*.pth`` path."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0; got {iteration!r}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = save_atomic(state, self.iter_path(iteration))
        _link_atomic(path, self.work_dir / "latest.pth")
        if best:
            _link_atomic(path, self.work_dir / "best.pth")
        self._prune(keep=path)
        return path

    def _prune(self, keep: Path) -> None:
        if self.max_keep is None:
            return
        # The file just written stays even if a higher N exists (after a resume
        # from an earlier checkpoint).
        others = [p for _, p in self.iter_files() if p != keep]
        for path in others[: max(0, len(others) + 1 - self.max_keep)]:
            path.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The checkpoint to resume from: ``latest.pth``, else the highest
        ``iter_N.pth``, skipping (with a warning) files that do not load;
        None when there is none."""
        candidates = [self.work_dir / "latest.pth"]
        candidates += [p for _, p in reversed(self.iter_files())]
        for path in candidates:
            if not path.is_file():
                continue
            try:
                _load(path, "cpu", mmap=True)  # mmap: reads the pickle, not the tensors
            except ValueError as exc:
                warnings.warn(f"skipping checkpoint: {exc}", RuntimeWarning, stacklevel=2)
                continue
            return path
        return None

    def remove_temporaries(self) -> list[Path]:
        """Deletes leftover ``*.tmp.<pid>`` files of interrupted saves; returns them."""
        if not self.work_dir.is_dir():
            return []
        removed = [p for p in self.work_dir.iterdir() if _TEMP_FILE.fullmatch(p.name)]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed


def _is_mmseg(state: Mapping) -> bool:
    return any(str(k).startswith(_MMSEG_PREFIXES) for k in state)


def load_weights(model: nn.Module, path_or_state, strict: bool = True) -> None:
    """Loads model weights only (``--load-from``).

    ``path_or_state`` is a path (read with ``weights_only=True``) or a loaded
    object: a checkpoint of this package (``{"state_dict": ...}``), a bare
    state dict, or a released mmseg CondNet checkpoint (``{"state_dict": ...,
    "meta": ...}`` with mmseg key names, converted by
    :func:`condnet.models.released.convert_released`). A DDP ``module.``
    prefix is stripped. BatchNorm ``num_batches_tracked`` may be missing.

    Raises:
        ValueError: listing missing and unexpected keys (``strict`` only) and
            shape mismatches (always).
    """
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if isinstance(path_or_state, (str, os.PathLike)):
        source, checkpoint = repr(os.fspath(path_or_state)), load_checkpoint(path_or_state)
    elif isinstance(path_or_state, Mapping):
        source, checkpoint = "state dict", path_or_state
    else:
        raise TypeError(
            f"path_or_state must be a path or a state dict; got {type(path_or_state).__name__}"
        )
    if isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    state = dict(checkpoint)
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{source}: state dict values must be tensors; these are not: {bad[:20]}")
    if not state:
        raise ValueError(f"{source}: the state dict is empty")
    if all(str(k).startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if _is_mmseg(state):
        state = convert_released(state)
    try:
        load_converted(model, state, strict=strict)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc


def capture_rng_state() -> dict:
    """The state of Python's ``random``, NumPy's global generator, torch's
    CPU generator and every CUDA device's generator, as tensors, ints, floats,
    strings, lists and dicts only (loadable with ``weights_only=True``)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def _cpu_bytes(value) -> torch.Tensor:
    # A checkpoint loaded with map_location="cuda" has its generator states on the GPU.
    return torch.as_tensor(value).to("cpu", torch.uint8)


def restore_rng_state(state: Mapping) -> None:
    """Restores what :func:`capture_rng_state` captured. CUDA states are set
    for the devices present (with a warning when the device count differs)."""
    missing = {"python", "numpy", "torch", "cuda"} - set(
        state if isinstance(state, Mapping) else ()
    )
    if missing:
        raise ValueError(f"RNG state must come from capture_rng_state(); missing {sorted(missing)}")
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = torch.as_tensor(npy["keys"]).cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    cuda = list(state["cuda"])
    devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda and len(cuda) != devices:
        warnings.warn(
            f"RNG state holds {len(cuda)} CUDA generator(s), this process sees {devices}; "
            f"restoring the first {min(len(cuda), devices)}",
            RuntimeWarning,
            stacklevel=2,
        )
    for index, device_state in enumerate(cuda[:devices]):
        torch.cuda.set_rng_state(_cpu_bytes(device_state), index)
