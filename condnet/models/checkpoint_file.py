"""Reading checkpoint files, which are untrusted input."""

from __future__ import annotations

import os

import torch


def load_untrusted(path: str | os.PathLike, what: str = "checkpoint") -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear
    errors: a missing file raises ``FileNotFoundError`` and a file that pickles
    anything but tensors and plain containers raises ``ValueError``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises several types
        raise ValueError(
            f"could not read {path!r} with torch.load(weights_only=True) "
            f"({type(exc).__name__}: {exc}); only tensors and plain containers are "
            "accepted. If you trust the file, load it yourself with weights_only=False "
            "and pass the state dict instead of the path"
        ) from exc
