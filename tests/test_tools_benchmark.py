"""tools/benchmark.py and tools/complexity.py on a tiny model (in-process, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from condnet.engine.builders import build_model
from condnet.engine.config import load_config
from condnet.models.complexity import complexity_report
from condnet.tools import benchmark, complexity

REPO = Path(__file__).resolve().parents[1]

# A ResNet-18 DeepLabV3+ CondNet a few channels wide, on 48x48 crops: builds and
# runs in well under a second.
TINY_CONFIG = """\
model = dict(backbone="resnet18_v1c", head="sep_aspp", num_classes=5, channels=16,
             c1_channels=8, aux_channels=8)
data = dict(dataset="scenes", crop_size=(48, 48))
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture
def checkpoint(config: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": build_model(load_config(config)).state_dict()}, path)
    return path


def test_benchmark_writes_timings_and_environment(config, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [str(config), "--device", "cpu", "--iters", "2", "--warmup", "1", "--json", str(out)]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["device_name"]
    assert result["torch_version"] == torch.__version__
    assert result["backend"] in ("reference", "extension")
    assert result["shape"] == [48, 48]  # the config's crop size
    assert result["batch_size"] == 1 and result["iters"] == 2 and result["warmup"] == 1
    assert len(result["times_s"]) == 2 and all(t > 0 for t in result["times_s"])
    t = result["time_per_batch_s"]
    assert min(result["times_s"]) <= t["q20"] <= t["median"] <= t["q80"] <= max(result["times_s"])
    assert result["images_per_s"] == pytest.approx(1 / t["median"])
    assert result["peak_memory_bytes"] is None
    printed = capsys.readouterr().out
    assert "images/s" in printed and "median" in printed and result["device_name"] in printed


def test_benchmark_predict_mode_with_checkpoint_and_backend(config, checkpoint, tmp_path):
    out = tmp_path / "bench.json"
    argv = [str(config), str(checkpoint), "--device", "cpu", "--mode", "predict"]
    argv += ["--backend", "reference", "--batch-size", "2", "--shape", "32", "40"]
    argv += ["--iters", "2", "--warmup", "0", "--channels-last", "--json", str(out)]
    assert benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "reference" and result["backend_requested"] == "reference"
    assert result["mode"] == "predict" and result["channels_last"] is True
    assert result["shape"] == [32, 40] and result["batch_size"] == 2
    assert result["checkpoint"] == str(checkpoint)
    assert result["images_per_s"] == pytest.approx(2 / result["time_per_batch_s"]["median"])


def test_benchmark_amp_bf16_runs(config, tmp_path):
    out = tmp_path / "bench.json"
    argv = [str(config), "--device", "cpu", "--amp", "bf16", "--iters", "1", "--warmup", "0"]
    assert benchmark.main([*argv, "--shape", "32", "32", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["amp"] == "bf16"


def test_complexity_counts_the_built_model(config, tmp_path, capsys):
    out = tmp_path / "complexity.json"
    assert complexity.main([str(config), "--shape", "40", "56", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    model = build_model(load_config(config))
    params = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for p in model.auxiliary_head.parameters())
    assert f"params: {params} " in printed
    assert f"params without the auxiliary head: {params - aux} " in printed
    result = json.loads(out.read_text())
    assert result["params"] == params and result["params_without_auxiliary"] == params - aux
    assert result["shape"] == [40, 56]
    # Counted on the meta device, the FLOPs are those of a real forward pass.
    assert result["flops"] == complexity_report(model, (1, 3, 40, 56))[0].flops > 0
    assert f"FLOPs: {result['flops']} " in printed
    assert "decode_head" in printed  # the per-module table, depth 2 by default


def test_complexity_default_shape_and_options(config, tmp_path):
    out = tmp_path / "complexity.json"
    argv = [str(config), "--cfg-options", "model.channels=8", "--depth", "0", "--json", str(out)]
    assert complexity.main(argv) == 0
    result = json.loads(out.read_text())
    model = build_model(load_config(config, ["model.channels=8"]))
    assert result["shape"] == [48, 48]
    assert result["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("tool", ["benchmark", "complexity"])
def test_help_runs_without_pythonpath(tool):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, f"tools/{tool}.py", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"usage: tools/{tool}.py" in done.stdout and "--cfg-options" in done.stdout


BAD_ARGUMENTS = {
    "missing config": (["{tmp}/nope.py"], "nope.py"),
    "bad shape": (["{config}", "--shape", "64", "x"], "--shape"),
    "zero shape": (["{config}", "--shape", "0", "64"], "--shape"),
    "unknown option": (["{config}", "--cfg-options", "model.bogus=1"], "model.bogus"),
    "unknown dataset": (["{config}", "--cfg-options", "data.dataset='mars'"], "data.dataset"),
    "no json directory": (["{config}", "--json", "{tmp}/no/out.json"], "--json"),
}


@pytest.mark.parametrize("tool", [benchmark, complexity], ids=["benchmark", "complexity"])
@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_exit_with_an_error_line(tool, case, config, tmp_path, capsys):
    argv, expected = BAD_ARGUMENTS[case]
    argv = [a.format(tmp=tmp_path, config=config) for a in argv]
    with pytest.raises(SystemExit) as exc:
        tool.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and expected in err


def test_benchmark_missing_checkpoint_is_an_argument_error(config, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        benchmark.main([str(config), str(tmp_path / "missing.pth"), "--device", "cpu"])
    assert exc.value.code == 2
    assert "error: checkpoint: no such file" in capsys.readouterr().err


def test_benchmark_mismatched_checkpoint_is_a_runtime_error(config, tmp_path, capsys):
    other = tmp_path / "other.pth"
    model = build_model(load_config(config, ["model.num_classes=7"]))
    torch.save({"state_dict": model.state_dict()}, other)
    argv = [str(config), str(other), "--device", "cpu", "--iters", "1", "--warmup", "0"]
    assert benchmark.main(argv) == 1
    assert "error:" in capsys.readouterr().err


def test_benchmark_unavailable_backend_is_a_runtime_error(config, capsys, monkeypatch):
    from condnet.ops import triton as triton_kernels

    # Whatever this machine has, Triton is unavailable on the CPU for this test.
    monkeypatch.setitem(triton_kernels._REASONS, "cpu", "triton is not available (test)")
    argv = [str(config), "--device", "cpu", "--backend", "triton", "--iters", "1"]
    assert benchmark.main(argv) == 1
    assert "error: triton is not available (test)" in capsys.readouterr().err


def test_benchmark_backend_wins_and_is_observed_not_predicted(config, tmp_path, monkeypatch):
    import inspect

    # The tool reports the backend the ops ran (observed), never a prediction
    # of the registry's choice.
    assert "resolve(" not in inspect.getsource(benchmark)
    monkeypatch.setenv("CONDNET_BACKEND", "extension")
    out = tmp_path / "bench.json"
    argv = [str(config), "--device", "cpu", "--backend", "reference", "--iters", "1"]
    assert benchmark.main([*argv, "--warmup", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "reference" and result["backend_requested"] == "reference"


def test_benchmark_backend_is_not_a_model_setting(config, tmp_path, capsys):
    # A config's model.backend used to win over --backend; no model takes one now.
    argv = [str(config), "--device", "cpu", "--backend", "reference", "--iters", "1"]
    with pytest.raises(SystemExit) as exc:
        benchmark.main([*argv, "--cfg-options", "model.backend='extension'"])
    assert exc.value.code == 2 and "model.backend" in capsys.readouterr().err


def test_benchmark_backend_of_a_plain_model_is_an_error(config, capsys):
    plain = ["--cfg-options", "model.classifier=plain"]
    argv = [str(config), "--device", "cpu", "--iters", "1", "--warmup", "0", *plain]
    assert benchmark.main([*argv, "--backend", "reference"]) == 1
    assert "no ConditionalClassifier" in capsys.readouterr().err
    assert benchmark.main(argv) == 0
    assert "condnet backend: none" in capsys.readouterr().out
