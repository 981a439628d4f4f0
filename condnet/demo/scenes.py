"""The scene generator: CondNet's embedded stand-in for the real benchmarks.

Each image is a layered scene of textured regions from 8 classes
(:data:`SCENE_CLASSES`): a background region, then 3-7 shapes (convex
polygons, wobbly blobs, wavy bands) painted on top of each other, then up to
two small "other" blobs of colour noise. It is written in the ADE20K layout::

    <root>/images/{training,validation}/scene_000000.jpg   (or .png)
    <root>/annotations/{training,validation}/scene_000000.png
    <root>/scenes.json                                     (classes, palette, settings)

Annotations hold 0 for "other" and ``k + 1`` for ``SCENE_CLASSES[k]``;
:class:`condnet.data.SceneDataset` reads the set (labels 0..7, "other" as 255,
ignored).

**Why it suits a conditional classifier.** Each class has a fixed texture
*family* (stripes, checkerboard, dots, ...) but its appearance varies between
images and little within one:

* each class has 3 colour *modes* (hues 120 degrees apart); every image picks
  one per class. The 24 modes of the 8 classes tile the hue circle every 15
  degrees, with neighbouring slots belonging to different classes, and each
  image jitters a class's hue by up to +-12 degrees and draws its saturation
  and brightness afresh, so the colour ranges of different classes overlap:
  colour alone does not tell the class across the dataset, but inside one
  image each class has one consistent colour;
* the texture's frequency (x0.9-1.1), orientation, phase and contrast
  (70-100%) are drawn per image;
* a smooth colour drift (independent low-frequency fields scaling r, g and b
  by up to about +-6%) and pixel noise vary the appearance within an image.

So a classifier with one global set of weights must learn the textures, while
one conditioned on the image (CondNet's class embeddings, CAC's class centres)
can also lean on the consistent within-image colour.

**The control set** (``colours="region"``) is drawn the same way except that a
class's colours are drawn afresh in each of 12 colour cells (Voronoi regions
that do not follow the class regions), so no colour holds for a class across an
image: whatever a conditional classifier gains there does not come from the
per-image cue. :func:`condnet.demo.colour_cue_check` measures the cue on the
written files (seed 0, 200 training / 50 validation images, 128 pixels high):
a global colour table labels 43% of the validation pixels right on both sets;
each image's own class-mean colours 92% on the cue set and 48% on the control
set. The tests check these bounds on small sets.

Everything is vectorised numpy. An image depends only on ``(seed, split,
index)``, and the files are byte-for-byte identical between runs with the same
seed (given the same numpy and Pillow builds). ``condnet-make-scenes`` writes it::

    condnet-make-scenes --out data/scenes/cue --seed 0 --num-train 200 --num-val 50 --size 128
    condnet-make-scenes --out data/scenes/control --colours region --size 128
"""

from __future__ import annotations

import colorsys
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from condnet.data.scenes import METADATA_FILE, SCENE_CLASSES, SCENE_PALETTE, SPLIT_DIRS

__all__ = ["generate_scene", "scene_rng", "write_scenes"]

NUM_MODES = 3
# Texture frequency in cycles per short image side, per class (speckle has none).
_BASE_FREQ = (9.0, 5.0, 7.0, 6.0, 8.0, 1.6, 0.0, 7.0)
FORMAT_VERSION = 2
# The nuisances, drawn per image (see the module docstring). Milder than the first
# version's (contrast 0.2-1, frequency x0.7-1.4, drift 0.03-0.075, noise 5), which the
# demo's networks could not learn within its budget (docs/demo.md, How the set was tuned).
HUE_JITTER = 12.0  # degrees
CONTRAST = (0.7, 1.0)  # of the texture's second colour
FREQ_JITTER = (0.9, 1.1)
DRIFT = (0.01, 0.03)  # amplitude of each of the two colour waves per channel
NOISE = 2.0  # pixel noise sigma, 0-255
#: How a class's appearance is drawn: per image (the cue set) or per colour cell
#: (the control set); see :func:`generate_scene`.
COLOUR_MODES = ("image", "region")
COLOUR_CELLS = 12  # colour cells per image in the control set


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that draws image ``index`` of ``split`` for ``seed``."""
    return np.random.default_rng([seed, list(SPLIT_DIRS).index(split), index])


def _hsv(hue_deg: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360) / 360, min(sat, 1.0), min(val, 1.0)))


def _class_colours(cls: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The two colours (0-1 RGB) a class is drawn with in one image."""
    mode = int(rng.integers(NUM_MODES))
    hue = 45.0 * cls + 120.0 * mode + rng.uniform(-HUE_JITTER, HUE_JITTER)
    sat, val = rng.uniform(0.45, 0.95), rng.uniform(0.5, 0.95)
    main = _hsv(hue, sat, val)
    contrast = rng.uniform(*CONTRAST)  # faint textures make the colour the main cue
    return main, main + contrast * (_hsv(hue + 25.0, sat * 0.6, val * 0.55) - main)


def _texture(cls: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The class's texture in [0, 1] at points (x, y) given in short-side units."""
    freq = _BASE_FREQ[cls] * rng.uniform(*FREQ_JITTER)
    theta, phase = rng.uniform(0, np.pi), rng.uniform(0, 1)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    two_pi = 2 * np.pi
    if cls == 0:  # stripes
        return (np.sin(two_pi * (freq * u + phase)) > 0).astype(np.float64)
    if cls == 1:  # checker
        return (np.sin(two_pi * (freq * u + phase)) * np.sin(two_pi * freq * v) > 0) * 1.0
    if cls == 2:  # dots on a lattice
        du, dv = (freq * u + phase) % 1 - 0.5, (freq * v) % 1 - 0.5
        return (du * du + dv * dv < rng.uniform(0.06, 0.12)) * 1.0
    if cls == 3:  # waves
        bend = rng.uniform(0.4, 1.0)
        return 0.5 + 0.5 * np.sin(two_pi * (freq * u + bend * np.sin(two_pi * 2 * v)))
    if cls == 4:  # rings around a point
        cx, cy = rng.uniform(0, 1, size=2)
        return 0.5 + 0.5 * np.sin(two_pi * (freq * np.hypot(x - cx, y - cy) + phase))
    if cls == 5:  # clouds: a few smooth waves
        total = np.zeros_like(x)
        for _ in range(4):
            a = rng.uniform(0, np.pi)
            total += np.sin(
                two_pi
                * (freq * rng.uniform(0.5, 2) * (x * np.cos(a) + y * np.sin(a)) + rng.uniform(0, 1))
            )
        return np.clip(0.5 + total / 4, 0, 1)
    if cls == 6:  # speckle
        return rng.random(x.shape)
    # grid of thin lines
    width = rng.uniform(0.08, 0.16)
    lines = (np.abs((freq * u + phase) % 1 - 0.5) < width) | (np.abs((freq * v) % 1 - 0.5) < width)
    return lines * 1.0


def _blob(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """A disc around (cx, cy) whose radius wobbles with the angle."""
    angle = np.arctan2(y - cy, x - cx)
    wobble = np.ones_like(angle)
    for k in (2, 3, 5):
        wobble *= 1 + rng.uniform(0, 0.7 / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    return np.hypot(x - cx, y - cy) < radius * wobble


def _shape_mask(
    x: np.ndarray, y: np.ndarray, extent: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """A random region (polygon, blob or band) on the grid (x, y in short-side units,
    spanning ``extent``)."""
    kind = int(rng.integers(3))
    cx, cy = rng.uniform(0, extent[0]), rng.uniform(0, extent[1])
    if kind == 0:  # convex polygon: intersection of half-planes
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=n))
        radius = rng.uniform(0.15, 0.45)
        px, py = cx + radius * np.cos(angles), cy + radius * np.sin(angles)
        inside = np.ones(x.shape, dtype=bool)
        for i in range(n):
            ex, ey = px[(i + 1) % n] - px[i], py[(i + 1) % n] - py[i]
            inside &= ex * (y - py[i]) - ey * (x - px[i]) >= 0
        return inside
    if kind == 1:
        return _blob(x, y, cx, cy, rng.uniform(0.1, 0.35), rng)
    # band across the image with a wavy edge
    theta = rng.uniform(0, np.pi)
    along = -(x - cx) * np.sin(theta) + (y - cy) * np.cos(theta)
    across = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
    wave = rng.uniform(0, 0.05) * np.sin(2 * np.pi * rng.uniform(1, 4) * along)
    return np.abs(across + wave) < rng.uniform(0.05, 0.18)


def _colour_cells(
    x: np.ndarray, y: np.ndarray, extent: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """The control set's colour cells: the Voronoi regions of :data:`COLOUR_CELLS`
    random points, drawn independently of the class regions."""
    px = rng.uniform(0, extent[0], size=COLOUR_CELLS)
    py = rng.uniform(0, extent[1], size=COLOUR_CELLS)
    dist = (x[..., None] - px) ** 2 + (y[..., None] - py) ** 2
    return dist.argmin(-1)


def generate_scene(
    rng: np.random.Generator, height: int, width: int, colours: str = "image"
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(HxWx3 uint8 RGB image, HxW uint8 annotation)``, 0 = other.

    ``colours``: ``"image"`` draws each class's colours once per image (the
    per-image cue); ``"region"`` draws them afresh in each colour cell
    (:func:`_colour_cells`), so that a class's colour does not hold across an
    image (the control set). The texture's parameters are drawn once per image in
    both."""
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours must be one of {COLOUR_MODES}; got {colours!r}")
    num_classes = len(SCENE_CLASSES)
    short = min(height, width)
    ys, xs = np.mgrid[0:height, 0:width]
    x, y = (xs + 0.5) / short, (ys + 0.5) / short
    extent = (width / short, height / short)

    label = np.full((height, width), int(rng.integers(num_classes)) + 1, dtype=np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        label[_shape_mask(x, y, extent, rng)] = int(rng.integers(num_classes)) + 1
    for _ in range(int(rng.integers(0, 3))):  # small "other" clutter
        cx, cy = rng.uniform(0, extent[0]), rng.uniform(0, extent[1])
        label[_blob(x, y, cx, cy, rng.uniform(0.03, 0.09), rng)] = 0

    # Each class's texture is drawn once per image; its colours once per image (the
    # per-image cue) or once per colour cell, regions that the class regions do not
    # follow (the control set).
    cells = np.zeros((height, width), dtype=np.int64)
    if colours == "region":
        cells = _colour_cells(x, y, extent, rng)
    img = np.empty((height, width, 3), dtype=np.float64)
    for value in range(num_classes + 1):  # fixed order keeps the draws deterministic
        where = label == value
        if value == 0:
            img[where] = rng.random((int(where.sum()), 3))
            continue
        if not where.any():
            continue
        t = _texture(value - 1, x[where], y[where], rng)[:, None]
        cell = cells[where]
        painted = np.empty((t.shape[0], 3))
        for c in np.unique(cell):
            main, second = _class_colours(value - 1, rng)
            inside = cell == c
            painted[inside] = second + (main - second) * t[inside]
        img[where] = painted

    drift = np.ones((height, width, 3))
    for channel in range(3):
        for _ in range(2):
            angle, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.2)
            drift[..., channel] += rng.uniform(*DRIFT) * np.sin(
                2 * np.pi * (freq * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 1))
            )
    img = img * drift * 255 + rng.normal(0, NOISE, size=img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), label


def _clear_previous(dirs: Sequence[Path]) -> None:
    for folder in dirs:
        for path in folder.glob("scene_*"):
            if path.suffix in (".jpg", ".png"):
                path.unlink()


def write_scenes(
    out: str | os.PathLike,
    seed: int = 0,
    num_train: int = 200,
    num_val: int = 50,
    size: int = 128,
    image_format: str = "jpg",
    overwrite: bool = False,
    colours: str = "image",
) -> dict:
    """Generate the set under ``out`` (see the module docstring); returns the metadata.

    ``colours``: ``"image"`` for the set with the per-image cue, ``"region"`` for
    the control set without it (see :func:`generate_scene`).

    Image ``i`` is ``size`` pixels high and ``size * aspect`` wide, aspect drawn
    in [0.75, 1.33]. Refuses to write into a non-empty set unless ``overwrite``,
    which first deletes the previous ``scene_*`` files (so no stale sample stays).
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if size < 16 or num_train < 0 or num_val < 0:
        raise ValueError("size must be >= 16 and the counts >= 0")
    if colours not in COLOUR_MODES:
        raise ValueError(f"colours must be one of {COLOUR_MODES}; got {colours!r}")
    out = Path(out)
    dirs = [out / kind / SPLIT_DIRS[s] for s in SPLIT_DIRS for kind in ("images", "annotations")]
    if any(d.is_dir() and any(d.glob("scene_*")) for d in dirs):
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds generated scenes; pass overwrite=True "
                "(--overwrite) to replace them"
            )
        _clear_previous(dirs)
    for folder in dirs:
        folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        for index in range(count):
            rng = scene_rng(seed, split, index)
            width = int(round(size * rng.uniform(0.75, 1.33)))
            img, label = generate_scene(rng, size, width, colours)
            name = f"scene_{index:06d}"
            image = Image.fromarray(img)
            if image_format == "jpg":
                image.save(out / "images" / SPLIT_DIRS[split] / f"{name}.jpg", quality=92)
            else:
                image.save(out / "images" / SPLIT_DIRS[split] / f"{name}.png")
            Image.fromarray(label).save(out / "annotations" / SPLIT_DIRS[split] / f"{name}.png")
    meta = {
        "format_version": FORMAT_VERSION,
        "classes": list(SCENE_CLASSES),
        "palette": [list(c) for c in SCENE_PALETTE],
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "size": size,
        "image_format": image_format,
        "colours": colours,
        "labels": "0 = other (ignored with reduce_zero_label), k + 1 = classes[k]",
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
