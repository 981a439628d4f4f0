"""Pictures of predictions: palette overlays and CondNet's guidance maps.

``overlay`` blends each pixel's predicted class colour over the image (what
``tools/test.py --show-dir`` writes). ``guidance_grid`` shows what the
conditional classifier's guidance branch sees: for a CondNet model,
``Segmentor.decode(img)`` also returns guide logits (B, K, h, w); their softmax
over classes is a soft mask per class, from which the per-image class
embeddings are pooled. The grid puts the image first, then one heat map per
listed class over a dimmed copy of the image, each labelled with its name (and,
given ``ious``, that class's IoU). ``predictions_figure`` lays out panels (e.g.
image | ground truth | plain | CondNet) in rows under column titles, with a
class-colour legend below, so that the picture reads without its caption.

Text uses PIL's own font (``ImageFont.load_default``; no font file is read),
sized from the panel width: about 15 px for 192-pixel panels.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "denormalize",
    "guidance_grid",
    "heat_colours",
    "overlay",
    "predictions_figure",
    "present_classes",
    "save_image",
]

# A perceptually ordered dark-to-bright ramp (close to matplotlib's "inferno"),
# the same for every class, so dark palette colours (VOC's black background)
# still show; the class's own colour is the swatch next to its name.
_HEAT_STOPS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)
_DIM = 0.35  # brightness of the image under a heat map
_GAP = 2  # pixels between grid tiles
_FIGURE_GAP = 4  # pixels between the panels of predictions_figure (white)
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_SWATCH_EDGE = (96, 96, 96)  # so that white and black classes show on white


def _as_numpy(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_image(image: object, name: str = "image") -> np.ndarray:
    image = _as_numpy(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} must be a uint8 (H, W, 3) RGB array; got {image.dtype} {image.shape}"
        )
    return image


def _palette_table(palette: Sequence[Sequence[int]]) -> np.ndarray:
    table = np.asarray(palette, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 3 or len(table) == 0:
        raise ValueError(f"palette must be a non-empty list of (r, g, b); got shape {table.shape}")
    return table


def denormalize(img: torch.Tensor, img_norm_cfg: dict | None) -> np.ndarray:
    """A normalised (3, H, W) image tensor back to uint8 (H, W, 3) RGB.

    ``img_norm_cfg`` is what :class:`condnet.data.Normalize` records
    (``{"mean": [...], "std": [...]}`` in 0-255 units); None means the tensor
    already holds 0-255 values.
    """
    if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"img must be a (3, H, W) tensor; got {getattr(img, 'shape', img)}")
    array = img.detach().float().cpu()
    if img_norm_cfg is not None:
        mean = torch.as_tensor(img_norm_cfg["mean"], dtype=torch.float32).reshape(3, 1, 1)
        std = torch.as_tensor(img_norm_cfg["std"], dtype=torch.float32).reshape(3, 1, 1)
        array = array * std + mean
    return array.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def overlay(
    image: np.ndarray, pred: np.ndarray, palette: Sequence[Sequence[int]], opacity: float = 0.5
) -> np.ndarray:
    """Blend the palette colour of each pixel's class over ``image``.

    Args:
        image: uint8 (H, W, 3) RGB.
        pred: integer (H, W) class indices; pixels outside the palette (255 =
            ignore) keep the image's colour.
        palette: one (r, g, b) per class.
        opacity: weight of the class colour, in [0, 1].

    Returns:
        uint8 (H, W, 3).
    """
    image = _check_image(image)
    pred = _as_numpy(pred)
    if pred.shape != image.shape[:2] or not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(
            f"pred must be an integer (H, W) map of the image's size {image.shape[:2]}; "
            f"got {pred.dtype} {pred.shape}"
        )
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1]; got {opacity!r}")
    table = _palette_table(palette)
    valid = (pred >= 0) & (pred < len(table))
    out = image.astype(np.float64)
    colours = table[pred[valid]]
    out[valid] = (1 - opacity) * out[valid] + opacity * colours
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def heat_colours(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] (any shape) -> float RGB (..., 3) on the heat ramp."""
    pos = np.clip(prob, 0.0, 1.0) * (len(_HEAT_STOPS) - 1)
    low = np.minimum(pos.astype(np.int64), len(_HEAT_STOPS) - 2)
    frac = (pos - low)[..., None]
    return _HEAT_STOPS[low] * (1 - frac) + _HEAT_STOPS[low + 1] * frac


def _check_font_size(font_size: object) -> None:
    if font_size is not None and (
        isinstance(font_size, bool) or not isinstance(font_size, int) or font_size < 1
    ):
        raise ValueError(f"font_size must be a positive int or None; got {font_size!r}")


def _auto_font_size(width: int) -> int:
    """Text height for panels ``width`` pixels wide: 10 px (PIL's default) for small
    tiles, ~15 px at 192 px, at most 24 px."""
    return max(10, min(24, round(width / 13)))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's built-in font at ``size`` px; PIL's fixed bitmap font where the scalable
    one is unavailable (Pillow < 10.1 or built without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_box(font, text: str) -> tuple[int, int, int]:
    """(width, top offset, bottom) of ``text`` drawn at (0, 0) in ``font``."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font
    )
    return right - left, top, bottom


def _line_metrics(font) -> tuple[int, int]:
    """(height, top offset) of a line of text in ``font``, ascender to descender: every
    line is drawn at ``y - top`` so that words share a baseline whatever their letters."""
    _, top, bottom = _text_box(font, "Ag|IoU")
    return bottom - top, top


def _fit(font, text: str, width: int) -> str:
    """``text``, shortened with "..." to at most ``width`` pixels."""
    if _text_box(font, text)[0] <= width:
        return text
    while text and _text_box(font, text + "...")[0] > width:
        text = text[:-1]
    return text + "..."


def _label(tile: Image.Image, text: str, swatch: tuple[int, int, int] | None, font=None) -> None:
    """Write ``text`` at the top-left on a black box, after a colour swatch if given."""
    draw = ImageDraw.Draw(tile)
    x0 = 2
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    height = bottom - top
    width = right - left + (height + 3 if swatch is not None else 0)
    draw.rectangle((0, 0, x0 + width + 2, height + 4), fill=(0, 0, 0))
    if swatch is not None:
        draw.rectangle((x0, 2, x0 + height, 2 + height), fill=swatch, outline=(255, 255, 255))
        x0 += height + 3
    draw.text((x0, 2 - top), text, fill=(255, 255, 255), font=font)


def _check_ious(ious: object, num_classes: int) -> dict[int, float]:
    """``ious`` (K values or {class: value}, fractions in [0, 1] or NaN) as a dict."""
    if isinstance(ious, Mapping):
        items = [(int(k), v) for k, v in ious.items()]
        bad = [k for k, _ in items if not 0 <= k < num_classes]
        if bad:
            raise ValueError(f"ious has classes {bad} outside [0, {num_classes})")
    else:
        values = list(_as_numpy(ious).reshape(-1)) if not isinstance(ious, str) else None
        if values is None or len(values) != num_classes:
            count = "a string" if values is None else f"{len(values)} values"
            raise ValueError(
                f"ious must hold one IoU per class ({num_classes}) or map class ids to IoUs; "
                f"got {count}"
            )
        items = list(enumerate(values))
    out = {}
    for k, value in items:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"ious[{k}] must be a number; got {value!r}") from None
        if not (math.isnan(value) or 0.0 <= value <= 1.0):
            raise ValueError(
                f"ious must be fractions in [0, 1] (ConfusionMatrix.compute()['IoU']) or NaN; "
                f"got {value!r} for class {k}"
            )
        out[k] = value
    return out


def _iou_text(value: float) -> str:
    return "IoU n/a" if math.isnan(value) else f"IoU {100 * value:.1f}"


def guidance_grid(
    image: np.ndarray,
    guide_probs: torch.Tensor | np.ndarray,
    class_ids: Sequence[int],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    columns: int | None = None,
    ious: Sequence[float] | Mapping[int, float] | None = None,
    image_title: str = "image",
    font_size: int | None = None,
) -> np.ndarray:
    """The image, then one labelled soft mask per class in ``class_ids``, in a grid.

    Args:
        image: uint8 (H, W, 3) RGB.
        guide_probs: (K, h, w) probabilities (softmax over classes of the guide
            logits); bilinearly resized to (H, W) when h, w differ.
        class_ids: the classes to show, in order (e.g. those in the label or
            the prediction).
        class_names, palette: per class; the palette colour is the swatch in
            each tile's label.
        columns: tiles per row; default ``ceil(sqrt(number of tiles))``.
        ious: optional IoU per class, as fractions in [0, 1] (NaN: undefined):
            K values (``ConfusionMatrix.compute()["IoU"]``, what ``evaluate``
            returns) or a ``{class id: IoU}`` mapping. Each class tile listed is
            then labelled ``"<name>  IoU 63.2"`` (percent, ``"IoU n/a"`` for NaN;
            a class missing from a mapping keeps its plain name).
        image_title: the image tile's label; ``""`` leaves the image unlabelled.
        font_size: text height in pixels; default from the tile width (10 px
            for small tiles, ~15 px at 192 px).

    Returns:
        uint8 (rows * (H + 2) - 2, columns * (W + 2) - 2, 3), black between tiles;
        the labels are drawn over the tiles' top-left corners, so the size does
        not depend on them.
    """
    image = _check_image(image)
    probs = torch.as_tensor(_as_numpy(guide_probs), dtype=torch.float32)
    if probs.dim() != 3:
        raise ValueError(f"guide_probs must be (K, h, w); got {tuple(probs.shape)}")
    num_classes = probs.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    table = _palette_table(palette)
    if len(table) != num_classes:
        raise ValueError(f"palette has {len(table)} colours for {num_classes} classes")
    ids = [int(k) for k in class_ids]
    bad = [k for k in ids if not 0 <= k < num_classes]
    if bad:
        raise ValueError(f"class_ids {bad} outside [0, {num_classes})")
    iou_of = {} if ious is None else _check_ious(ious, num_classes)
    if not isinstance(image_title, str):
        raise ValueError(f"image_title must be a str; got {image_title!r}")
    _check_font_size(font_size)
    height, width = image.shape[:2]
    font = _font(font_size or _auto_font_size(width))
    if tuple(probs.shape[1:]) != (height, width):
        probs = F.interpolate(
            probs[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
    probs = probs.clamp(0, 1).numpy()

    dim = image.astype(np.float64) * _DIM
    tiles = [Image.fromarray(image.copy())]
    if image_title:
        _label(tiles[0], image_title, None, font)
    for k in ids:
        p = probs[k][..., None]
        # Opacity grows with p, so low-probability regions show the (dim) image.
        blended = dim * (1 - p) + heat_colours(probs[k]) * p
        tile = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
        swatch = tuple(int(c) for c in table[k])
        text = str(class_names[k])
        if k in iou_of:
            text = f"{text}  {_iou_text(iou_of[k])}"
        _label(tile, text, swatch, font)  # type: ignore[arg-type]
        tiles.append(tile)

    if columns is None:
        columns = math.ceil(math.sqrt(len(tiles)))
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive int; got {columns!r}")
    columns = min(columns, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    grid = Image.new(
        "RGB", (columns * (width + _GAP) - _GAP, rows * (height + _GAP) - _GAP), (0, 0, 0)
    )
    for i, tile in enumerate(tiles):
        row, col = divmod(i, columns)
        grid.paste(tile, (col * (width + _GAP), row * (height + _GAP)))
    return np.asarray(grid)


def present_classes(maps: Sequence[object], num_classes: int) -> list[int]:
    """The class ids in ``[0, num_classes)`` found in any of ``maps`` (integer arrays
    or tensors of any shape: labels, predictions), sorted; other values (255 =
    ignore) are left out. What ``predictions_figure``'s legend lists when given as
    its ``legend_classes``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    found: set[int] = set()
    for i, class_map in enumerate(maps):
        values = _as_numpy(class_map)
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"maps[{i}] must hold integer class ids; got {values.dtype}")
        found.update(int(k) for k in np.unique(values) if 0 <= k < num_classes)
    return sorted(found)


def predictions_figure(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str],
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    legend_classes: Sequence[int] | None = None,
    font_size: int | None = None,
) -> np.ndarray:
    """Panels in a grid under column titles, with a class-colour legend below.

    One row per image; the columns are what ``titles`` names, e.g. ``("image",
    "ground truth", "plain", "CondNet")`` with the ground truth and the
    predictions drawn by :func:`overlay`. On a white background: the titles,
    centred above their columns (shortened with "..." when wider than the
    column); the panels, 4 px apart; then the legend, one palette swatch and
    class name per entry, wrapped to the figure's width.

    Args:
        rows: one sequence of uint8 (H, W, 3) RGB panels per row, as many as
            ``titles``. Panels may differ in size: a column is as wide as its
            widest panel, a row as high as its highest; each panel is placed at
            its cell's top-left.
        titles: one title per column.
        class_names, palette: per class (the same number of each).
        legend_classes: the classes the legend lists, in this order; default
            every class of the palette. Pass ``present_classes(maps, K)`` of the
            label and prediction maps shown to list just the classes that appear
            in the figure; an empty sequence leaves the legend out.
        font_size: text height in pixels; default from the narrowest column
            (~15 px for 192-pixel panels, at least 10, at most 24).

    Returns:
        uint8 (height, width, 3): taller than the panels by the title strip
        and the legend, at least as wide as the panels.
    """
    if isinstance(titles, str) or not isinstance(titles, Sequence) or len(titles) == 0:
        raise ValueError(f"titles must be a non-empty sequence of str; got {titles!r}")
    if not all(isinstance(t, str) for t in titles):
        raise ValueError(f"titles must be a non-empty sequence of str; got {list(titles)!r}")
    table = _palette_table(palette)
    if isinstance(class_names, str) or len(class_names) != len(table):
        got = repr(class_names) if isinstance(class_names, str) else f"{len(class_names)} names"
        raise ValueError(
            f"class_names must hold one name per palette colour ({len(table)}); got {got}"
        )
    if isinstance(rows, np.ndarray) or len(rows) == 0:
        raise ValueError("rows must be a non-empty sequence of rows of panels")
    columns = len(titles)
    panels = []
    for r, row in enumerate(rows):
        if isinstance(row, np.ndarray) or len(row) != columns:
            count = "an array" if isinstance(row, np.ndarray) else f"{len(row)} panels"
            raise ValueError(f"rows[{r}] must hold {columns} panels (one per title); got {count}")
        panels.append([_check_image(panel, f"rows[{r}][{c}]") for c, panel in enumerate(row)])
    if legend_classes is None:
        legend = list(range(len(table)))
    else:
        legend = [int(k) for k in legend_classes]
        bad = [k for k in legend if not 0 <= k < len(table)]
        if bad:
            raise ValueError(f"legend_classes {bad} outside [0, {len(table)})")
    _check_font_size(font_size)

    col_widths = [max(row[c].shape[1] for row in panels) for c in range(columns)]
    row_heights = [max(panel.shape[0] for panel in row) for row in panels]
    font = _font(font_size or _auto_font_size(min(col_widths)))
    line, top = _line_metrics(font)
    pad = max(2, line // 4)
    margin = _FIGURE_GAP
    grid_w = sum(col_widths) + _FIGURE_GAP * (columns - 1)
    grid_h = sum(row_heights) + _FIGURE_GAP * (len(panels) - 1)

    # The legend's entries (swatch, space, name), wrapped into lines of the grid's width.
    entries = [(k, str(class_names[k])) for k in legend]
    entry_widths = [line + pad + _text_box(font, name)[0] for _, name in entries]
    width = 2 * margin + max([grid_w, *entry_widths])
    lines: list[list[int]] = []
    x = None
    for i, entry_w in enumerate(entry_widths):
        if x is None or x + entry_w > width - 2 * margin:
            lines.append([])
            x = 0
        lines[-1].append(i)
        x += entry_w + 3 * pad
    title_h = line + 2 * pad
    legend_h = len(lines) * (line + pad) + pad if lines else 0
    height = margin + title_h + grid_h + legend_h + margin

    figure = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(figure)
    x = margin
    for title, col_w in zip(titles, col_widths, strict=True):
        text = _fit(font, title, col_w)
        text_w = _text_box(font, text)[0]
        draw.text((x + (col_w - text_w) // 2, margin + pad - top), text, fill=_INK, font=font)
        x += col_w + _FIGURE_GAP
    y = margin + title_h
    for row, row_h in zip(panels, row_heights, strict=True):
        x = margin
        for panel, col_w in zip(row, col_widths, strict=True):
            figure.paste(Image.fromarray(panel), (x, y))
            x += col_w + _FIGURE_GAP
        y += row_h + _FIGURE_GAP
    y += pad - _FIGURE_GAP + pad
    for line_entries in lines:
        x = margin
        for i in line_entries:
            k, name = entries[i]
            swatch = tuple(int(c) for c in table[k])
            draw.rectangle((x, y, x + line - 1, y + line - 1), fill=swatch, outline=_SWATCH_EDGE)
            draw.text((x + line + pad, y - top), name, fill=_INK, font=font)
            x += entry_widths[i] + 3 * pad
        y += line + pad
    return np.asarray(figure)


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W, 3) or (H, W) array as an image (format from the suffix);
    creates the parent folders. Returns the path."""
    array = _as_numpy(array)
    if (
        array.dtype != np.uint8
        or array.ndim not in (2, 3)
        or array.ndim == 3
        and array.shape[2] != 3
    ):
        raise ValueError(
            f"array must be uint8 (H, W, 3) or (H, W); got {array.dtype} {array.shape}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
