"""condnet-demo (condnet.tools.demo over condnet.demo) end to end with tiny models: scenes,
both recipes, the tables, figures, the multi-seed report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from condnet.demo import run as demo_run
from condnet.demo import stats
from condnet.demo.stages import MODELS
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
    for name in MODELS.values():
        base = REPO / "condnet" / "configs" / "demo" / name
        (folder / name).write_text(TINY.format(base=str(base)))
    return folder


def _argv(data, work_dir, configs, *extra):
    return [
        "--data",
        str(data),
        "--work-dir",
        str(work_dir),
        "--configs",
        str(configs),
        "--stage-iters",
        "2",
        "--iters",
        "1",
        "--num-images",
        "2",
        "--threads",
        "1",
        *extra,
    ]


def test_demo_warm_start_trains_the_stage_and_both_arms(
    tiny_configs, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(demo_run, "SCENES", dict(num_train=6, num_val=3, size=48))
    work_dir, data = tmp_path / "work", tmp_path / "scenes"
    argv = _argv(data, work_dir, tiny_configs)
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "colour alone labels" in out
    assert "[1/3] shared plain stage: 2 iterations" in out and "ETA" in out
    assert "plain 1x1 classifier" in out and "CondNet (conditional)" in out
    assert "chance guidance accuracy: 12.5%" in out  # 8 scene classes
    assert "total time" in out and "1 threads" in out
    run = work_dir / "warm_start-seed0"
    results = json.loads((run / "results.json").read_text())
    assert results["recipe"] == "warm_start" and results["threads"] == 1
    assert (results["stage_iterations"], results["arm_iterations"], results["iterations"]) == (
        2,
        1,
        3,
    )
    for name in ("plain", "condnet", "condnet_start"):
        assert 0.0 <= results["metrics"][name]["mIoU"] <= 100.0
    assert 0.0 <= results["condnet_acc_guidance"] <= 100.0
    # The twin starts from the plain stage: the same predictions, so the same scores.
    start = results["metrics"]["condnet_start"]
    assert (run / "plain_stage" / "iter_2.pth").is_file()
    assert (run / "plain" / "iter_1.pth").is_file() and (run / "condnet" / "iter_1.pth").is_file()
    assert (run / "twin.pth").is_file()
    assert start["mIoU"] == pytest.approx(_stage_miou(run, data, tiny_configs), abs=1e-9)
    predictions = np.asarray(Image.open(run / "predictions.png"))
    assert predictions.shape[0] >= 2 * 48  # one row per image
    assert (run / "guidance.png").is_file()

    # A second run reuses the scenes and the finished trainings.
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "using the scene set" in out and "nothing to do" in out


def _stage_miou(run, data, configs) -> float:
    """The plain stage's mIoU, scored independently of the demo."""
    from condnet.engine.builders import build_dataset, build_model
    from condnet.engine.config import load_config
    from condnet.engine.weights import load_weights

    cfg = load_config(configs / "plain_r18-d8_scenes.py", [f"data.root={str(data)!r}"])
    model = build_model(cfg)
    load_weights(model, run / "plain_stage" / "latest.pth")
    return stats.score(model.eval(), build_dataset(cfg, "val"), "cpu")["mIoU"]


def test_demo_seeds_pairs_both_recipes(tiny_configs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_run, "SCENES", dict(num_train=6, num_val=3, size=48))
    work_dir, data, out = tmp_path / "work", tmp_path / "scenes", tmp_path / "seeds.json"
    argv = _argv(data, work_dir, tiny_configs, "--seeds", "0,1", "--json", str(out))
    assert demo.main(argv) == 0
    printed = capsys.readouterr().out
    assert "paired CondNet - plain mIoU over seeds 0,1" in printed
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert sorted((r["seed"], r["recipe"]) for r in runs) == [
        (0, "from_scratch"),
        (0, "warm_start"),
        (1, "from_scratch"),
        (1, "warm_start"),
    ]
    for r in runs:
        assert r["iterations"] == 3  # both recipes: the same total budget per model
        assert {"plain_miou", "condnet_miou", "condnet_acc_guidance", "wall_s"} <= set(r)
    scratch = [r for r in runs if r["recipe"] == "from_scratch"]
    diffs = [r["condnet_miou"] - r["plain_miou"] for r in scratch]
    summary = report["summary"]["from_scratch"]
    assert summary["seeds"] == 2
    assert summary["mean_difference"] == pytest.approx(sum(diffs) / 2)
    assert summary["std_difference"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2**0.5)
    assert report["threads"] == 1 and "global_accuracy" in report["colour_cue_check"]


def test_demo_writes_under_the_current_folder_by_default(tmp_path, monkeypatch, capsys):
    """Without --data and --work-dir the scenes and runs go under the folder the command
    runs from, and the configs are the package's own, wherever that is."""
    monkeypatch.setattr(demo_run, "SCENES", dict(num_train=2, num_val=1, size=32))
    work_dirs = []

    def recipe_not_trained(settings, recipe, seed, rate):
        work_dirs.append(settings.work_dir.resolve())
        assert not demo_run.missing_configs(settings.configs)
        return {"recipe": recipe, "seed": seed}, rate

    monkeypatch.setattr(demo_run, "run_recipe", recipe_not_trained)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert demo.main(["--threads", "1"]) == 0
    assert (elsewhere / "data" / "scenes" / "scenes.json").is_file()
    assert work_dirs == [elsewhere / "work_dirs" / "demo"]
    assert "wrote 2 training and 1 validation scenes to data/scenes" in capsys.readouterr().out


def test_summarize_by_recipe():
    runs = [
        dict(recipe="warm_start", plain_miou=20.0, condnet_miou=23.0),
        dict(recipe="warm_start", plain_miou=22.0, condnet_miou=21.0),
        dict(recipe="warm_start", plain_miou=21.0, condnet_miou=23.0),
    ]
    summary = stats.summarize(runs)
    assert set(summary) == {"warm_start"}
    s = summary["warm_start"]
    assert s["mean_difference"] == pytest.approx(4 / 3)
    assert s["std_difference"] == pytest.approx(
        ((5 / 3) ** 2 + (7 / 3) ** 2 + (2 / 3) ** 2) ** 0.5 / 2**0.5
    )
    assert (s["min_difference"], s["max_difference"], s["condnet_wins"]) == (-1.0, 3.0, 2)


def test_demo_bad_arguments(tmp_path, capsys):
    for argv, message in [
        (["--iters", "0"], "--iters must be >= 1"),
        (["--stage-iters", "0"], "--stage-iters must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--seeds", "0,x"], "comma-separated integers"),
        (["--seeds", "1,1"], "distinct seeds"),
        (["--seeds", "0,1", "--from-scratch"], "runs both recipes"),
        (["--configs", str(tmp_path)], "lacks"),
        (["--device", "tpu"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            demo.main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
