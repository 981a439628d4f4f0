"""The demo's figures: the predictions of the two models side by side, and CondNet's
guidance maps.

``predictions_figure`` lays out panels (e.g. image | ground truth | plain | CondNet)
in rows under column titles, with a class-colour legend below, so that the picture
reads without its caption. :func:`save_figures` writes, for the first validation
images, ``predictions.png`` (that figure) and ``guidance.png`` (the guidance grid of
:func:`condnet.engine.visualize.guidance_grid` per image, each class's tile titled
with its IoU).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from condnet.engine.builders import dataset_meta
from condnet.engine.figure_text import (
    auto_font_size,
    check_font_size,
    fit_text,
    font_of_size,
    line_metrics,
    text_box,
)
from condnet.engine.visualize import (
    as_numpy,
    check_rgb_image,
    denormalize,
    guidance_grid,
    overlay,
    palette_array,
    save_image,
)

__all__ = ["TITLES", "predictions_figure", "present_classes", "save_figures"]

#: The column title of each model in ``predictions.png``.
TITLES = {"plain": "plain classifier", "condnet": "CondNet"}
_FIGURE_GAP = 4  # pixels between the panels of predictions_figure (white)
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_SWATCH_EDGE = (96, 96, 96)  # so that white and black classes show on white
# Image.Resampling from Pillow 9.1, on Image itself before.
_BILINEAR = getattr(Image, "Resampling", Image).BILINEAR


def present_classes(maps: Sequence[object], num_classes: int) -> list[int]:
    """The class ids in ``[0, num_classes)`` found in any of ``maps`` (integer arrays
    or tensors of any shape: labels, predictions), sorted; other values (255 =
    ignore) are left out. What ``predictions_figure``'s legend lists when given as
    its ``legend_classes``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    found: set[int] = set()
    for i, class_map in enumerate(maps):
        values = as_numpy(class_map)
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
    table = palette_array(palette)
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
        panels.append([check_rgb_image(panel, f"rows[{r}][{c}]") for c, panel in enumerate(row)])
    if legend_classes is None:
        legend = list(range(len(table)))
    else:
        legend = [int(k) for k in legend_classes]
        bad = [k for k in legend if not 0 <= k < len(table)]
        if bad:
            raise ValueError(f"legend_classes {bad} outside [0, {len(table)})")
    check_font_size(font_size)

    col_widths = [max(row[c].shape[1] for row in panels) for c in range(columns)]
    row_heights = [max(panel.shape[0] for panel in row) for row in panels]
    font = font_of_size(font_size or auto_font_size(min(col_widths)))
    line, top = line_metrics(font)
    pad = max(2, line // 4)
    margin = _FIGURE_GAP
    grid_w = sum(col_widths) + _FIGURE_GAP * (columns - 1)
    grid_h = sum(row_heights) + _FIGURE_GAP * (len(panels) - 1)

    # The legend's entries (swatch, space, name), wrapped into lines of the grid's width.
    entries = [(k, str(class_names[k])) for k in legend]
    entry_widths = [line + pad + text_box(font, name)[0] for _, name in entries]
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
        text = fit_text(font, title, col_w)
        text_w = text_box(font, text)[0]
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


def _image_uint8(sample: dict, size: tuple[int, int]) -> np.ndarray:
    """The sample's image as uint8 RGB at ``size`` (the label's, ``ori_shape``)."""
    image = Image.fromarray(denormalize(sample["img"], sample["img_norm_cfg"]))
    return np.asarray(image.resize((size[1], size[0]), _BILINEAR))


def _stack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(padded)[:-gap]


def save_figures(
    models: dict, condnet_iou: dict, val_set, work_dir: Path, count: int, device
) -> list[Path]:
    """The predictions and guidance figures for the first ``count`` validation images.

    ``condnet_iou``: CondNet's validation IoU per class name, in percent (the
    guidance tiles' titles)."""
    names, palette = dataset_meta(val_set)
    ious = [condnet_iou[name] / 100 for name in names]
    pred_rows, maps, guide_rows = [], [], []
    for index in range(min(count, len(val_set))):
        sample = val_set[index]
        label = sample["gt_semantic_seg"].numpy()
        size = label.shape
        image = _image_uint8(sample, size)
        img = sample["img"][None].to(device)
        preds = [
            model.predict(img, out_size=size).argmax(1)[0].cpu().numpy()
            for model in models.values()
        ]
        maps += [label, *preds]
        pred_rows.append(
            [image, *(overlay(image, m, palette, opacity=1.0) for m in (label, *preds))]
        )
        with torch.no_grad():
            _, guide = models["condnet"].decode(img)
        probs = (
            torch.nn.functional.interpolate(
                guide.float().softmax(1), size=size, mode="bilinear", align_corners=False
            )[0]
            .cpu()
            .numpy()
        )
        present = sorted(int(k) for k in np.unique(label) if k < len(names))
        title = f"validation image {index}"
        guide_rows.append(
            guidance_grid(image, probs, present, names, palette, ious=ious, image_title=title)
        )
    titles = ["image", "ground truth", *(TITLES[name] for name in models)]
    legend = present_classes(maps, len(names))
    paths = [work_dir / "predictions.png", work_dir / "guidance.png"]
    save_image(
        predictions_figure(pred_rows, titles, names, palette, legend_classes=legend), paths[0]
    )
    save_image(_stack(guide_rows), paths[1])
    return paths
