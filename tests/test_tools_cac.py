"""The command-line tools with a CAC model (a tiny DeepLabV3+ on ResNet-18 with
the context-aware classifier, on generated scenes): condnet-train trains and
logs CAC's losses, condnet-test evaluates its checkpoint and a released-format
(mmseg) one alike, condnet-export writes standard-operator files that compute
its logits, condnet-complexity counts its classifier's parameters and FLOPs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from condnet.checkpoint_files import load_checkpoint
from condnet.demo import write_scenes
from condnet.engine.builders import build_model
from condnet.engine.config import load_config
from condnet.engine.weights import load_weights
from condnet.models.complexity import complexity_report
from condnet.nn import ContextAwareClassifier
from condnet.ops import use_backend
from condnet.tools import complexity, convert, export
from condnet.tools import test as test_tool
from condnet.tools.train import main as train_main
from tests.test_models_released import released_checkpoint

# The torch.jit deprecation notice of the TorchScript export is known.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

CONFIG = """
model = dict(backbone="resnet18_v1c", head="sep_aspp", classifier="cac", num_classes=8,
             channels=16, c1_channels=8, aux_channels=8, pretrained_backbone=False)
data = dict(dataset="scenes", root={root!r}, img_scale=(64, 48), ratio_range=(0.5, 2.0),
            crop_size=(48, 48), test_scale=(64, 48), samples_per_gpu=2, workers_per_gpu=0)
optimizer = dict(lr=0.01)
runner = dict(max_iters=2, log_interval=1, seed=0)
checkpoint = dict(interval=2, max_keep=1)
evaluation = dict(interval=2, samples_per_gpu=1, workers_per_gpu=0)
"""
CAC_LOSSES = ("loss_seg", "loss_static", "loss_oracle", "loss_distill", "loss_aux", "loss")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, work dir) after condnet-train's two iterations."""
    root = tmp_path_factory.mktemp("cac_tools")
    write_scenes(root / "scenes", seed=0, num_train=4, num_val=2, size=48)
    config = root / "tiny_cac.py"
    config.write_text(CONFIG.format(root=str(root / "scenes")))
    work_dir = root / "work"
    assert train_main([str(config), "--work-dir", str(work_dir)]) == 0
    return config, work_dir


def test_train_logs_the_cac_losses_and_checkpoints(trained):
    config, work_dir = trained
    (log,) = work_dir.glob("*.log.json")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    train = [e for e in entries if e["mode"] == "train"]
    assert [e["iter"] for e in train] == [1, 2]
    for entry in train:
        assert all(np.isfinite(entry[key]) for key in CAC_LOSSES)
        total = sum(entry[key] for key in CAC_LOSSES[:-1])
        assert entry["loss"] == pytest.approx(total, rel=1e-5)
    (val,) = [e for e in entries if e["mode"] == "val"]
    assert 0.0 <= val["mIoU"] <= 1.0
    state = load_checkpoint(work_dir / "latest.pth")["state_dict"]
    assert "decode_head.classifier.apd_proj.0.weight" in state


def test_test_tool_takes_its_checkpoint_and_a_released_one(trained, tmp_path, capsys):
    config, work_dir = trained
    ours = tmp_path / "ours.json"
    assert test_tool.main([str(config), str(work_dir / "latest.pth"), "--out", str(ours)]) == 0
    # The same weights under the released CAC head's mmseg names.
    model = build_model(load_config(config))
    load_weights(model, work_dir / "latest.pth")
    released = tmp_path / "released.pth"
    torch.save(released_checkpoint(model), released)
    theirs = tmp_path / "released.json"
    assert test_tool.main([str(config), str(released), "--out", str(theirs)]) == 0
    a, b = (json.loads(p.read_text())["metrics"] for p in (ours, theirs))
    assert a == b and 0.0 <= a["mIoU"] <= 1.0
    assert "mIoU" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_writes_standard_operators_that_match(trained, fmt, tmp_path, capsys):
    config, work_dir = trained
    checkpoint = work_dir / "latest.pth"
    out = tmp_path / f"model.{fmt}"
    argv = [str(config), str(checkpoint), "--format", fmt, "--out", str(out), "--verify"]
    assert export.main(argv) == 0
    assert "max abs diff" in capsys.readouterr().out
    assert export.nonstandard_ops(out, fmt) == []
    img = torch.randn(2, 3, 24, 40)
    model = build_model(load_config(config))
    load_weights(model, checkpoint)
    with torch.no_grad(), use_backend("reference"):
        want = model.eval()(img).numpy()
    if fmt == "torchscript":
        with torch.no_grad():
            got = torch.jit.load(str(out))(img).numpy()
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"img": img.numpy()})
    assert got.shape == (2, 8, 24, 40)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_complexity_counts_the_context_aware_classifier(trained, tmp_path, capsys):
    config, _ = trained
    report = tmp_path / "complexity.json"
    assert complexity.main([str(config), "--shape", "64", "64", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "ContextAwareClassifier" in line)
    assert row.split()[0] == "classifier"
    params = float(row.split()[-2])
    clf = ContextAwareClassifier(16, 8)
    assert params == pytest.approx(sum(p.numel() for p in clf.parameters()) / 1e6, abs=1e-3)
    model = build_model(load_config(config))
    assert json.loads(report.read_text())["params"] == sum(p.numel() for p in model.parameters())
    # Its FLOPs, counted through the fused op's registered formula: static logits and
    # pooling 4BKCN, the generator 2BK(2C*Hd + Hd*C), the cosine logits 2BKCN, with
    # the 16x16 feature map of a 64x64 image (stride 4).
    rows = complexity_report(model, (1, 3, 64, 64))
    (clf_row,) = [r for r in rows if r.name == "decode_head.classifier"]
    B, K, C, N, Hd = 1, 8, 16, 16 * 16, 8
    assert clf_row.flops == 6 * B * K * C * N + 2 * B * K * (2 * C * Hd + Hd * C)
    # A zoo name: the full UPerNet Swin-T, built on the meta device.
    assert complexity.main(["cac_upernet_swin-t_ade20k", "--depth", "1"]) == 0
    assert "cac_upernet_swin-t_ade20k at input 1x3x512x512" in capsys.readouterr().out


def test_convert_refuses_a_cac_model_and_names_the_right_tool(tmp_path, capsys):
    argv = [str(tmp_path / "plain.pth"), str(tmp_path / "twin.pth")]
    with pytest.raises(SystemExit):
        convert.main([*argv, "--model", "cac_r50-d8_ade20k"])
    err = capsys.readouterr().err
    assert "a CAC model has no warm-started twin" in err and "condnet-convert-released" in err
    assert not (tmp_path / "twin.pth").exists()
