"""LayoutDataset: dataset classes declare their folders and settings; the one constructor
keeps each class's documented arguments (what a config's dataset_kwargs are checked
against) and finds the samples from the declaration."""

import inspect

import numpy as np
import pytest

from condnet.data import (
    ADE20KDataset,
    CityscapesDataset,
    DatasetFolders,
    FolderDataset,
    LayoutDataset,
    PascalContext59Dataset,
    SceneDataset,
    VOCDataset,
)
from tests.data_fixtures import image_for, make_folder_tree, save_image, save_label

COMMON = ["pipeline", "reduce_zero_label", "on_corrupt", "ignore_index", "classes", "palette"]


@pytest.mark.parametrize(
    "cls, arguments, reduce",
    [
        (ADE20KDataset, ["root", "split", *COMMON, "img_suffix", "ann_suffix"], True),
        (PascalContext59Dataset, ["root", "split", *COMMON], True),
        (VOCDataset, ["root", "split", *COMMON], False),
        (
            CityscapesDataset,
            ["root", "split", "pipeline", "on_corrupt", "ignore_index", "classes", "palette"],
            None,
        ),
        (SceneDataset, ["root", "split", "pipeline", "on_corrupt"], None),
    ],
)
def test_each_class_takes_the_arguments_it_documents(cls, arguments, reduce):
    parameters = inspect.signature(cls).parameters
    assert sorted(parameters) == sorted(arguments)
    assert parameters["root"].default == cls.DEFAULT_ROOT
    assert parameters["split"].default == "train"
    assert all(parameters[n].kind is inspect.Parameter.KEYWORD_ONLY for n in arguments[2:])
    if reduce is not None:
        assert parameters["reduce_zero_label"].default is reduce


def test_the_folder_dataset_takes_root_and_classes_first():
    parameters = inspect.signature(FolderDataset).parameters
    assert list(parameters)[:3] == ["root", "classes", "split"]
    assert parameters["root"].default is inspect.Parameter.empty
    assert parameters["classes"].default is inspect.Parameter.empty
    assert parameters["split"].default is None
    assert parameters["img_suffix"].default == ".jpg"


def test_a_setting_the_dataset_fixes_is_refused(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'reduce_zero_label'"):
        CityscapesDataset(tmp_path, reduce_zero_label=True)
    with pytest.raises(TypeError, match="SceneDataset.*'ignore_index'"):
        SceneDataset(tmp_path, ignore_index=0)
    with pytest.raises(TypeError, match="'classes'"):
        FolderDataset(tmp_path)


class _Listed(LayoutDataset):
    """A dataset declared in a few lines: names listed per split, .png images."""

    CLASSES = ("a", "b", "c")
    LAYOUT = "  <root>/pictures/<name>.png\n  <root>/masks/<name>.png\n  <root>/lists/<split>.txt"
    FOLDERS = DatasetFolders(
        img_dir="pictures", ann_dir="masks", img_suffix=".png", split_file="lists/{split}.txt"
    )
    OPTIONS = ("pipeline", "on_corrupt")


def test_a_declared_dataset_reads_its_layout(tmp_path):
    for index, name in enumerate(["x", "y", "z"]):
        save_image(tmp_path / "pictures" / f"{name}.png", image_for(index))
        save_label(tmp_path / "masks" / f"{name}.png", np.full((12, 16), index, np.uint8))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("z\nx\n")
    ds = _Listed(tmp_path)
    assert [img.name for img, _ in ds.samples] == ["z.png", "x.png"]
    assert ds.classes == ("a", "b", "c") and ds.split == "train" and ds.root == tmp_path
    assert int(ds[0]["gt_semantic_seg"].max()) == 2
    assert list(inspect.signature(_Listed).parameters) == [
        "root",
        "split",
        "pipeline",
        "on_corrupt",
    ]
    with pytest.raises(FileNotFoundError, match="lists/val.txt"):
        _Listed(tmp_path, "val")


def test_the_split_folder_is_left_out_when_there_is_no_split(tmp_path):
    make_folder_tree(tmp_path)
    assert FolderDataset(tmp_path, ["a", "b", "c"]).samples[0][0].parent == tmp_path / "images"


def test_an_unknown_option_fails_when_the_class_is_declared():
    with pytest.raises(TypeError, match="OPTIONS: unknown \\['crop'\\]"):

        class _Bad(LayoutDataset):  # defining the class is what raises
            FOLDERS = DatasetFolders("images", "annotations")
            OPTIONS = ("pipeline", "crop")
