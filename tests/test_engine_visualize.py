"""The guidance grid's IoU and image titles in condnet.engine.visualize. (overlay and the
guidance grid's layout are tested in test_engine_evaluate.py; the demo's figures in
test_demo_figures.py.)"""

import math

import numpy as np
import pytest
import torch

from condnet.engine.visualize import guidance_grid

NAMES = ("sky", "road", "car", "tree")
PALETTE = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10)]


@pytest.fixture
def guide():
    image = np.full((40, 120, 3), 200, dtype=np.uint8)
    probs = torch.full((4, 40, 120), 0.25)
    return image, probs


def label_width(tile):
    """Width of the black label box along a tile's second row."""
    return int((tile[1] == 0).all(axis=1).sum())


def test_guidance_grid_iou_titles(guide):
    image, probs = guide
    args = (image, probs, [1, 3], NAMES, PALETTE)
    plain = guidance_grid(*args, columns=3)
    ious = [0.5, 0.632, math.nan, 0.9]
    titled = guidance_grid(*args, columns=3, ious=ious)
    assert titled.shape == plain.shape == (40, 3 * 122 - 2, 3)
    tiles = [slice(0, 120), slice(122, 242), slice(244, 364)]
    # The image tile is as it was; each class tile's label grows by "  IoU ..." and only it.
    assert np.array_equal(titled[:, tiles[0]], plain[:, tiles[0]])
    for tile in tiles[1:]:
        assert label_width(titled[:, tile]) > label_width(plain[:, tile]) + 20
        assert np.array_equal(titled[20:, tile], plain[20:, tile])
    # The text is the IoU: another value, another label; a mapping can name some classes.
    other = guidance_grid(*args, columns=3, ious=[0.5, 0.111, math.nan, 0.9])
    assert not np.array_equal(other[:, tiles[1]], titled[:, tiles[1]])
    assert np.array_equal(other[:, tiles[2]], titled[:, tiles[2]])
    mapped = guidance_grid(*args, columns=3, ious={1: 0.632})
    assert np.array_equal(mapped[:, tiles[1]], titled[:, tiles[1]])
    assert np.array_equal(mapped[:, tiles[2]], plain[:, tiles[2]])
    # NaN (an undefined IoU) is written as such, not as a number.
    nan = guidance_grid(*args, columns=3, ious=[0.5, math.nan, math.nan, 0.9])
    assert not np.array_equal(nan[:, tiles[1]], titled[:, tiles[1]])


def test_guidance_grid_image_title(guide):
    image, probs = guide
    args = (image, probs, [1], NAMES, PALETTE)
    default = guidance_grid(*args, columns=2)
    assert np.array_equal(default, guidance_grid(*args, columns=2, image_title="image"))
    untitled = guidance_grid(*args, columns=2, image_title="")
    assert np.array_equal(untitled[:, :120], image)
    renamed = guidance_grid(*args, columns=2, image_title="validation image 3")
    assert label_width(renamed[:, :120]) > label_width(default[:, :120])
    assert np.array_equal(renamed[:, 122:], default[:, 122:])
    # The label font follows the tile size unless given; 10 px (PIL's default) on small tiles.
    assert np.array_equal(default, guidance_grid(*args, columns=2, font_size=10))
    assert label_width(guidance_grid(*args, columns=2, font_size=20)[:, :120]) > label_width(
        default[:, :120]
    )


BAD_GUIDES = {
    "percent IoUs": (dict(ious=[0.5, 63.2, 1.0, 1.0]), r"fractions in \[0, 1\].*63.2 for class 1"),
    "negative IoU": (dict(ious=[0.5, -0.1, 1.0, 1.0]), r"fractions in \[0, 1\]"),
    "IoUs for 3 classes": (dict(ious=[0.5, 0.5, 0.5]), r"one IoU per class \(4\).*got 3"),
    "IoU not a number": (dict(ious=[0.5, "x", 0.5, 0.5]), "must be a number"),
    "IoU class out of range": (dict(ious={7: 0.5}), r"ious has classes \[7\]"),
    "image title not a str": (dict(image_title=None), "image_title must be a str"),
    "font size": (dict(font_size=-3), "font_size must be"),
}


@pytest.mark.parametrize("case", BAD_GUIDES, ids=list(BAD_GUIDES))
def test_guidance_grid_errors(guide, case):
    image, probs = guide
    changes, match = BAD_GUIDES[case]
    with pytest.raises(ValueError, match=match):
        guidance_grid(image, probs, [1], NAMES, PALETTE, **changes)
