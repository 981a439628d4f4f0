"""Each dataset class against a tiny tree in its real layout."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from condnet.data import (
    ADE20KDataset,
    CityscapesDataset,
    FolderDataset,
    PascalContext59Dataset,
    VOCDataset,
    label_colormap,
    label_ids_to_train_ids,
    train_pipeline,
)
from condnet.data.cityscapes_convert import convert_tree
from condnet.tools.convert_cityscapes import main as cityscapes_main
from tests.data_fixtures import (
    H,
    W,
    image_for,
    make_ade_tree,
    make_cityscapes_tree,
    make_context_tree,
    make_folder_tree,
    make_voc_tree,
    save_image,
    save_label,
)


def reduced(raw):
    """reduce_zero_label written out independently: 0 -> 255, k -> k - 1, 255 stays."""
    out = raw.astype(np.int64) - 1
    out[(raw == 0) | (raw == 255)] = 255
    return out


def test_ade_reads_split_with_reduce_zero_label(tmp_path):
    labels = make_ade_tree(tmp_path)
    ds = ADE20KDataset(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 150 and len(ds.palette) == 150
    sample = ds[0]
    stem = "ADE_train_00000000"
    assert sample["filename"].endswith(f"images/training/{stem}.jpg")
    assert sample["ann_filename"].endswith(f"annotations/training/{stem}.png")
    assert sample["ori_shape"] == (H, W) and sample["img_shape"] == (H, W)
    np.testing.assert_array_equal(sample["img"], image_for(100))
    raw = labels[("training", stem)]
    np.testing.assert_array_equal(sample["gt_semantic_seg"], reduced(raw))
    assert set(np.unique(sample["gt_semantic_seg"]).tolist()) == {0, 1, 74, 149, 255}
    # the split aliases and the raw values without reduction
    val = ADE20KDataset(
        tmp_path, "validation", reduce_zero_label=False, classes=[str(i) for i in range(151)]
    )
    assert len(val) == 2
    np.testing.assert_array_equal(
        val[1]["gt_semantic_seg"], labels[("validation", "ADE_valid_00000001")]
    )
    with pytest.raises(ValueError, match="split"):
        ADE20KDataset(tmp_path, "test")


def test_ade_with_training_pipeline_gives_tensors(tmp_path):
    make_ade_tree(tmp_path)
    ds = ADE20KDataset(tmp_path, "train", pipeline=train_pipeline(scale=(32, 8), crop_size=(8, 8)))
    sample = ds[(2, 1234)]
    assert sample["img"].dtype == torch.float32 and sample["img"].shape == (3, 8, 8)
    assert sample["gt_semantic_seg"].dtype == torch.int64 and sample["gt_semantic_seg"].shape == (
        8,
        8,
    )
    values = set(sample["gt_semantic_seg"].unique().tolist())
    assert values <= {0, 1, 74, 149, 255}
    again = ds[(2, 1234)]
    assert torch.equal(sample["img"], again["img"])


def test_pascal_context_follows_split_file_order(tmp_path):
    labels = make_context_tree(tmp_path)
    ds = PascalContext59Dataset(tmp_path, "train")
    assert ds.num_classes == 59 and ds.classes[0] == "aeroplane" and ds.classes[-1] == "wood"
    names = [p.stem for p, _ in ds.samples]
    assert names == ["2008_000002", "2008_000010", "2008_000005"]
    sample = ds[1]
    assert sample["ann_filename"].endswith("SegmentationClassContext/2008_000010.png")
    np.testing.assert_array_equal(sample["gt_semantic_seg"], reduced(labels["2008_000010"]))
    assert sample["gt_semantic_seg"].max() == 255 and 58 in sample["gt_semantic_seg"]
    assert len(PascalContext59Dataset(tmp_path, "val")) == 1


def test_cityscapes_pairs_images_and_train_ids_across_cities(tmp_path):
    label_ids = make_cityscapes_tree(tmp_path)
    ds = CityscapesDataset(tmp_path, "train")
    assert len(ds) == 4 and ds.num_classes == 19 and ds.classes[13] == "car"
    cities = [p.parent.name for p, _ in ds.samples]
    assert cities == ["aachen", "aachen", "bochum", "bochum"]
    sample = ds[2]
    stem = "bochum_000001_000000"
    assert sample["filename"].endswith(f"leftImg8bit/train/bochum/{stem}_leftImg8bit.png")
    assert sample["ann_filename"].endswith(f"gtFine/train/bochum/{stem}_gtFine_labelTrainIds.png")
    ids = label_ids[("train", stem)]
    expected = np.full(ids.shape, 255)
    for label_id, train_id in ((7, 0), (8, 1), (26, 13), (33, 18)):
        expected[ids == label_id] = train_id
    np.testing.assert_array_equal(sample["gt_semantic_seg"], expected)
    assert len(CityscapesDataset(tmp_path, "val")) == 2


def test_cityscapes_converter_table_and_files(tmp_path):
    ids = np.array([[0, 1, 6, 7, 8, 9], [11, 17, 19, 20, 23, 24], [26, 28, 31, 33, 255, 29]])
    np.testing.assert_array_equal(
        label_ids_to_train_ids(ids),
        [[255, 255, 255, 0, 1, 255], [2, 5, 6, 7, 10, 11], [13, 15, 16, 18, 255, 255]],
    )
    label_ids = make_cityscapes_tree(tmp_path, train_ids=False)
    with pytest.raises(FileNotFoundError, match="condnet.tools.convert_cityscapes"):
        CityscapesDataset(tmp_path, "train")
    assert convert_tree(tmp_path, ["train"]) == 4
    assert convert_tree(tmp_path, ["train"]) == 0  # kept unless overwrite
    assert cityscapes_main([str(tmp_path), "--splits", "val", "--nproc", "2"]) == 0
    ds = CityscapesDataset(tmp_path, "val")
    stem = "frankfurt_000000_000001"
    np.testing.assert_array_equal(
        ds[1]["gt_semantic_seg"], label_ids_to_train_ids(label_ids[("val", stem)])
    )


def test_cityscapes_converter_command_line(tmp_path):
    make_cityscapes_tree(tmp_path, train_ids=False)
    run = subprocess.run(
        [sys.executable, "-m", "condnet.tools.convert_cityscapes", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "wrote 6" in run.stdout and "Warning" not in run.stderr
    assert len(list(tmp_path.glob("gtFine/*/*/*_gtFine_labelTrainIds.png"))) == 6
    missing = subprocess.run(
        [sys.executable, "-m", "condnet.tools.convert_cityscapes", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1 and "gtFine" in missing.stderr


def test_voc_reads_palette_pngs_as_indices(tmp_path):
    labels = make_voc_tree(tmp_path)
    ds = VOCDataset(tmp_path, "train")
    assert ds.num_classes == 21 and ds.classes[0] == "background"
    assert ds.palette == label_colormap(21) and ds.palette[1] == (128, 0, 0)
    assert len(ds) == 2
    np.testing.assert_array_equal(ds[1]["gt_semantic_seg"], labels["2007_000039"])
    with pytest.raises(FileNotFoundError, match="condnet.tools.convert_voc_aug"):
        VOCDataset(tmp_path, "trainaug")


def test_voc_trainaug_prefers_voc_masks_and_falls_back_to_sbd(tmp_path):
    labels = make_voc_tree(tmp_path, aug=True)
    ds = VOCDataset(tmp_path, "trainaug")
    anns = {p.stem: a for p, a in ds.samples}
    assert sorted(anns) == ["2007_000032", "2007_000039", "2008_000123"]
    assert anns["2007_000032"].parent.name == "SegmentationClass"
    assert anns["2008_000123"].parent.name == "SegmentationClassAug"
    index = [p.stem for p, _ in ds.samples].index("2007_000032")
    np.testing.assert_array_equal(ds[index]["gt_semantic_seg"], labels["2007_000032"])


def test_voc_aug_converter_reads_sbd_mat_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    from condnet.tools.convert_voc_aug import main as voc_aug_main

    make_voc_tree(tmp_path / "VOC2012")
    cls_dir = tmp_path / "VOCaug" / "dataset" / "cls"
    cls_dir.mkdir(parents=True)
    masks = {}
    for i, name in enumerate(["2007_000032", "2007_000033", "2008_000123", "2008_000456"]):
        masks[name] = np.random.default_rng(i).integers(0, 21, (H, W)).astype(np.uint8)
        scipy_io.savemat(
            cls_dir / f"{name}.mat",
            {
                "GTcls": {
                    "Segmentation": masks[name],
                    "Boundaries": np.zeros(1),
                    "CategoriesPresent": np.unique(masks[name]),
                }
            },
        )
    (tmp_path / "VOCaug" / "dataset" / "train.txt").write_text("2008_000123\n2007_000032\n")
    (tmp_path / "VOCaug" / "dataset" / "val.txt").write_text("2008_000456\n2007_000033\n")
    image = image_for(0)
    for name in ("2008_000123", "2008_000456"):
        save_image(tmp_path / "VOC2012" / "JPEGImages" / f"{name}.jpg", image)
    assert voc_aug_main([str(tmp_path)]) == 0
    sets = tmp_path / "VOC2012" / "ImageSets" / "Segmentation"
    # VOC train + SBD - VOC val; and SBD - VOC train - VOC val
    assert sets.joinpath("trainaug.txt").read_text().split() == [
        "2007_000032",
        "2007_000039",
        "2008_000123",
        "2008_000456",
    ]
    assert sets.joinpath("aug.txt").read_text().split() == ["2008_000123", "2008_000456"]
    ds = VOCDataset(tmp_path / "VOC2012", "aug")
    np.testing.assert_array_equal(ds[1]["gt_semantic_seg"], masks["2008_000456"])


def test_folder_dataset_with_class_file_and_split(tmp_path):
    labels = make_folder_tree(tmp_path, split="train")
    (tmp_path / "classes.txt").write_text("sky\nroad\n\ncar\n")
    ds = FolderDataset(tmp_path, tmp_path / "classes.txt", split="train")
    assert ds.classes == ("sky", "road", "car") and ds.palette == label_colormap(3)
    assert [p.name for p, _ in ds.samples] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    np.testing.assert_array_equal(ds[2]["gt_semantic_seg"], labels["img2"])
    flat = tmp_path / "flat"
    make_folder_tree(flat)
    save_label(flat / "annotations" / "stray.png", np.zeros((H, W)))  # no image: not a sample
    ds = FolderDataset(
        flat, ["a", "b", "c"], palette=[(1, 2, 3), (4, 5, 6), (7, 8, 9)], reduce_zero_label=True
    )
    assert len(ds) == 3 and ds.palette[2] == (7, 8, 9)
    np.testing.assert_array_equal(ds[0]["gt_semantic_seg"], reduced(labels["img0"]))
    with pytest.raises(ValueError, match="palette has 2 colours"):
        FolderDataset(flat, ["a", "b", "c"], palette=[(1, 2, 3), (4, 5, 6)])
