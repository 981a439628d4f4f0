"""The scene generator of the demo: determinism, content, layout and command line."""

import colorsys
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from condnet.data import SCENE_CLASSES
from condnet.demo import generate_scene, scene_rng, write_scenes
from condnet.tools.make_scenes import main

REPO = Path(__file__).resolve().parents[1]


def tree_bytes(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = write_scenes(tmp_path / "a", seed=3, num_train=4, num_val=2, size=40)
    write_scenes(tmp_path / "b", seed=3, num_train=4, num_val=2, size=40)
    write_scenes(tmp_path / "c", seed=4, num_train=4, num_val=2, size=40)
    files_a, files_b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert len(files_a) == 2 * 6 + 1 and files_a == files_b
    files_c = tree_bytes(tmp_path / "c")
    assert files_a.keys() == files_c.keys()
    differing = [k for k in files_a if k.startswith("images/") and files_a[k] != files_c[k]]
    assert len(differing) == 6
    assert a["seed"] == 3 and json.loads(files_a["scenes.json"])["classes"] == list(SCENE_CLASSES)


def test_an_image_depends_only_on_seed_split_and_index(tmp_path):
    write_scenes(tmp_path / "few", seed=0, num_train=1, num_val=1, size=32, image_format="png")
    write_scenes(tmp_path / "more", seed=0, num_train=3, num_val=2, size=32, image_format="png")
    for name in (
        "images/training/scene_000000.png",
        "images/validation/scene_000000.png",
        "annotations/training/scene_000000.png",
    ):
        assert (tmp_path / "few" / name).read_bytes() == (tmp_path / "more" / name).read_bytes()
    train0 = (tmp_path / "more/images/training/scene_000000.png").read_bytes()
    assert train0 != (tmp_path / "more/images/validation/scene_000000.png").read_bytes()


def test_scene_content_sizes_and_labels():
    seen = set()
    for index in range(12):
        img, label = generate_scene(scene_rng(0, "train", index), 64, 80)
        assert img.shape == (64, 80, 3) and img.dtype == np.uint8
        assert label.shape == (64, 80) and label.max() <= len(SCENE_CLASSES)
        assert len(np.unique(label)) >= 2  # layered regions, not a blank image
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(len(SCENE_CLASSES) + 1))  # every class and "other"


def mean_hue(img, mask):
    r, g, b = img[mask].mean(axis=0) / 255
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def test_a_class_changes_colour_between_images_but_not_within_one():
    hues = {c: [] for c in range(1, len(SCENE_CLASSES) + 1)}
    spreads = []
    for index in range(40):
        img, label = generate_scene(scene_rng(1, "train", index), 96, 96)
        for value in np.unique(label):
            mask = label == value
            if value == 0 or mask.sum() < 400 or value == 7:  # 7 = speckle: no single hue
                continue
            hues[value].append(mean_hue(img, mask))
            halves = mask.copy(), mask.copy()
            halves[0][:, 48:] = False
            halves[1][:, :48] = False
            if min(halves[0].sum(), halves[1].sum()) > 150:
                d = abs(mean_hue(img, halves[0]) - mean_hue(img, halves[1]))
                spreads.append(min(d, 360 - d))
    across = []
    for values in hues.values():
        if len(values) >= 3:
            diffs = [min(abs(a - b), 360 - abs(a - b)) for a in values for b in values]
            across.append(max(diffs))
    assert len(across) >= 5 and np.median(across) > 90  # modes far apart across images
    assert np.median(spreads) < 20  # the same class in one image stays one colour


def test_write_refuses_to_mix_sets_unless_overwrite(tmp_path):
    write_scenes(tmp_path, seed=0, num_train=4, num_val=1, size=24)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_scenes(tmp_path, seed=1, num_train=2, num_val=1, size=24)
    write_scenes(tmp_path, seed=1, num_train=2, num_val=1, size=24, overwrite=True)
    assert len(list((tmp_path / "images" / "training").iterdir())) == 2
    assert len(list((tmp_path / "annotations" / "training").iterdir())) == 2
    with pytest.raises(ValueError, match="image_format"):
        write_scenes(tmp_path / "x", image_format="gif")


def test_command_line(tmp_path):
    assert (
        main(
            [
                "--out",
                str(tmp_path / "a"),
                "--seed",
                "0",
                "--num-train",
                "2",
                "--num-val",
                "1",
                "--size",
                "24",
            ]
        )
        == 0
    )
    assert main(["--out", str(tmp_path / "a"), "--num-train", "1"]) == 1  # exists
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "make_scenes.py"),
            "--out",
            str(tmp_path / "b"),
            "--seed",
            "0",
            "--num-train",
            "2",
            "--num-val",
            "1",
            "--size",
            "24",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")


def test_the_control_set_has_the_same_layouts_and_no_per_image_colour():
    """colours="region": the same label maps (the layout is drawn first), the same
    texture families, but a class's colour drawn per colour cell, so that it varies
    inside an image as much as the cue set's does between images."""
    within = {"image": [], "region": []}
    for index in range(30):
        scenes = {
            mode: generate_scene(scene_rng(2, "train", index), 96, 96, colours=mode)
            for mode in ("image", "region")
        }
        assert np.array_equal(scenes["image"][1], scenes["region"][1])
        for mode, (img, label) in scenes.items():
            for value in np.unique(label):
                mask = label == value
                if value in (0, 7) or mask.sum() < 800:  # 7 = speckle: no single hue
                    continue
                quarters = []
                for rows in (slice(0, 48), slice(48, 96)):
                    for cols in (slice(0, 48), slice(48, 96)):
                        part = np.zeros_like(mask)
                        part[rows, cols] = mask[rows, cols]
                        if part.sum() > 150:
                            quarters.append(mean_hue(img, part))
                if len(quarters) >= 2:
                    d = [min(abs(a - b), 360 - abs(a - b)) for a in quarters for b in quarters]
                    within[mode].append(max(d))
    assert len(within["image"]) >= 10 and len(within["region"]) >= 10
    assert np.median(within["image"]) < 20  # one colour per class and image
    assert np.median(within["region"]) > 60  # several colour cells, several modes


def test_colours_argument_is_checked_and_recorded(tmp_path):
    with pytest.raises(ValueError, match="colours must be one of"):
        generate_scene(scene_rng(0, "train", 0), 32, 32, colours="pixel")
    with pytest.raises(ValueError, match="colours must be one of"):
        write_scenes(tmp_path / "x", num_train=1, num_val=1, size=24, colours="cell")
    assert (
        main(
            [
                "--out",
                str(tmp_path / "c"),
                "--num-train",
                "1",
                "--num-val",
                "1",
                "--size",
                "24",
                "--colours",
                "region",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "c" / "scenes.json").read_text())["colours"] == "region"
    meta = write_scenes(tmp_path / "d", num_train=1, num_val=1, size=24)
    assert meta["colours"] == "image" and meta["size"] == 24
