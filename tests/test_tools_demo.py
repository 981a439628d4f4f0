"""tools/demo.py end to end with tiny models: scenes, two trainings, the table, figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from condnet.tools import demo

REPO = Path(__file__).resolve().parents[1]
TINY = """_base_ = {base!r}
model = dict(channels=16, c1_channels=8, aux_channels=8)
data = dict(samples_per_gpu=2, crop_size=(48, 48))
"""


@pytest.fixture()
def tiny_configs(tmp_path) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir()
    for _, name in demo.MODELS:
        (folder / name).write_text(TINY.format(base=str(REPO / "configs" / "demo" / name)))
    return folder


def test_demo_trains_both_models_and_reports_them(tiny_configs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "SCENES", dict(num_train=6, num_val=3, size=48))
    work_dir, data = tmp_path / "work", tmp_path / "scenes"
    argv = [
        "--data",
        str(data),
        "--work-dir",
        str(work_dir),
        "--configs",
        str(tiny_configs),
        "--iters",
        "2",
        "--num-images",
        "2",
    ]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "plain 1x1 classifier" in out and "CondNet (conditional)" in out
    results = json.loads((work_dir / "results.json").read_text())
    for name in ("plain", "condnet"):
        assert 0.0 <= results[name]["mIoU"] <= 1.0
        assert (work_dir / name / "iter_2.pth").is_file()
    predictions = np.asarray(Image.open(work_dir / "predictions.png"))
    assert predictions.shape[0] >= 2 * 48  # one row per image
    assert (work_dir / "guidance.png").is_file()

    # A second run reuses the scenes and the finished trainings.
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "using the scene set" in out and "nothing to do" in out


def test_demo_bad_arguments(tmp_path, capsys):
    for argv, message in [
        (["--iters", "0"], "--iters must be >= 1"),
        (["--configs", str(tmp_path)], "lacks"),
        (["--device", "tpu"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            demo.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
