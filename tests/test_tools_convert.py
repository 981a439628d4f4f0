"""tools/convert.py: a trained plain model becomes its warm-started CondNet
twin, which predicts the same before fine-tuning and fine-tunes with
tools/train.py --load-from; its argument errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from condnet.checkpoint_files import load_checkpoint
from condnet.demo import write_scenes
from condnet.engine.config import load_config
from condnet.models import build_model
from condnet.tools.convert import main as convert
from condnet.tools.train import main as train

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
model = dict(backbone="resnet18_v1c", head="sep_aspp", num_classes=8, channels=16,
             c1_channels=8, aux_channels=8, pretrained_backbone=False{classifier})
data = dict(dataset="scenes", root={root!r}, img_scale=(64, 48), ratio_range=(0.5, 2.0),
            crop_size=(48, 48), test_scale=(64, 48), samples_per_gpu=2, workers_per_gpu=0)
optimizer = dict(lr=0.01)
runner = dict(max_iters=2, log_interval=1, seed=0)
checkpoint = dict(interval=2)
evaluation = dict(interval=0)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(CondNet config, plain config, the plain model's trained checkpoint, tmp dir)."""
    tmp = tmp_path_factory.mktemp("convert")
    write_scenes(tmp / "scenes", seed=0, num_train=6, num_val=2, size=48)
    condnet = tmp / "condnet.py"
    condnet.write_text(CONFIG.format(root=str(tmp / "scenes"), classifier=""))
    plain = tmp / "plain.py"
    plain.write_text(CONFIG.format(root=str(tmp / "scenes"), classifier=', classifier="plain"'))
    assert train([str(plain), "--work-dir", str(tmp / "plain"), "--device", "cpu"]) in (0, None)
    return condnet, plain, tmp / "plain" / "latest.pth", tmp


def _model(config: Path, checkpoint: Path):
    model = build_model(load_config(config).model.config)
    model.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    return model.double().eval()


@pytest.mark.parametrize("which", ["condnet", "plain"])
@pytest.mark.parametrize("layout", [None, "per_class"])
def test_twin_predicts_what_the_plain_model_predicts(trained, which, layout, capsys):
    condnet, plain, checkpoint, tmp = trained
    out = tmp / f"twin_{which}_{layout}.pth"
    argv = [str(checkpoint), str(out), "--config", str(condnet if which == "condnet" else plain)]
    assert convert(argv + (["--layout", layout] if layout else [])) == 0
    assert "its logits equal the plain model's" in capsys.readouterr().out
    saved = load_checkpoint(out)
    assert saved["meta"]["layout"] == (layout or "grouped_conv")
    assert saved["meta"]["warm_start_max_logit_difference"] <= 1e-9
    overrides = [f"model.layout={layout!r}"] if layout else []
    twin = build_model(load_config(condnet, overrides).model.config)
    twin.load_state_dict(saved["state_dict"])  # strict
    x = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        want = _model(plain, checkpoint)(x)
        got = twin.double().eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * want.abs().max().item())


def test_the_twin_fine_tunes_with_load_from(trained):
    condnet, _, checkpoint, tmp = trained
    out = tmp / "twin.pth"
    assert convert([str(checkpoint), str(out), "--config", str(condnet)]) == 0
    work = tmp / "finetune"
    argv = [str(condnet), "--work-dir", str(work), "--load-from", str(out), "--device", "cpu"]
    assert train(argv) in (0, None)
    tuned = load_checkpoint(work / "latest.pth")
    assert tuned["meta"]["iteration"] == 2
    start = load_checkpoint(out)["state_dict"]
    key = "decode_head.classifier.filter_project.weight"
    assert not start[key].any() and tuned["state_dict"][key].any()  # the projection moved off 0


def test_the_shim_runs_as_a_command(trained, tmp_path):
    condnet, _, checkpoint, _ = trained
    out = tmp_path / "twin.pth"
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert.py"), str(checkpoint), str(out)]
        + ["--config", str(condnet)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file()


def test_a_zoo_model_by_name(tmp_path, capsys):
    plain = build_model("condnet_r50-d8_cityscapes-plain")
    path = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), path)  # a bare state dict works too
    out = tmp_path / "twin.pth"
    argv = [str(path), str(out), "--model", "condnet_r50-d8_cityscapes", "--shape", "32", "32"]
    assert convert(argv) == 0
    twin = build_model("condnet_r50-d8_cityscapes")
    twin.load_state_dict(load_checkpoint(out)["state_dict"])


def _run(argv, capsys):
    try:
        code = convert([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_errors_name_the_problem(trained, tmp_path, capsys):
    condnet, plain, checkpoint, tmp = trained
    # The output folder is checked before anything is read.
    code, err = _run(
        [tmp / "missing.pth", tmp_path / "no" / "twin.pth", "--config", condnet], capsys
    )
    assert code == 2 and "output" in err and "no" in err
    # A CondNet checkpoint is not a plain model.
    conditional = tmp_path / "conditional.pth"
    torch.save(
        {"state_dict": build_model(load_config(condnet).model.config).state_dict()}, conditional
    )
    code, err = _run([conditional, tmp_path / "a.pth", "--config", condnet], capsys)
    assert code == 1 and "the plain model" in err and "missing keys" in err
    # The checkpoint of another network.
    code, err = _run([checkpoint, tmp_path / "b.pth", "--model", "condnet_r50-d8_ade20k"], capsys)
    assert code == 1 and "the plain model" in err
    code, err = _run([checkpoint, tmp_path / "c.pth", "--model", "condnet_r99"], capsys)
    assert code == 2 and "unknown 'condnet_r99'" in err
    code, err = _run([checkpoint, tmp_path / "d.pth"], capsys)
    assert code == 2 and "--config" in err and "--model" in err
    assert not any(tmp_path.glob("*.pth")) or {p.name for p in tmp_path.glob("*.pth")} == {
        "conditional.pth"
    }
