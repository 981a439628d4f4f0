"""Bad input gives clear errors that name the file; nothing is skipped silently."""

import re
import warnings

import numpy as np
import pytest

from condnet.data import (
    ADE20KDataset,
    CityscapesDataset,
    CorruptFileError,
    FolderDataset,
    PascalContext59Dataset,
    SceneDataset,
    VOCDataset,
    train_pipeline,
)
from condnet.data.cityscapes_convert import convert_file
from tests.data_fixtures import (
    H,
    W,
    image_for,
    make_ade_tree,
    make_context_tree,
    make_folder_tree,
    make_voc_tree,
    save_image,
    save_label,
)


@pytest.mark.parametrize(
    "cls", [ADE20KDataset, PascalContext59Dataset, CityscapesDataset, VOCDataset, SceneDataset]
)
def test_missing_root_names_path_and_layout(tmp_path, cls):
    root = tmp_path / "not_there"
    with pytest.raises(FileNotFoundError) as info:
        cls(root)
    message = str(info.value)
    assert str(root) in message and "expected layout" in message
    assert "<root>" in message


def test_missing_root_of_folder_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "x"))):
        FolderDataset(tmp_path / "x", ["a"])
    with pytest.raises(FileNotFoundError, match="class list not found"):
        FolderDataset(tmp_path, tmp_path / "classes.txt")


@pytest.mark.parametrize(
    "make, cls, split_file",
    [
        (make_context_tree, PascalContext59Dataset, "ImageSets/SegmentationContext/test.txt"),
        (make_voc_tree, VOCDataset, "ImageSets/Segmentation/test.txt"),
    ],
)
def test_missing_split_file(tmp_path, make, cls, split_file):
    make(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / split_file))):
        cls(tmp_path, "test")
    (tmp_path / split_file).write_text("\n\n")
    with pytest.raises(ValueError, match="lists no samples"):
        cls(tmp_path, "test")


def test_missing_annotation_or_listed_image_is_named(tmp_path):
    make_ade_tree(tmp_path)
    missing = tmp_path / "annotations" / "training" / "ADE_train_00000001.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        ADE20KDataset(tmp_path)
    voc = tmp_path / "voc"
    make_voc_tree(voc)
    with open(voc / "ImageSets" / "Segmentation" / "train.txt", "a") as f:
        f.write("2012_404404\n")
    with pytest.raises(FileNotFoundError, match="(?s)2 dataset file.*JPEGImages/2012_404404.jpg"):
        VOCDataset(voc)


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no '\*\.jpg' images"):
        FolderDataset(tmp_path, ["a"])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_image_raises_naming_the_file(tmp_path, damage):
    make_folder_tree(tmp_path)
    bad = tmp_path / "images" / "img1.jpg"
    if damage == "garbage":
        bad.write_bytes(b"this is not an image" * 10)
    elif damage == "truncated":
        save_image(bad, image_for(1, 64, 64), fmt="JPEG")
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        bad.write_bytes(b"")
    ds = FolderDataset(tmp_path, ["a", "b", "c"])
    ds[0]
    with pytest.raises(CorruptFileError, match=re.escape(str(bad))):
        ds[1]


def test_corrupt_annotation_raises_naming_the_file(tmp_path):
    make_folder_tree(tmp_path)
    bad = tmp_path / "annotations" / "img2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(CorruptFileError, match=re.escape(str(bad))):
        FolderDataset(tmp_path, ["a", "b", "c"])[2]
    save_image(bad, image_for(2))  # an RGB picture instead of class indices
    with pytest.raises(CorruptFileError, match="mode 'RGB'"):
        FolderDataset(tmp_path, ["a", "b", "c"])[2]


def test_skip_mode_warns_and_moves_on_deterministically(tmp_path):
    make_folder_tree(tmp_path, count=4)
    bad = tmp_path / "images" / "img1.jpg"
    bad.write_bytes(b"broken")
    ds = FolderDataset(
        tmp_path,
        ["a", "b", "c"],
        on_corrupt="skip",
        pipeline=train_pipeline(scale=(16, 12), crop_size=(8, 8)),
    )
    with pytest.warns(RuntimeWarning, match=re.escape(str(bad))) as record:
        first = ds[(1, 7)]
    assert "using sample 2" in str(record[0].message)
    assert first["index"] == 2 and first["filename"].endswith("img2.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        second = ds[(1, 7)]
    assert second["filename"] == first["filename"]
    assert (second["img"] == first["img"]).all()
    bad.rename(tmp_path / "images" / "img3.jpg.bak")
    (tmp_path / "images" / "img3.jpg").write_bytes(b"broken")
    (tmp_path / "images" / "img1.jpg").write_bytes(b"broken")
    with pytest.warns(RuntimeWarning, match="img3.jpg"):
        wrapped = ds[(3, 0)]  # 3 is broken: wraps around to 0
    assert wrapped["index"] == 0


def test_skip_mode_with_every_file_broken(tmp_path):
    make_folder_tree(tmp_path, count=2)
    for path in (tmp_path / "images").iterdir():
        path.write_bytes(b"broken")
    ds = FolderDataset(tmp_path, ["a", "b", "c"], on_corrupt="skip")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="all 2 samples"):
        ds[0]
    with pytest.raises(ValueError, match="on_corrupt"):
        FolderDataset(tmp_path, ["a"], on_corrupt="ignore")


def test_label_values_out_of_range_name_file_and_values(tmp_path):
    make_folder_tree(tmp_path)
    ann = tmp_path / "annotations" / "img0.png"
    label = np.zeros((H, W), np.uint8)
    label[0, :3] = (5, 9, 255)  # 255 is the ignore value: allowed
    save_label(ann, label)
    ds = FolderDataset(tmp_path, ["a", "b", "c"])
    with pytest.raises(ValueError, match=re.escape(str(ann)) + r".*values \{5, 9\}.*\[0, 3\)"):
        ds[0]
    ds[1]  # the other samples still load
    ade = tmp_path / "ade"
    make_ade_tree(ade)
    ann = ade / "annotations" / "training" / "ADE_train_00000000.png"
    label[0, :3] = (151, 200, 0)
    save_label(ann, label)
    with pytest.raises(ValueError, match=r"stored values \{151, 200\} \(\{150, 199\} after "):
        ADE20KDataset(ade)[0]


def test_image_and_annotation_size_mismatch_names_both(tmp_path):
    make_folder_tree(tmp_path)
    img = tmp_path / "images" / "img0.jpg"
    ann = tmp_path / "annotations" / "img0.png"
    save_label(ann, np.zeros((H + 1, W), np.uint8))
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, ["a", "b", "c"])[0]
    message = str(info.value)
    assert str(img) in message and str(ann) in message and "sizes differ" in message
    ds = FolderDataset(tmp_path, ["a", "b", "c"], on_corrupt="skip")
    with pytest.raises(ValueError, match="sizes differ"):  # not a decoding error: never skipped
        ds[0]


def test_cityscapes_converter_rejects_unknown_ids(tmp_path):
    src = save_label(tmp_path / "x_gtFine_labelIds.png", np.full((4, 4), 40, np.uint8))
    with pytest.raises(ValueError, match=re.escape(str(src)) + r".*\[40\]"):
        convert_file(src, tmp_path / "x_gtFine_labelTrainIds.png")
