"""Decoding image and annotation files into numpy arrays, with errors that name the file.

Images are decoded to ``HxWx3`` uint8 **RGB** (grey, palette, CMYK and RGBA files
are converted). Annotations are decoded to an ``HxW`` integer array holding the
stored values: palette ("P") PNGs give their indices, 8-bit grey PNGs their grey
values, 16/32-bit PNGs wider integers. A file that exists but cannot be decoded
raises :class:`CorruptFileError` (a missing file raises ``FileNotFoundError``).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

# Errors Pillow raises for unreadable, truncated or otherwise broken files.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


class CorruptFileError(OSError):
    """An image or annotation file exists but cannot be decoded."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")


def _open_decoded(path: str | os.PathLike) -> Image.Image:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {os.fspath(path)}")
    try:
        with Image.open(path) as image:
            image.load()  # decodes now, so errors surface here and the file can close
            return image
    except FileNotFoundError:
        raise
    except _DECODE_ERRORS as err:
        raise CorruptFileError(path, f"{type(err).__name__}: {err}") from err


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an ``HxWx3`` uint8 RGB array."""
    image = _open_decoded(path)
    try:
        if image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image)
    except _DECODE_ERRORS as err:
        raise CorruptFileError(path, f"{type(err).__name__}: {err}") from err
    if array.ndim != 3 or array.shape[2] != 3:
        raise CorruptFileError(path, f"decoded to shape {array.shape}, expected HxWx3")
    return array


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Decode an annotation file to an ``HxW`` integer array of the stored values.

    8-bit files ("L" and "P") give uint8; 16/32-bit files give int32. Colour
    ("RGB") annotations are rejected: store class indices, not colours.
    """
    image = _open_decoded(path)
    if image.mode in ("L", "P"):
        return np.array(image, dtype=np.uint8)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.array(image, dtype=np.int32)
    raise CorruptFileError(
        path,
        f"annotation has image mode {image.mode!r}; expected a single-channel "
        "index image (8-bit 'L'/'P' or 16/32-bit 'I') holding class indices",
    )
