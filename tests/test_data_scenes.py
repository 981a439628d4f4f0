"""SceneDataset: the generated scene set read as a dataset (labels reduced, the image
suffix and the classes from scenes.json)."""

import json

import numpy as np
import pytest
from PIL import Image

from condnet.data import SCENE_CLASSES, SceneDataset
from condnet.demo import write_scenes


def test_scene_dataset_reads_the_set_with_reduce_zero_label(tmp_path):
    write_scenes(tmp_path, seed=0, num_train=3, num_val=2, size=32, image_format="png")
    ds = SceneDataset(tmp_path, "train")
    assert len(ds) == 3 and ds.num_classes == 8 and ds.classes == SCENE_CLASSES
    raw = np.array(Image.open(ds.samples[0][1]))
    sample = ds[0]
    expected = raw.astype(int) - 1
    expected[raw == 0] = 255
    np.testing.assert_array_equal(sample["gt_semantic_seg"], expected)
    assert len(SceneDataset(tmp_path, "val")) == 2


def test_scene_dataset_takes_the_suffix_and_checks_the_classes_of_scenes_json(tmp_path):
    write_scenes(tmp_path, seed=0, num_train=2, num_val=1, size=24, image_format="png")
    assert SceneDataset(tmp_path, "train").samples[0][0].suffix == ".png"
    meta = json.loads((tmp_path / "scenes.json").read_text())
    (tmp_path / "scenes.json").write_text(json.dumps(dict(meta, classes=["a", "b"])))
    with pytest.raises(ValueError, match="lists classes.*regenerate it"):
        SceneDataset(tmp_path, "train")
