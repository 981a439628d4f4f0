"""tools/train.py and the Trainer: checkpoints, exact resumption, kills, torchrun."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from condnet.checkpoint_files import load_checkpoint
from condnet.demo import write_scenes
from condnet.tools.train import main

REPO = Path(__file__).resolve().parents[1]
LOSS_KEYS = ("loss", "loss_seg", "loss_guidance", "loss_aux", "acc_seg", "lr")

CONFIG = """
model = dict(backbone="resnet18_v1c", head="sep_aspp", num_classes=8, channels=16,
             c1_channels=8, aux_channels=8, pretrained_backbone=False)
data = dict(dataset="scenes", root={root!r}, img_scale=(64, 48), ratio_range=(0.5, 2.0),
            crop_size=(48, 48), test_scale=(64, 48), samples_per_gpu=2, workers_per_gpu=0)
optimizer = dict(lr=0.01)
runner = dict(max_iters=12, log_interval=1, seed=0)
checkpoint = dict(interval=2, max_keep=2)
evaluation = dict(interval=6, samples_per_gpu=1, workers_per_gpu=0)
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_scenes(root, seed=0, num_train=10, num_val=3, size=48)
    path = root / "tiny_scenes.py"
    path.write_text(CONFIG.format(root=str(root)))
    return path


def records(work_dir: Path, mode: str = "train") -> dict[int, dict]:
    """The last record of each iteration over all of the work dir's JSON logs."""
    out = {}
    for log in sorted(work_dir.glob("*.log.json")):
        lines = log.read_text().splitlines()
        for number, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines) - 1:  # a line being written, or cut by SIGKILL
                    continue
                raise
            if entry["mode"] == mode:
                out[entry["iter"]] = entry
    return out


def losses(work_dir: Path) -> dict[int, tuple]:
    return {i: tuple(r[k] for k in LOSS_KEYS) for i, r in records(work_dir).items()}


def checkpoint_files(work_dir: Path) -> list[str]:
    return sorted(p.name for p in work_dir.glob("*.pth"))


def test_train_checkpoints_evaluates_and_resumes_exactly(config, tmp_path, capsys):
    first = tmp_path / "first"
    assert main([str(config), "--work-dir", str(first), "--cfg-options", "runner.max_iters=6"]) == 0
    assert checkpoint_files(first) == ["best.pth", "iter_4.pth", "iter_6.pth", "latest.pth"]
    assert sorted(losses(first)) == [1, 2, 3, 4, 5, 6]
    (val,) = records(first, "val").values()
    assert val["iter"] == 6 and 0.0 <= val["mIoU"] <= 1.0
    best = load_checkpoint(first / "best.pth")
    assert best["meta"]["iteration"] == 6 and best["meta"]["best_metric"] == val["mIoU"]
    assert (first / "tiny_scenes.py").is_file()  # the config as run
    out = capsys.readouterr().out
    assert "iter 6/6" in out and "mIoU" in out

    # Resuming from iteration 4 reproduces iterations 5 and 6 bit for bit.
    second = tmp_path / "second"
    args = [str(config), "--work-dir", str(second), "--cfg-options", "runner.max_iters=6"]
    assert main([*args, "--resume-from", str(first / "iter_4.pth")]) == 0
    assert losses(second) == {i: losses(first)[i] for i in (5, 6)}
    state = load_checkpoint(second / "latest.pth")["state_dict"]
    reference = load_checkpoint(first / "latest.pth")["state_dict"]
    assert all(torch.equal(state[k], reference[k]) for k in reference)

    # --auto-resume picks up latest.pth and runs on to the new max_iters.
    third = [str(config), "--work-dir", str(first), "--cfg-options", "runner.max_iters=8"]
    assert main([*third, "--auto-resume", "--no-validate"]) == 0
    assert sorted(losses(first)) == list(range(1, 9))
    assert "resumed from" in capsys.readouterr().out


def test_load_from_starts_at_iteration_zero_with_the_weights(config, tmp_path):
    run = tmp_path / "run"
    opts = ["--cfg-options", "runner.max_iters=2", "--no-validate"]
    assert main([str(config), "--work-dir", str(run), *opts]) == 0
    finetune = tmp_path / "finetune"
    assert (
        main(
            [
                str(config),
                "--work-dir",
                str(finetune),
                "--load-from",
                str(run / "iter_2.pth"),
                *opts,
            ]
        )
        == 0
    )
    assert sorted(losses(finetune)) == [1, 2]
    assert losses(finetune)[1] != losses(run)[1]  # other weights, same data


def test_accumulation_channels_last_and_bf16(config, tmp_path):
    run = tmp_path / "run"
    opts = ["runner.max_iters=2", "runner.accumulate_steps=2", "runner.channels_last=True"]
    argv = [str(config), "--work-dir", str(run), "--amp", "bf16", "--no-validate"]
    assert main([*argv, "--cfg-options", *opts]) == 0
    meta = load_checkpoint(run / "latest.pth")["meta"]
    # 10 images in batches of 2: two iterations of two batches each used 4 of the 5.
    assert (meta["iteration"], meta["epoch"], meta["epoch_start"]) == (2, 0, 4)
    assert all(map(math.isfinite, losses(run)[2]))


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # tools/train.py needs none
    return env


def _launch(config: Path, work_dir: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        str(REPO / "tools" / "train.py"),
        str(config),
        "--work-dir",
        str(work_dir),
        "--device",
        "cpu",
        "--no-validate",
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        env=_env(),
        cwd=work_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_iteration(proc: subprocess.Popen, work_dir: Path, iteration: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}):\n{proc.stdout.read()}")
        if work_dir.is_dir() and max(records(work_dir), default=0) >= iteration:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"training did not reach iteration {iteration}")


def _assert_checkpoints_intact(work_dir: Path) -> None:
    for path in work_dir.glob("*.pth"):
        load_checkpoint(path)  # raises on a truncated file


def test_kills_and_resumes_reproduce_the_uninterrupted_losses(config, tmp_path):
    """SIGTERM saves and exits; SIGKILL at arbitrary points loses only the
    iterations since the last checkpoint; every .pth file stays loadable and the
    resumed losses equal those of an uninterrupted run with the same seed."""
    iters = ["--cfg-options", "runner.max_iters=16"]
    plain = tmp_path / "uninterrupted"
    proc = _launch(config, plain, *iters)
    assert proc.wait(timeout=300) == 0, proc.stdout.read()

    broken = tmp_path / "interrupted"
    proc = _launch(config, broken, *iters)
    _wait_for_iteration(proc, broken, 3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert "stopped by signal" in proc.stdout.read()
    stopped_at = load_checkpoint(broken / "latest.pth")["meta"]["iteration"]
    assert 3 <= stopped_at <= 8
    for kill_at in (stopped_at + 2, stopped_at + 5):
        proc = _launch(config, broken, "--auto-resume", *iters)
        _wait_for_iteration(proc, broken, kill_at)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        _assert_checkpoints_intact(broken)
    proc = _launch(config, broken, "--auto-resume", *iters)
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    _assert_checkpoints_intact(broken)
    assert not list(broken.glob("*.tmp.*"))
    assert losses(broken) == losses(plain)
    assert sorted(losses(plain)) == list(range(1, 17))
    final = load_checkpoint(broken / "latest.pth")["state_dict"]
    reference = load_checkpoint(plain / "latest.pth")["state_dict"]
    assert all(torch.equal(final[k], reference[k]) for k in reference)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_train_and_evaluate(config, tmp_path):
    work_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(REPO / "tools" / "train.py"),
        str(config),
        "--work-dir",
        str(work_dir),
        "--device",
        "cpu",
        "--cfg-options",
        "runner.max_iters=4",
        "evaluation.interval=4",
    ]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "x2" in result.stdout  # two processes
    assert sorted(losses(work_dir)) == [1, 2, 3, 4]
    (val,) = records(work_dir, "val").values()
    assert val["iter"] == 4 and 0.0 <= val["mIoU"] <= 1.0
    assert checkpoint_files(work_dir) == ["best.pth", "iter_2.pth", "iter_4.pth", "latest.pth"]
    assert not any(
        k.startswith("module.") for k in load_checkpoint(work_dir / "latest.pth")["state_dict"]
    )


def test_help_and_bad_arguments(config, tmp_path, capsys):
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train.py"), "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--auto-resume" in result.stdout
    cases = [
        ([str(tmp_path / "nope.py")], "nope.py"),
        ([str(config), "--cfg-options", "runner.max_iter=3"], "runner.max_iter"),
        ([str(config), "--resume-from", str(tmp_path / "x.pth")], "no such file"),
        ([str(config), "--resume-from", "a.pth", "--auto-resume"], "not allowed with"),
        ([str(config), "--amp", "fp8"], "invalid choice"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_missing_data_is_a_clear_error(config, tmp_path, capsys):
    code = main(
        [
            str(config),
            "--work-dir",
            str(tmp_path / "w"),
            "--cfg-options",
            f"data.root={str(tmp_path / 'none')!r}",
        ]
    )
    assert code == 1
    assert "error:" in capsys.readouterr().err


# The model's own test setting: 48x48 scenes in 32x32 windows every 24 pixels.
SLIDE = ["model.test_mode='slide'", "model.test_crop_size=(32, 32)", "model.test_stride=(24, 24)"]


def test_evaluation_mode_slide_takes_the_window_from_the_model(config, tmp_path):
    # evaluation.mode="slide" without a window used to reach predict() as is and fail at
    # the first evaluation; tools/test.py took the model's window. Both resolve alike now.
    from condnet.engine.config import load_config
    from condnet.engine.trainer import Trainer
    from condnet.models import InferenceConfig

    cfg = load_config(config, [*SLIDE, "evaluation.mode='slide'", "runner.max_iters=1"])
    trainer = Trainer(cfg, tmp_path / "run", stream=open(os.devnull, "w"))
    assert trainer.inference == InferenceConfig("slide", (32, 32), (24, 24))
    summary = trainer._evaluate()
    assert 0.0 <= summary["mIoU"] <= 1.0
    # A window that fits nowhere fails when the Trainer is built, not mid-training.
    bad = load_config(config, ["evaluation.mode='slide'", "evaluation.crop_size=(32, 32)"])
    with pytest.raises(ValueError, match="mode='slide' needs crop_size and stride"):
        Trainer(bad, tmp_path / "bad", stream=open(os.devnull, "w"))
