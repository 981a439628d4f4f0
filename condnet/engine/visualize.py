"""Pictures of predictions: palette overlays and CondNet's guidance maps.

``overlay`` blends each pixel's predicted class colour over the image (what
``condnet-test --show-dir`` writes). ``guidance_grid`` shows what the
conditional classifier's guidance branch sees: for a CondNet model,
``Segmentor.decode(img)`` also returns guide logits (B, K, h, w); their softmax
over classes is a soft mask per class, from which the per-image class
embeddings are pooled. The grid puts the image first, then one heat map per
listed class over a dimmed copy of the image, each labelled with its name (and,
given ``ious``, that class's IoU), in the text of :mod:`condnet.engine.figure_text`.
The demo's titled comparison figure is :func:`condnet.demo.figures.predictions_figure`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .figure_text import auto_font_size, check_font_size, draw_label, font_of_size

__all__ = [
    "as_numpy",
    "check_rgb_image",
    "denormalize",
    "guidance_grid",
    "heat_colours",
    "overlay",
    "palette_array",
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


def as_numpy(value: object) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def check_rgb_image(image: object, name: str = "image") -> np.ndarray:
    """``image`` as a uint8 (H, W, 3) array; a ValueError naming ``name`` otherwise."""
    image = as_numpy(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} must be a uint8 (H, W, 3) RGB array; got {image.dtype} {image.shape}"
        )
    return image


def palette_array(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``palette`` as a float (K, 3) array; a ValueError unless it is K >= 1 (r, g, b)."""
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
    image = check_rgb_image(image)
    pred = as_numpy(pred)
    if pred.shape != image.shape[:2] or not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(
            f"pred must be an integer (H, W) map of the image's size {image.shape[:2]}; "
            f"got {pred.dtype} {pred.shape}"
        )
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1]; got {opacity!r}")
    table = palette_array(palette)
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


def _check_ious(ious: object, num_classes: int) -> dict[int, float]:
    """``ious`` (K values or {class: value}, fractions in [0, 1] or NaN) as a dict."""
    if isinstance(ious, Mapping):
        items = [(int(k), v) for k, v in ious.items()]
        bad = [k for k, _ in items if not 0 <= k < num_classes]
        if bad:
            raise ValueError(f"ious has classes {bad} outside [0, {num_classes})")
    else:
        values = list(as_numpy(ious).reshape(-1)) if not isinstance(ious, str) else None
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
    image = check_rgb_image(image)
    probs = torch.as_tensor(as_numpy(guide_probs), dtype=torch.float32)
    if probs.dim() != 3:
        raise ValueError(f"guide_probs must be (K, h, w); got {tuple(probs.shape)}")
    num_classes = probs.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    table = palette_array(palette)
    if len(table) != num_classes:
        raise ValueError(f"palette has {len(table)} colours for {num_classes} classes")
    ids = [int(k) for k in class_ids]
    bad = [k for k in ids if not 0 <= k < num_classes]
    if bad:
        raise ValueError(f"class_ids {bad} outside [0, {num_classes})")
    iou_of = {} if ious is None else _check_ious(ious, num_classes)
    if not isinstance(image_title, str):
        raise ValueError(f"image_title must be a str; got {image_title!r}")
    check_font_size(font_size)
    height, width = image.shape[:2]
    font = font_of_size(font_size or auto_font_size(width))
    if tuple(probs.shape[1:]) != (height, width):
        probs = F.interpolate(
            probs[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
    maps = probs.clamp(0, 1).numpy()

    dim = image.astype(np.float64) * _DIM
    tiles = [Image.fromarray(image.copy())]
    if image_title:
        draw_label(tiles[0], image_title, None, font)
    for k in ids:
        p = maps[k][..., None]
        # Opacity grows with p, so low-probability regions show the (dim) image.
        blended = dim * (1 - p) + heat_colours(maps[k]) * p
        tile = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
        swatch = tuple(int(c) for c in table[k])
        text = str(class_names[k])
        if k in iou_of:
            text = f"{text}  {_iou_text(iou_of[k])}"
        draw_label(tile, text, swatch, font)  # type: ignore[arg-type]
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


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 (H, W, 3) or (H, W) array as an image (format from the suffix);
    creates the parent folders. Returns the path."""
    array = as_numpy(array)
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
