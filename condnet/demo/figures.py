"""The demo's figures: the arms' predictions side by side, the conditional arms'
class masks, and the learning curves.

The demo compares up to three arms on one network, keyed ``"plain"`` (mmseg's 1x1
conv classifier), ``"condnet"`` (CondNet's conditional classifier) and ``"cac"``
(CAC's context-aware classifier). ``predictions_figure`` lays out panels (e.g. image
| ground truth | plain | CondNet | CAC) in rows under column titles, with a
class-colour legend below, so that the picture reads without its caption.
:func:`save_figures` writes, for the first validation images, ``predictions.png``
(that figure) and ``masks.png``: each conditional arm's soft class masks (CondNet's
guidance, CAC's static logits' softmax) in the grid of
:func:`condnet.engine.visualize.guidance_grid`, each class's tile titled with that
arm's IoU. :func:`learning_curves_figure` plots validation mIoU against iteration per
arm, the mean over seeds with a band from their minimum to their maximum.
Everything is drawn with PIL and numpy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
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
from condnet.nn import ContextAwareClassifier

__all__ = [
    "ARM_COLOURS",
    "MASK_TITLES",
    "TITLES",
    "class_masks",
    "learning_curves_figure",
    "predictions_figure",
    "present_classes",
    "save_figures",
    "save_learning_curves",
]

#: The display name of each arm: the column titles of ``predictions.png``, the
#: legend of the learning curves.
TITLES = {"plain": "plain classifier", "condnet": "CondNet", "cac": "CAC"}
#: What the class masks of each conditional arm in ``masks.png`` are.
MASK_TITLES = {
    "condnet": "CondNet: guidance (the soft masks it pools class features with)",
    "cac": "CAC: static logits' softmax (the masks it pools class centres with)",
}
#: Each arm's line colour in the learning curves: plain dark grey, CondNet blue,
#: CAC orange.
ARM_COLOURS = {"plain": (60, 60, 60), "condnet": (31, 119, 180), "cac": (255, 127, 14)}
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


def _stack(rows: list[np.ndarray], gap: int = _FIGURE_GAP) -> np.ndarray:
    """``rows`` (uint8 RGB images) one under the other, ``gap`` white pixels apart,
    left-aligned on white."""
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(padded)[:-gap]


def _titled(block: np.ndarray, title: str, font_size: int) -> np.ndarray:
    """``block`` under a white strip holding ``title`` at its left (shortened with
    "..." to the block's width)."""
    font = font_of_size(font_size)
    line, top = line_metrics(font)
    pad = max(2, line // 4)
    strip = Image.new("RGB", (block.shape[1], line + 2 * pad), _BACKGROUND)
    text = fit_text(font, title, block.shape[1] - 2 * pad)
    ImageDraw.Draw(strip).text((pad, pad - top), text, fill=_INK, font=font)
    return np.concatenate([np.asarray(strip), block])


def _check_arms(models: object) -> list[str]:
    if not isinstance(models, Mapping) or len(models) == 0:
        raise ValueError(f"models must be a non-empty dict of arm name -> model; got {models!r}")
    unknown = [arm for arm in models if arm not in TITLES]
    if unknown:
        raise ValueError(f"models has unknown arms {unknown}; expected keys among {list(TITLES)}")
    return list(models)


def _check_ious(ious: object, arms: list[str], names: Sequence[str]) -> dict[str, list[float]]:
    """Each conditional arm's IoU per class (fractions, in class order) from ``ious``."""
    if not isinstance(ious, Mapping):
        raise ValueError(f"ious must be a dict of arm name -> {{class name: IoU %}}; got {ious!r}")
    unknown = [arm for arm in ious if arm not in TITLES]
    if unknown:
        raise ValueError(f"ious has unknown arms {unknown}; expected keys among {list(TITLES)}")
    out = {}
    for arm in arms:
        if arm not in MASK_TITLES:
            continue
        if arm not in ious:
            raise ValueError(f"ious has no entry for the {arm!r} arm (its class masks' titles)")
        per_class = ious[arm]
        missing = [
            name for name in names if not isinstance(per_class, Mapping) or name not in per_class
        ]
        if missing:
            raise ValueError(f"ious[{arm!r}] has no IoU for the classes {missing}")
        out[arm] = [float(per_class[name]) / 100 for name in names]
    return out


def _context_aware(model) -> ContextAwareClassifier:
    found = [m for m in model.decode_head.modules() if isinstance(m, ContextAwareClassifier)]
    if len(found) != 1:
        raise ValueError(
            f"models['cac'] must hold one ContextAwareClassifier in its decode head; "
            f"found {len(found)}"
        )
    return found[0]


def class_masks(model, arm: str, img: torch.Tensor) -> torch.Tensor:
    """A conditional arm's soft class masks (B, K, h, w) for ``img`` (B, 3, H, W), at
    the decode head's resolution, without gradients: for ``"condnet"`` the softmax
    over classes of the guide logits ``model.decode`` returns; for ``"cac"`` the
    softmax of the context-aware classifier's static logits, ``conv_seg`` on the
    classifier's input (as in eval mode: no dropout). Call in eval mode."""
    if arm == "condnet":
        with torch.no_grad():
            _, guide = model.decode(img)
        if guide is None:
            raise ValueError("models['condnet'] returned no guide logits (not a CondNet model)")
        return guide.float().softmax(1)
    if arm == "cac":
        classifier = _context_aware(model)
        captured = []
        handle = classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            with torch.no_grad():
                model.decode(img)
        finally:
            handle.remove()
        with torch.no_grad():
            return classifier.conv_seg(captured[-1]).float().softmax(1)
    raise ValueError(f"arm must be one of {list(MASK_TITLES)} (the conditional arms); got {arm!r}")


def save_figures(
    models: dict, ious: dict, val_set, work_dir: Path, count: int, device
) -> list[Path]:
    """The predictions and class-mask figures for the first ``count`` validation images.

    Args:
        models: arm name ("plain", "condnet", "cac") -> trained model, in the
            order of the columns; any non-empty subset of the arms. Each runs in
            eval mode here and is put back in its mode after.
        ious: arm name -> that arm's validation IoU per class name, in percent;
            needed for each conditional arm (the titles of its mask tiles).
        val_set: a ``condnet.data`` validation set (``img``, ``gt_semantic_seg``,
            ``img_norm_cfg`` per sample; class names and palette).
        work_dir: the folder written to.
        count: how many images, from the first (fewer if the set is smaller).
        device: where the models are.

    Writes ``predictions.png``: image | ground truth | one column per arm titled
    with :data:`TITLES`, one row per image, and a legend of the classes shown;
    and, when a conditional arm is among ``models``, ``masks.png``: for each
    image, for each conditional arm in ``models``' order, a block titled with
    the image and :data:`MASK_TITLES` over one row of tiles: the image, then
    the arm's mask of each class in the label (:func:`class_masks`), labelled
    with the class's IoU. Returns the paths written.
    """
    arms = _check_arms(models)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int; got {count!r}")
    names, palette = dataset_meta(val_set)
    arm_ious = _check_ious(ious, arms, names)
    conditional = [arm for arm in arms if arm in MASK_TITLES]
    training = {arm: model.training for arm, model in models.items()}
    pred_rows, maps, mask_blocks = [], [], []
    try:
        for model in models.values():
            model.eval()
        for index in range(min(count, len(val_set))):
            sample = val_set[index]
            label = as_numpy(sample["gt_semantic_seg"])
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
            present = present_classes([label], len(names))
            for arm in conditional:
                probs = F.interpolate(
                    class_masks(models[arm], arm, img),
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                )[0].cpu()
                columns = len(present) + 1
                grid = guidance_grid(
                    image,
                    probs,
                    present,
                    names,
                    palette,
                    columns=columns,
                    ious=arm_ious[arm],
                    image_title=f"image {index}",
                )
                title = f"validation image {index}, {MASK_TITLES[arm]}"
                mask_blocks.append(_titled(grid, title, auto_font_size(size[1])))
    finally:
        for arm, model in models.items():
            model.train(training[arm])
    titles = ["image", "ground truth", *(TITLES[arm] for arm in arms)]
    legend = present_classes(maps, len(names))
    paths = [work_dir / "predictions.png"]
    save_image(
        predictions_figure(pred_rows, titles, names, palette, legend_classes=legend), paths[0]
    )
    if mask_blocks:
        paths.append(save_image(_stack(mask_blocks), work_dir / "masks.png"))
    return paths


# The learning curves' look.
_GRID = (225, 225, 225)  # the light gridlines at the ticks
_BAND_ALPHA = 0.22  # the min-max band's opacity over white
_LINE_WIDTH = 3
_TICK = 4  # tick length, pixels
_CURVES_TEXT, _CURVES_TITLE = 13, 17  # font sizes


def _check_curves(panels: object) -> dict[str, dict[str, list[list[tuple[float, float]]]]]:
    """``panels`` checked: panel title -> arm -> curves, each a list of (iteration,
    mIoU %) with non-decreasing iterations, the same for every curve of an arm (an
    iteration given twice draws a vertical step: a model that continues from other
    weights there, like the demo's CAC arm)."""
    if not isinstance(panels, Mapping) or len(panels) == 0:
        raise ValueError(f"panels must be a non-empty dict of panel title -> arms; got {panels!r}")
    out: dict[str, dict[str, list[list[tuple[float, float]]]]] = {}
    for panel, arms in panels.items():
        where = f"panels[{panel!r}]"
        if not isinstance(panel, str):
            raise ValueError(f"panel titles must be str; got {panel!r}")
        if not isinstance(arms, Mapping) or len(arms) == 0:
            raise ValueError(
                f"{where} must be a non-empty dict of arm name -> curves; got {arms!r}"
            )
        unknown = [arm for arm in arms if arm not in TITLES]
        if unknown:
            raise ValueError(f"{where} has unknown arms {unknown}; expected among {list(TITLES)}")
        out[panel] = {}
        for arm, curves in arms.items():
            if isinstance(curves, (str, np.ndarray)) or not isinstance(curves, Sequence):
                raise ValueError(f"{where}[{arm!r}] must be a list of curves; got {curves!r}")
            if len(curves) == 0:
                raise ValueError(f"{where}[{arm!r}] holds no curves (one per seed expected)")
            checked = [
                _check_curve(curve, f"{where}[{arm!r}][{i}]") for i, curve in enumerate(curves)
            ]
            first = [x for x, _ in checked[0]]
            for i, curve in enumerate(checked[1:], 1):
                iterations = [x for x, _ in curve]
                if iterations != first:
                    raise ValueError(
                        f"{where}[{arm!r}][{i}] has iterations {iterations}; curve 0 has {first} "
                        f"(every seed's curve must be evaluated at the same iterations)"
                    )
            out[panel][arm] = checked
    return out


def _check_curve(curve: object, where: str) -> list[tuple[float, float]]:
    if isinstance(curve, (str, np.ndarray)) or not isinstance(curve, Sequence) or not curve:
        raise ValueError(f"{where} must be a non-empty list of (iteration, mIoU %) points")
    points: list[tuple[float, float]] = []
    for j, point in enumerate(curve):
        if isinstance(point, str) or not isinstance(point, Sequence) or len(point) != 2:
            raise ValueError(f"{where}[{j}] must be an (iteration, mIoU %) pair; got {point!r}")
        for value in point:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"{where}[{j}] must hold two numbers; got {point!r}")
        x, y = float(point[0]), float(point[1])
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"{where}[{j}]'s iteration must be a number >= 0; got {point[0]!r}")
        if not (math.isfinite(y) and 0.0 <= y <= 100.0):
            raise ValueError(
                f"{where}[{j}]'s mIoU must be a percentage in [0, 100]; got {point[1]!r}"
            )
        if points and x < points[-1][0]:
            raise ValueError(
                f"{where} must have non-decreasing iterations; got {x:g} after {points[-1][0]:g}"
            )
        points.append((x, y))
    return points


def _nice_range(low: float, high: float, ticks: int = 5) -> tuple[float, float, float]:
    """(start, stop, step): ``[low, high]`` widened to multiples of a round step (1, 2,
    2.5 or 5 times a power of ten) giving about ``ticks`` intervals."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    start = math.floor(low / step + 1e-9) * step
    stop = math.ceil(high / step - 1e-9) * step
    return start, stop, step


def _tick_text(value: float, step: float) -> str:
    if float(step).is_integer():
        return str(int(round(value)))
    decimals = max(1, -math.floor(math.log10(step)) + (0 if (step * 10) % 1 == 0 else 1))
    return f"{value:.{decimals}f}"


def _ticks(start: float, stop: float, step: float) -> list[float]:
    count = int(round((stop - start) / step))
    return [start + i * step for i in range(count + 1)]


def _vertical_text(text: str, font) -> Image.Image:
    """``text`` in black on white, turned to read bottom to top."""
    line, top = line_metrics(font)
    image = Image.new("RGB", (text_box(font, text)[0] + 2, line + 2), _BACKGROUND)
    ImageDraw.Draw(image).text((1, 1 - top), text, fill=_INK, font=font)
    return image.transpose(Image.Transpose.ROTATE_90)


def learning_curves_figure(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[Sequence[float]]]]],
    title: str,
    *,
    panel_size: tuple[int, int] = (450, 380),
) -> np.ndarray:
    """Validation mIoU against training iteration, one panel per entry of ``panels``.

    Args:
        panels: panel title (e.g. ``"cue scenes"``) -> arm name ("plain",
            "condnet", "cac") -> that arm's curves, one per seed; a curve is a
            list of (iteration, validation mIoU in percent) points with
            increasing iterations, the same iterations for every seed of an arm.
        title: the figure's title, above the legend.
        panel_size: (width, height) of each panel in pixels; the figure is
            ``len(panels)`` panels wide and as high as one panel.

    Draws, side by side on white: each panel's title, its axes (iteration
    across, mIoU % up, ticks with numbers at round steps and light gridlines;
    both ranges shared by all panels: the data's, widened to the steps, within
    [0, 100] for mIoU) and, per arm in :data:`ARM_COLOURS`' colour, the mean of
    its curves as a line and, with more than one curve, a translucent band from
    their minimum to their maximum at each iteration. The figure's title and a
    legend (each arm's colour and :data:`TITLES` name) run along the top.

    Returns:
        uint8 (height, len(panels) * width, 3).
    """
    curves = _check_curves(panels)
    if not isinstance(title, str):
        raise ValueError(f"title must be a str; got {title!r}")
    if (
        not isinstance(panel_size, Sequence)
        or len(panel_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in panel_size)
        or panel_size[0] < 200
        or panel_size[1] < 200
    ):
        raise ValueError(
            f"panel_size must be (width, height) ints, each >= 200; got {panel_size!r}"
        )
    panel_w, height = panel_size
    font, title_font = font_of_size(_CURVES_TEXT), font_of_size(_CURVES_TITLE)
    line, top = line_metrics(font)
    title_line, title_top = line_metrics(title_font)
    margin = 8

    xs = [x for arms in curves.values() for cs in arms.values() for c in cs for x, _ in c]
    ys = [y for arms in curves.values() for cs in arms.values() for c in cs for _, y in c]
    x_start, x_stop, x_step = _nice_range(min(xs), max(xs))
    y_start, y_stop, y_step = _nice_range(min(ys), max(ys))
    y_start, y_stop = max(0.0, y_start), min(100.0, y_stop)
    x_labels = [(x, _tick_text(x, x_step)) for x in _ticks(x_start, x_stop, x_step)]
    y_labels = [(y, _tick_text(y, y_step)) for y in _ticks(y_start, y_stop, y_step)]

    figure = Image.new("RGB", (panel_w * len(curves), height), _BACKGROUND)
    draw = ImageDraw.Draw(figure)
    # The title, then the legend, centred across the figure.
    y = margin
    title_text = fit_text(title_font, title, figure.width - 2 * margin)
    draw.text(
        ((figure.width - text_box(title_font, title_text)[0]) // 2, y - title_top),
        title_text,
        fill=_INK,
        font=title_font,
    )
    y += title_line + 8
    arms = [arm for arm in TITLES if any(arm in a for a in curves.values())]
    swatch_w, gap = 24, 18
    entry_widths = [swatch_w + 6 + text_box(font, TITLES[arm])[0] for arm in arms]
    x = (figure.width - sum(entry_widths) - gap * (len(arms) - 1)) // 2
    for arm, entry_w in zip(arms, entry_widths, strict=True):
        mid = y + line // 2
        draw.rectangle((x, mid - 1, x + swatch_w - 1, mid + 1), fill=ARM_COLOURS[arm])
        draw.text((x + swatch_w + 6, y - top), TITLES[arm], fill=_INK, font=font)
        x += entry_w + gap
    header = y + line + 10

    # The plot box of every panel (its left edge from the panel's own offset).
    y_label = _vertical_text("mIoU (%)", font)
    label_w = max(text_box(font, text)[0] for _, text in y_labels)
    left_pad = margin + y_label.width + 6 + label_w + 4 + _TICK
    right_pad = max(margin + 4, text_box(font, x_labels[-1][1])[0] // 2 + margin)
    plot_top = header + line + 6
    plot_bottom = height - margin - line - 6 - line - 4 - _TICK
    if plot_bottom - plot_top < 40:
        raise ValueError(f"panel_size {panel_size!r} leaves no room to plot; make it taller")
    for p, (panel, arm_curves) in enumerate(curves.items()):
        x0 = p * panel_w
        left, right = x0 + left_pad, x0 + panel_w - right_pad

        def at(point: tuple[float, float], left=left, right=right) -> tuple[int, int]:
            """The pixel of an (iteration, mIoU) point in this panel."""
            u = (point[0] - x_start) / (x_stop - x_start)
            v = (point[1] - y_start) / (y_stop - y_start)
            return round(left + u * (right - left)), round(
                plot_bottom - v * (plot_bottom - plot_top)
            )

        text = fit_text(font, panel, right - left)
        draw.text(
            (left + (right - left - text_box(font, text)[0]) // 2, header - top),
            text,
            fill=_INK,
            font=font,
        )
        for value, label in x_labels:
            px, _ = at((value, y_start))
            draw.line((px, plot_top, px, plot_bottom), fill=_GRID)
            draw.line((px, plot_bottom, px, plot_bottom + _TICK), fill=_INK)
            w = text_box(font, label)[0]
            draw.text((px - w // 2, plot_bottom + _TICK + 3 - top), label, fill=_INK, font=font)
        for value, label in y_labels:
            _, py = at((x_start, value))
            draw.line((left, py, right, py), fill=_GRID)
            draw.line((left - _TICK, py, left, py), fill=_INK)
            w = text_box(font, label)[0]
            draw.text((left - _TICK - 4 - w, py - line // 2 - top), label, fill=_INK, font=font)
        axis_label = "iteration"
        draw.text(
            (
                (left + right - text_box(font, axis_label)[0]) // 2,
                plot_bottom + _TICK + 3 + line + 6 - top,
            ),
            axis_label,
            fill=_INK,
            font=font,
        )
        figure.paste(y_label, (x0 + margin, (plot_top + plot_bottom - y_label.height) // 2))

        # Bands first, blended over what is drawn, then the mean lines over them.
        ordered = [arm for arm in TITLES if arm in arm_curves]
        canvas = np.asarray(figure).astype(np.float64)
        for arm in ordered:
            seeds = np.array([[v for _, v in c] for c in arm_curves[arm]])
            if len(seeds) < 2:
                continue
            iterations = [x for x, _ in arm_curves[arm][0]]
            upper = [at(pt) for pt in zip(iterations, seeds.max(0), strict=True)]
            lower = [at(pt) for pt in zip(iterations, seeds.min(0), strict=True)]
            mask = Image.new("L", figure.size, 0)
            ImageDraw.Draw(mask).polygon(upper + lower[::-1], fill=255, outline=255)
            alpha = (np.asarray(mask) > 0)[..., None] * _BAND_ALPHA
            canvas = canvas * (1 - alpha) + np.array(ARM_COLOURS[arm], np.float64) * alpha
        figure.paste(Image.fromarray(np.rint(canvas).astype(np.uint8)))
        draw = ImageDraw.Draw(figure)
        for arm in ordered:
            seeds = np.array([[v for _, v in c] for c in arm_curves[arm]])
            iterations = [x for x, _ in arm_curves[arm][0]]
            points = [at(pt) for pt in zip(iterations, seeds.mean(0), strict=True)]
            if len(points) == 1:
                (px, py), r = points[0], _LINE_WIDTH + 1
                draw.ellipse((px - r, py - r, px + r, py + r), fill=ARM_COLOURS[arm])
            else:
                draw.line(points, fill=ARM_COLOURS[arm], width=_LINE_WIDTH, joint="curve")
        draw.rectangle((left, plot_top, right, plot_bottom), outline=_INK)
    return np.asarray(figure)


def save_learning_curves(
    panels: Mapping[str, Mapping[str, Sequence[Sequence[Sequence[float]]]]],
    title: str,
    path: str | Path,
) -> Path:
    """Write :func:`learning_curves_figure` of ``panels`` and ``title`` to ``path``
    (a PNG for a ``.png`` name); creates the parent folders. Returns the path."""
    return save_image(learning_curves_figure(panels, title), path)
