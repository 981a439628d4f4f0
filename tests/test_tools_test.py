"""tools/test.py: arguments, errors, outputs, and a 2-process torchrun run (gloo, CPU)."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from condnet.data import SCENE_CLASSES, SCENE_PALETTE
from condnet.demo import write_scenes
from condnet.engine.builders import build_dataset
from condnet.engine.config import load_config
from condnet.engine.evaluate import evaluate
from condnet.models import InferenceConfig
from condnet.tools.test import main
from tests.test_engine_evaluate import TINY, tiny_model

REPO = Path(__file__).resolve().parents[1]
SHIM = REPO / "tools" / "test.py"

CONFIG = """\
model = dict(name="condnet_r50-d8_ade20k", **{tiny!r})
data = dict(dataset="scenes", root={root!r}, test_scale=(96, 32), workers_per_gpu=0)
evaluation = dict(aug_scales=(0.75, 1.0), flip=True, workers_per_gpu=0)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config path, checkpoint path, dir) for the tiny model on 4 generated scenes."""
    tmp = tmp_path_factory.mktemp("tools_test")
    write_scenes(tmp / "scenes", seed=0, num_train=0, num_val=4, size=48, image_format="png")
    config = tmp / "tiny_scenes.py"
    config.write_text(CONFIG.format(tiny=TINY, root=str(tmp / "scenes")))
    plain = tmp / "tiny_plain.py"
    plain.write_text(
        CONFIG.format(tiny=TINY, root=str(tmp / "scenes")).replace("ade20k", "ade20k-plain")
    )
    checkpoint = tmp / "tiny.pth"
    torch.save({"state_dict": tiny_model().state_dict()}, checkpoint)
    return config, checkpoint, plain, tmp


def expected_metrics(config, **settings):
    cfg = load_config(config)
    return evaluate(
        tiny_model(),
        build_dataset(cfg, "val"),
        num_classes=len(SCENE_CLASSES),
        class_names=SCENE_CLASSES,
        palette=SCENE_PALETTE,
        progress=False,
        inference=InferenceConfig(**settings),
    )


def check_json(path, want):
    record = json.loads(Path(path).read_text())
    for key in ("aAcc", "mIoU", "mAcc"):
        assert record["metrics"][key] == pytest.approx(want[key], abs=1e-12)
    assert [row["class"] for row in record["per_class"]] == list(SCENE_CLASSES)
    for row, iou in zip(record["per_class"], want["IoU"], strict=True):
        assert (row["IoU"] is None) if math.isnan(iou) else row["IoU"] == pytest.approx(iou)
    return record


def run_main(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for flag in ("--aug-test", "--mode", "--show-dir", "--guidance-dir", "--cfg-options"):
        assert flag in out


def test_shim_runs_without_pythonpath(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, str(SHIM), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: test.py ")  # an absolute path: its file name


def test_single_process_outputs(setup, capsys):
    config, checkpoint, _, tmp = setup
    out_file = tmp / "single" / "results.json"
    show_dir = tmp / "single" / "show"
    code, out, err = run_main(
        [config, checkpoint, "--out", out_file, "--show-dir", show_dir, "--device", "cpu"], capsys
    )
    assert code == 0, err
    want = expected_metrics(config)
    record = check_json(out_file, want)
    assert record["settings"] == {
        "mode": "whole",
        "crop_size": None,
        "stride": None,
        "scales": [1.0],
        "flip": False,
        "amp": None,
    }
    assert record["config"] == str(config) and record["checkpoint"] == str(checkpoint)
    assert "Summary:" in out and "stripes" in out
    assert f"{100 * want['mIoU']:.2f}" in out
    shown = sorted(show_dir.iterdir())
    assert [p.name for p in shown] == [f"scene_{i:06d}.png" for i in range(4)]
    assert np.asarray(Image.open(shown[0])).shape[:2] == (48, 61)  # original size


def test_aug_test_and_slide(setup, capsys):
    config, checkpoint, _, tmp = setup
    out_file = tmp / "aug.json"
    argv = [config, checkpoint, "--aug-test", "--mode", "slide", "--crop-size", "24", "24"]
    argv += ["--stride", "16", "16", "--out", out_file, "--guidance-dir", tmp / "guide"]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    assert "scales (0.75, 1.0), flip True" in out
    settings = dict(mode="slide", crop_size=(24, 24), stride=(16, 16), scales=(0.75, 1.0))
    record = check_json(out_file, expected_metrics(config, flip=True, **settings))
    assert record["settings"]["scales"] == [0.75, 1.0] and record["settings"]["flip"] is True
    assert len(list((tmp / "guide").glob("*.png"))) == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{tmp}/missing.py", "{ckpt}"], "missing.py"),
        (["{cfg}", "{tmp}/missing.pth"], "no such file"),
        (["{cfg}", "{ckpt}", "--cfg-options", "data.bogus=1"], "data.bogus"),
        (["{cfg}", "{ckpt}", "--mode", "sliding"], "--mode must be one of ('whole', 'slide')"),
        (["{cfg}", "{ckpt}", "--mode", "slide"], "--crop-size"),
        (["{cfg}", "{ckpt}", "--opacity", "2"], "--opacity"),
        (["{plain}", "{ckpt}", "--guidance-dir", "{tmp}/g"], "plain classifier"),
        (["{cfg}", "{ckpt}", "--launcher", "torchrun"], "RANK/WORLD_SIZE"),
    ],
)
def test_bad_arguments(setup, capsys, argv, message):
    config, checkpoint, plain, tmp = setup
    names = dict(cfg=config, ckpt=checkpoint, plain=plain, tmp=tmp)
    code, _, err = run_main([a.format(**names) for a in argv], capsys)
    assert code == 2
    assert "error:" in err and message in err


def test_runtime_errors(setup, capsys):
    config, checkpoint, _, tmp = setup
    argv = [config, checkpoint, "--cfg-options", f"data.root={tmp / 'nowhere'}"]
    code, _, err = run_main(argv, capsys)
    assert code == 1 and "error:" in err and "nowhere" in err
    bad = tmp / "bad.pth"
    torch.save({"state_dict": {"backbone.nonsense": torch.zeros(1)}}, bad)
    code, _, err = run_main([config, bad], capsys)
    assert code == 1 and "error:" in err and "nonsense" in err


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes_match_one(setup, tmp_path):
    config, checkpoint, _, _ = setup
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += [f"--master_port={free_port()}", str(SHIM), str(config), str(checkpoint)]
    cmd += ["--device", "cpu", "--out", str(tmp_path / "dist.json")]
    cmd += ["--show-dir", str(tmp_path / "show")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 processes" in proc.stdout
    assert proc.stdout.count("Summary:") == 1  # rank 0 reports
    check_json(tmp_path / "dist.json", expected_metrics(config))
    assert len(list((tmp_path / "show").glob("*.png"))) == 4  # each image drawn once


def test_evaluation_mode_slide_takes_the_window_from_the_model(setup, capsys):
    # As the Trainer's evaluation does (test_engine_train.py): the model's window.
    config, checkpoint, _, tmp = setup
    out_file = tmp / "slide.json"
    options = ["model.test_mode='slide'", "model.test_crop_size=(32, 32)"]
    options += ["model.test_stride=(24, 24)", "evaluation.mode='slide'"]
    argv = [config, checkpoint, "--out", out_file, "--cfg-options", *options]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    record = json.loads(Path(out_file).read_text())
    assert record["settings"]["mode"] == "slide"
    assert record["settings"]["crop_size"] == [32, 32] and record["settings"]["stride"] == [24, 24]
