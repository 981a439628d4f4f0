"""Tiny on-disk dataset trees in each real layout, for the condnet.data tests.

Images are PNG-encoded where exact pixel values matter (a ``.jpg`` name with
PNG content still decodes: Pillow sniffs the format), labels are PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 12, 16  # fixture image size


def save_image(path: Path, array: np.ndarray, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format=fmt)
    return path


def save_label(path: Path, label: np.ndarray, palette: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(label, dtype=np.uint8))
    if palette:
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path, format="PNG")
    return path


def image_for(seed: int, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def label_for(seed: int, values, height: int = H, width: int = W) -> np.ndarray:
    """A label map using every value of ``values`` at least once."""
    values = np.asarray(values, dtype=np.uint8)
    label = np.random.default_rng(seed).choice(values, size=(height, width))
    label.ravel()[: len(values)] = values
    return label


def make_ade_tree(root: Path, num_train: int = 3, num_val: int = 2) -> dict:
    """ADEChallengeData2016 layout; returns {(split, stem): raw label}."""
    labels = {}
    for split, count in (("training", num_train), ("validation", num_val)):
        for i in range(count):
            stem = f"ADE_{split[:5]}_{i:08d}"
            save_image(root / "images" / split / f"{stem}.jpg", image_for(100 + i))
            labels[(split, stem)] = label_for(i, [0, 1, 2, 75, 150])
            save_label(root / "annotations" / split / f"{stem}.png", labels[(split, stem)])
    return labels


def make_context_tree(root: Path) -> dict:
    """VOC2010 layout with SegmentationClassContext; returns {name: raw label}."""
    names = {"train": ["2008_000002", "2008_000010", "2008_000005"], "val": ["2008_000003"]}
    labels = {}
    for split, split_names in names.items():
        for i, name in enumerate(split_names):
            save_image(root / "JPEGImages" / f"{name}.jpg", image_for(i))
            labels[name] = label_for(i, [0, 1, 30, 59])
            save_label(root / "SegmentationClassContext" / f"{name}.png", labels[name])
        sets = root / "ImageSets" / "SegmentationContext"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / f"{split}.txt").write_text("\n".join(split_names) + "\n")
    save_image(root / "JPEGImages" / "2008_999999.jpg", image_for(9))  # listed nowhere
    return labels


def make_voc_tree(root: Path, aug: bool = False) -> dict:
    """VOC2012 layout (palette PNG labels); with ``aug`` SBD-converted masks and lists."""
    train, val, sbd_only = ["2007_000032", "2007_000039"], ["2007_000033"], ["2008_000123"]
    labels = {}
    for i, name in enumerate(train + val):
        save_image(root / "JPEGImages" / f"{name}.jpg", image_for(i))
        labels[name] = label_for(i, [0, 1, 20, 255])
        save_label(root / "SegmentationClass" / f"{name}.png", labels[name], palette=True)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "train.txt").write_text("\n".join(train) + "\n")
    (sets / "val.txt").write_text("\n".join(val) + "\n")
    if aug:
        for i, name in enumerate(sbd_only + train):  # SBD also has masks for VOC images
            if name not in labels:
                save_image(root / "JPEGImages" / f"{name}.jpg", image_for(50 + i))
                labels[name] = label_for(50 + i, [0, 5, 15])
            save_label(
                root / "SegmentationClassAug" / f"{name}.png", label_for(70 + i, [0, 3])
            )  # differs from VOC's own masks
        (sets / "trainaug.txt").write_text("\n".join(sorted(train + sbd_only)) + "\n")
    return labels


def make_cityscapes_tree(root: Path, train_ids: bool = True) -> dict:
    """leftImg8bit + gtFine with *_labelIds.png (and *_labelTrainIds.png)."""
    label_ids = {}
    for split, cities in (("train", ["aachen", "bochum"]), ("val", ["frankfurt"])):
        for c, city in enumerate(cities):
            for f in range(2):
                stem = f"{city}_{c:06d}_{f:06d}"
                save_image(
                    root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                    image_for(c * 10 + f),
                )
                ids = label_for(c * 10 + f, [0, 7, 8, 26, 33, 255])
                label_ids[(split, stem)] = ids
                ann = root / "gtFine" / split / city
                save_label(ann / f"{stem}_gtFine_labelIds.png", ids)
                if train_ids:
                    from condnet.data.cityscapes_convert import label_ids_to_train_ids

                    save_label(
                        ann / f"{stem}_gtFine_labelTrainIds.png", label_ids_to_train_ids(ids)
                    )
    return label_ids


def make_folder_tree(root: Path, split: str | None = None, count: int = 3) -> dict:
    labels = {}
    base_img, base_ann = root / "images", root / "annotations"
    if split:
        base_img, base_ann = base_img / split, base_ann / split
    for i in range(count):
        save_image(base_img / f"img{i}.jpg", image_for(i))
        labels[f"img{i}"] = label_for(i, [0, 1, 2, 255])
        save_label(base_ann / f"img{i}.png", labels[f"img{i}"])
    return labels
