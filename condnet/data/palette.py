"""Colour palettes for label maps and a helper to paint a label map with one.

A palette is a tuple of ``(r, g, b)`` triples, one per class index; the ignore
value is painted black by :func:`colorize`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Palette = tuple[tuple[int, int, int], ...]


def label_colormap(num_classes: int) -> Palette:
    """The PASCAL VOC colour map: class ``i``'s colour spreads the bits of ``i``
    over the high bits of r, g and b (0 is black, 1 is dark red, 2 dark green...).

    Distinct for up to 256 classes; used for VOC and as the default palette of
    datasets that have none of their own.
    """
    if not 0 <= num_classes <= 256:
        raise ValueError(f"label_colormap supports 0 to 256 classes, got {num_classes}")
    colours = []
    for index in range(num_classes):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def as_palette(colours: Sequence[Sequence[int]], num_classes: int) -> Palette:
    """Validate ``colours`` (one ``(r, g, b)`` per class, 0-255) and return it as a tuple."""
    palette = tuple(tuple(int(c) for c in colour) for colour in colours)
    if len(palette) != num_classes:
        raise ValueError(f"palette has {len(palette)} colours for {num_classes} classes")
    for colour in palette:
        if len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise ValueError(f"palette colour {colour} is not an (r, g, b) triple in 0-255")
    return palette  # type: ignore[return-value]


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int = 255):
    """Paint an integer ``HxW`` label map: returns an ``HxWx3`` uint8 RGB array.

    Pixels equal to ``ignore_index`` (or outside the palette) are black.
    """
    label = np.asarray(label)
    table = np.zeros(
        (max(len(palette), ignore_index + 1, int(label.max(initial=0)) + 1), 3), dtype=np.uint8
    )
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    if 0 <= ignore_index < len(table):
        table[ignore_index] = 0
    return table[np.clip(label, 0, len(table) - 1)]
