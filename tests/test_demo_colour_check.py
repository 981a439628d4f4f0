"""colour_cue_check: the global and per-image colour classifiers, on crafted scenes and
on the generated ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from condnet.demo import colour_cue_check, write_scenes


def _write(root, split, index, image, label):
    for kind, array in (("images", image), ("annotations", label)):
        folder = root / kind / {"train": "training", "val": "validation"}[split]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"scene_{index:06d}.png")


def _flat(colours, width=16):
    """An image of vertical bands, one flat colour per class (annotation k + 1)."""
    image = np.zeros((16, width * len(colours), 3), np.uint8)
    label = np.zeros((16, width * len(colours)), np.uint8)
    for k, colour in enumerate(colours):
        image[:, k * width : (k + 1) * width] = colour
        label[:, k * width : (k + 1) * width] = k + 1
    return image, label


def test_swapped_colours_fool_the_global_table_but_not_the_per_image_one(tmp_path):
    red, blue = (220, 30, 30), (30, 30, 220)
    # Training: class 0 red, class 1 blue. Validation: the colours swapped.
    _write(tmp_path, "train", 0, *_flat([red, blue]))
    _write(tmp_path, "val", 0, *_flat([blue, red]))
    result = colour_cue_check(tmp_path)
    # Away from the band edge (blurred), every pixel is wrong globally, right per image.
    assert result["global_accuracy"] < 0.25
    assert result["per_image_accuracy"] > 0.95
    assert result["images"] == (1, 1)


def test_consistent_colours_serve_both(tmp_path):
    colours = [(220, 30, 30), (30, 30, 220)]
    _write(tmp_path, "train", 0, *_flat(colours))
    _write(tmp_path, "val", 0, *_flat(colours))
    result = colour_cue_check(tmp_path)
    assert result["global_accuracy"] > 0.95 and result["per_image_accuracy"] > 0.95


def test_the_cue_set_holds_the_per_image_cue_and_the_control_set_does_not(tmp_path):
    """The bounds the demo's sets are made to: on the cue set a global colour table
    labels at most half the validation pixels and each image's own class colours at
    least 90%; on the control set (colours per region) the image's own class colours
    add little to the global table. (The demo's full sets, 200 + 50 images at 128
    pixels: 43% / 92% and 44% / 48%, docs/demo.md.)"""
    results = {}
    for mode in ("image", "region"):
        write_scenes(tmp_path / mode, seed=0, num_train=40, num_val=12, size=64, colours=mode)
        results[mode] = colour_cue_check(tmp_path / mode)
    cue, control = results["image"], results["region"]
    assert cue["global_accuracy"] <= 0.5 and cue["per_image_accuracy"] >= 0.9
    assert control["global_accuracy"] <= 0.5
    assert control["per_image_accuracy"] - control["global_accuracy"] < 0.15
    assert control["per_image_accuracy"] < 0.6


def test_missing_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="no scenes"):
        colour_cue_check(tmp_path)
