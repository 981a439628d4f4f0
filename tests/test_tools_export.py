"""tools/export.py on a tiny model: TorchScript and ONNX files of standard operators
that compute what the PyTorch model computes (in-process, CPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from condnet.engine.builders import build_model
from condnet.engine.config import load_config
from condnet.engine.weights import load_weights
from condnet.ops import use_backend
from condnet.tools import export

REPO = Path(__file__).resolve().parents[1]
# The tests load and trace TorchScript themselves; torch.jit's deprecation notice is known.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

TINY_CONFIG = """\
model = dict(backbone="resnet18_v1c", head="sep_aspp", num_classes=5, channels=16,
             c1_channels=8, aux_channels=8)
data = dict(dataset="scenes", crop_size=(32, 32))
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture
def checkpoint(config: Path, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(load_config(config))
    # Non-trivial BatchNorm statistics, so that eval mode differs from identity.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def reference_logits(config: Path, checkpoint: Path, img: torch.Tensor) -> np.ndarray:
    model = build_model(load_config(config))
    load_weights(model, checkpoint)
    with torch.no_grad(), use_backend("reference"):
        return model.eval()(img).numpy()


def test_torchscript_export_is_standard_and_matches(config, checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt"
    argv = [str(config), str(checkpoint), "--format", "torchscript", "--out", str(out)]
    assert export.main([*argv, "--verify"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp.*"))
    assert export.nonstandard_ops(out, "torchscript") == []
    module = torch.jit.load(str(out))
    kinds = {node.kind() for node in module.inlined_graph.nodes()}
    assert "aten::_convolution" in kinds and not any(k.startswith("condnet::") for k in kinds)
    # Traced on one 32x32 image, it runs other batch sizes and image sizes.
    img = torch.randn(2, 3, 24, 40)
    with torch.no_grad():
        got = module(img).numpy()
    assert got.shape == (2, 5, 24, 40)
    np.testing.assert_allclose(got, reference_logits(config, checkpoint, img), atol=1e-4)


def test_onnx_export_is_standard_and_matches(config, checkpoint, tmp_path, capsys):
    import onnx
    import onnxruntime

    out = tmp_path / "model.onnx"
    argv = [str(config), str(checkpoint), "--format", "onnx", "--out", str(out), "--verify"]
    assert export.main([*argv, "--opset", "17"]) == 0
    assert "max abs diff" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == 17
    assert {n.domain for n in proto.graph.node} <= {"", "ai.onnx"}
    assert "Conv" in {n.op_type for n in proto.graph.node}
    assert export.nonstandard_ops(out, "onnx") == []
    # Dynamic batch, height and width.
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    img = torch.randn(2, 3, 24, 40)
    (got,) = session.run(None, {"img": img.numpy()})
    assert got.shape == (2, 5, 24, 40)
    np.testing.assert_allclose(got, reference_logits(config, checkpoint, img), atol=1e-4)


def test_onnx_static_shape(config, checkpoint, tmp_path):
    import onnx

    out = tmp_path / "model.onnx"
    argv = [str(config), str(checkpoint), "--format", "onnx", "--out", str(out)]
    assert export.main([*argv, "--static-shape", "--shape", "32", "40", "--verify"]) == 0
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 32, 40]


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs onnxscript")
def test_onnx_dynamo_exporter(config, checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    argv = [str(config), str(checkpoint), "--format", "onnx", "--out", str(out), "--verify"]
    assert export.main([*argv, "--onnx-exporter", "dynamo"]) == 0
    assert export.nonstandard_ops(out, "onnx") == []


def test_nonstandard_ops_finds_custom_operators(tmp_path):
    # A stand-in for a condnet op that the reference backend would have replaced.
    @torch.library.custom_op("condnet_export_test::double", mutates_args=())
    def double(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    class Uses(torch.nn.Module):
        def forward(self, x):
            return double(x) + 1

    path = tmp_path / "custom.pt"
    torch.jit.trace(Uses(), torch.randn(2)).save(str(path))
    assert export.nonstandard_ops(path, "torchscript") == ["condnet_export_test::double"]


def test_failed_verification_writes_nothing(config, checkpoint, tmp_path, capsys, monkeypatch):
    real = export.run_exported
    monkeypatch.setattr(export, "run_exported", lambda *args: real(*args) + 1.0)
    out = tmp_path / "model.pt"
    argv = [str(config), str(checkpoint), "--format", "torchscript", "--out", str(out)]
    assert export.main([*argv, "--verify"]) == 1
    assert "error: the exported model differs from PyTorch" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob("*.tmp.*"))


def test_legacy_onnx_failure_is_one_error_line(tmp_path, capfd):
    # UPerNet's pyramid pooling behind Swin defeats the legacy exporter's shape
    # tracking; it logs its whole graph to the process's stdout when it fails.
    config = tmp_path / "swin.py"
    config.write_text(
        'model = dict(backbone="swin_base_w12", head="uper", num_classes=3, channels=8,\n'
        "             aux_channels=8, backbone_kwargs=dict(embed_dim=8, depths=(1, 1, 1, 1),\n"
        "             num_heads=(1, 1, 1, 1), window_size=4))\n"
        'data = dict(dataset="scenes", crop_size=(32, 32))\n'
    )
    checkpoint = tmp_path / "swin.pth"
    torch.save({"state_dict": build_model(load_config(config)).state_dict()}, checkpoint)
    out = tmp_path / "model.onnx"
    assert export.main([str(config), str(checkpoint), "--format", "onnx", "--out", str(out)]) == 1
    captured = capfd.readouterr()
    assert "graph(" not in captured.out and "graph(" not in captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: the legacy ONNX exporter failed:")
    assert "--onnx-exporter dynamo" in line
    assert not out.exists() and not list(tmp_path.glob("*.tmp.*"))


def test_mismatched_checkpoint_is_a_runtime_error(config, tmp_path, capsys):
    other = tmp_path / "other.pth"
    model = build_model(load_config(config, ["model.num_classes=7"]))
    torch.save({"state_dict": model.state_dict()}, other)
    out = tmp_path / "model.pt"
    assert export.main([str(config), str(other), "--format", "torchscript", "--out", str(out)])
    assert "error:" in capsys.readouterr().err
    assert not out.exists()


def test_help_runs_without_pythonpath():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "tools/export.py", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: tools/export.py" in done.stdout and "--verify" in done.stdout


BAD_ARGUMENTS = {
    "missing config": (["{tmp}/nope.py", "{ckpt}", "--format", "onnx"], "nope.py"),
    "missing checkpoint": (["{config}", "{tmp}/nope.pth", "--format", "onnx"], "nope.pth"),
    "bad shape": (["{config}", "{ckpt}", "--format", "onnx", "--shape", "9"], "--shape"),
    "unknown option": (
        ["{config}", "{ckpt}", "--format", "onnx", "--cfg-options", "model.bogus=1"],
        "model.bogus",
    ),
    "dynamo opset": (
        ["{config}", "{ckpt}", "--format", "onnx", "--onnx-exporter", "dynamo", "--opset", "17"],
        "--opset >= 18",
    ),
    "bad format": (["{config}", "{ckpt}", "--format", "tflite"], "--format"),
    "no format": (["{config}", "{ckpt}"], "--format"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_exit_with_an_error_line(case, config, checkpoint, tmp_path, capsys):
    argv, expected = BAD_ARGUMENTS[case]
    argv = [a.format(tmp=tmp_path, config=config, ckpt=checkpoint) for a in argv]
    if "--format" in argv:
        argv += ["--out", str(tmp_path / "model.onnx")]
    with pytest.raises(SystemExit) as exc:
        export.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and expected in err
    assert not (tmp_path / "model.onnx").exists()


def test_missing_out_directory_and_missing_package(
    config, checkpoint, tmp_path, capsys, monkeypatch
):
    base = [str(config), str(checkpoint), "--format", "onnx"]
    with pytest.raises(SystemExit) as exc:
        export.main([*base, "--out", str(tmp_path / "no" / "model.onnx")])
    assert exc.value.code == 2 and "error: --out" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(
        export.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    with pytest.raises(SystemExit) as exc:
        export.main([*base, "--out", str(tmp_path / "model.onnx"), "--verify"])
    assert exc.value.code == 2 and "onnxruntime; not installed" in capsys.readouterr().err
