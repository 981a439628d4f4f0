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
