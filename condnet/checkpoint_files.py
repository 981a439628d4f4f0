"""Checkpoint and weight files: reading them as untrusted input, the tensors they
hold, loading those into a model with a report, and writing files atomically.

Every file this package reads with ``torch.load`` or writes (checkpoints,
converted weights, exported models, configs, JSON results) goes through here:

- :func:`load_checkpoint` reads with ``weights_only=True`` and tells a truncated
  or corrupt file apart from one that holds Python objects;
- :func:`read_state_dict` / :func:`state_dict_of` give the tensors: inside
  ``"state_dict"`` (mmcv's wrapper), without a DDP ``module.`` prefix, values
  checked to be tensors;
- :func:`load_tensors` loads them into a model, listing missing, unexpected and
  mismatched keys when they do not fit;
- :func:`atomic_output` (and :func:`save_atomic`, :func:`write_text_atomic` on
  top of it) writes under a temporary name in the destination folder, syncs it
  and renames it into place, so the destination holds either its old content or
  the complete new one. The file gets the mode any new file gets (``0o666``
  less the umask), and the folder is checked (:func:`check_destination`) before
  any work is done.
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

SHOWN_KEYS = 20  # keys listed per kind in error messages


# -- writing -------------------------------------------------------------------------------


def temp_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_output` writes ``path`` first: ``<path>.tmp.<pid>``, in the same
    folder (so that the rename cannot cross file systems)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp.{os.getpid()}")


def check_destination(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a file can be written there, checked before
    any work is done: its folder exists and is writable and ``path`` is not a folder.

    Raises:
        FileNotFoundError: the folder does not exist.
        IsADirectoryError, NotADirectoryError, PermissionError: as the names say.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {str(path)!r}: it is a folder; give a file name")
    if not folder.exists():
        raise FileNotFoundError(
            f"cannot write {str(path)!r}: the folder {str(folder)!r} does not exist"
        )
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {str(path)!r}: {str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {str(path)!r}: the folder is not writable")
    return path


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (a no-op where folders cannot be opened)."""
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


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_output(path) as tmp:`` write the file at ``tmp``; when the block
    ends without an exception, ``tmp`` is synced and renamed over ``path``.

    The folder is checked first (:func:`check_destination`). An exception in the block
    (or in the rename) removes ``tmp`` and leaves ``path`` as it was. Whatever creates
    ``tmp`` (``open``, ``torch.save``, an exporter) gives it the usual mode of a new file.
    """
    path = check_destination(path)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # left by a dead process that had our pid
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {str(tmp)!r}")
        _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        # Also after a successful rename: POSIX rename does nothing when both
        # names are links to the same file (a hard-linked latest.pth).
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_output`; returns ``path``."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """``text`` to ``path`` through :func:`atomic_output`; returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


# -- reading -------------------------------------------------------------------------------


def _first_reason(exc: Exception) -> str:
    """The useful line of torch.load's message (it appends long advice)."""
    text = str(exc).strip()
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", text)
    if found:
        return f"{type(exc).__name__}: {found[1].split(' Please use')[0].rstrip('.')}"
    return f"{type(exc).__name__}: {(text.splitlines() or [''])[0]}"


def load_checkpoint(
    path: str | os.PathLike, map_location="cpu", *, what: str = "checkpoint", mmap: bool = False
) -> Mapping:
    """``torch.load(path, weights_only=True)``, which must give a mapping.

    ``what`` names the file in messages ("checkpoint", "pretrained checkpoint").
    ``mmap=True`` reads the pickle but not the tensors (a quick check).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is truncated or corrupt (not a complete ``torch.save``
            file); or it holds Python objects other than tensors and plain containers,
            which ``weights_only=True`` refuses to build; or it holds no mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    is_zip = zipfile.is_zipfile(path)  # torch.save's format; a truncated one is not
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except PermissionError:
        raise
    except Exception as exc:  # the zip reader and the unpickler raise many types
        if is_zip and "Weights only load failed" in str(exc):
            raise ValueError(
                f"{str(path)!r} is not a plain-tensor {what}: torch.load(weights_only=True) "
                f"refused it ({_first_reason(exc)}). If you trust the file, load it with "
                "weights_only=False yourself and pass the state dict"
            ) from exc
        raise ValueError(
            f"{str(path)!r} is truncated or not a {what} ({_first_reason(exc)}); "
            "a file written by an interrupted save can be deleted"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(f"{str(path)!r} is not a {what}: it holds a {type(obj).__name__}")
    return obj


def state_dict_of(
    checkpoint: Mapping, *, source: str = "state dict", wrappers: Iterable[str] = ("state_dict",)
) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: inside each of ``wrappers`` found in turn
    (mmcv's ``"state_dict"``), without a DataParallel ``module.`` prefix.

    Raises ValueError (starting with ``source``) when a value is not a tensor or there is
    none.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: a checkpoint is a mapping; got {type(checkpoint).__name__}")
    for wrapper in wrappers:
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    state = dict(checkpoint)
    if state and all(str(k).startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(
            f"{source}: checkpoint values must be tensors; these are not: {bad[:SHOWN_KEYS]}"
        )
    if not state:
        raise ValueError(f"{source}: the checkpoint holds no tensors")
    return state


def read_state_dict(
    source: str | os.PathLike | Mapping,
    *,
    what: str = "checkpoint",
    wrappers: Iterable[str] = ("state_dict",),
) -> dict[str, torch.Tensor]:
    """:func:`state_dict_of` a path (read with :func:`load_checkpoint`) or of an already
    loaded checkpoint."""
    if isinstance(source, (str, os.PathLike)):
        checkpoint = load_checkpoint(source, what=what)
        return state_dict_of(checkpoint, source=repr(os.fspath(source)), wrappers=wrappers)
    if isinstance(source, Mapping):
        return state_dict_of(source, wrappers=wrappers)
    raise TypeError(f"expected a {what} path or a state dict; got {type(source).__name__}")


# -- loading into a model ------------------------------------------------------------------


def _shown(keys) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return f"{keys[:SHOWN_KEYS]}{more}"


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def load_tensors(
    model: ModuleT,
    state: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    optional: Iterable[str] = (),
    target: str = "the model",
) -> ModuleT:
    """Loads ``state`` (keys as ``model.state_dict()`` names them) into ``model``.

    Model keys in ``optional``, and BatchNorm ``num_batches_tracked`` counters, may be
    missing. Raises a ValueError naming ``target`` and listing the missing keys, the
    unexpected keys (both only when ``strict``) and the keys whose shapes differ
    (always); nothing is loaded then. Returns ``model``.
    """
    own = model.state_dict()
    allowed = set(optional) | {k for k in own if k.endswith(".num_batches_tracked")}
    missing = set(own) - set(state) - allowed
    unexpected = set(state) - set(own)
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(state) & set(own))
        if state[k].shape != own[k].shape
    ]
    if mismatched or (strict and (missing or unexpected)):
        parts = []
        if missing and strict:
            parts.append(f"missing keys ({len(missing)}): {_shown(missing)}")
        if unexpected and strict:
            parts.append(f"unexpected keys ({len(unexpected)}): {_shown(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {mismatched[:SHOWN_KEYS]}")
        raise ValueError(f"checkpoint does not fit {target}: {'; '.join(parts)}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model
