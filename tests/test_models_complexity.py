"""Parameter and FLOP counts: hand-computed small cases, the condnet ops'
registered formulas (condnet.ops.flops) against the reference path, and the
command line (tools/complexity.py) given a model or backbone name."""

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import condnet.models
import condnet.ops
from condnet.models.backbones import build_backbone
from condnet.models.complexity import complexity_report, count_parameters, format_report
from condnet.nn import ConditionalClassifier
from condnet.ops import flops
from condnet.tools.complexity import main
from tests.opcases import needs_extension


@pytest.mark.parametrize("layout", ["grouped_conv", "per_class"])
def test_conditional_classifier_parameter_count(layout):
    C, K = 512, 150
    clf = ConditionalClassifier(C, K, layout=layout)
    guidance = K * C + K
    projection = (C * K + K) * C + (C * K + K)  # grouped conv: C inputs per output
    assert count_parameters(clf) == guidance + projection == 39_552_300
    clf.guidance_project.requires_grad_(False)
    assert count_parameters(clf, trainable_only=True) == projection


def _flops(clf, x, backward):
    with FlopCounterMode(display=False) as counter:
        out = clf(x)
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


@needs_extension
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("needs_input_grad", [False, True])
def test_condnet_ops_count_like_the_reference(backward, needs_input_grad):
    B, C, K, H, W = 2, 16, 5, 8, 8
    x = torch.randn(B, C, H, W, requires_grad=needs_input_grad)
    clf = ConditionalClassifier(C, K, dropout=0.0)
    clf.backend = "reference"
    reference = _flops(clf, x, backward)
    clf.backend = "extension"
    assert _flops(clf, x, backward) == reference
    bkcn = B * K * C * H * W
    forward = 4 * bkcn + 2 * bkcn + 2 * B * K * (C + 1) * C  # pool, classify, projection
    if not backward:
        assert reference == forward
    elif needs_input_grad:
        assert reference == 3 * forward  # every product has two gradients
    else:  # no dx: class_pool's backward loses two products, dynamic_classify's one
        assert reference == 3 * forward - 6 * bkcn


@needs_extension
def test_registered_formulas_are_used():
    # Done when condnet.ops loads; a second call is a no-op.
    assert flops.register_flop_formulas("condnet") == []
    assert flops.register_flop_formulas("aten_no_such_namespace") == []
    x = torch.randn(1, 4, 3, 5)
    w = torch.randn(6, 4)
    with FlopCounterMode(display=False) as counter:
        torch.ops.condnet.class_pool(x, w, None)
        torch.ops.condnet.dynamic_classify(x, torch.randn(1, 6, 4), None)
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert counts == {
        "condnet.class_pool": 4 * 6 * 4 * 15,
        "condnet.dynamic_classify": 2 * 6 * 4 * 15,
    }


def _small_net():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 4, 1, bias=False)),
    )


def test_report_rows_by_hand():
    net = _small_net().train()
    rows = complexity_report(net, (2, 3, 8, 8))
    assert net.training  # mode restored
    conv1 = 2 * (2 * 8 * 8 * 8) * 3 * 9  # 2 * output elements * MACs per output
    conv2 = 2 * (2 * 4 * 8 * 8) * 8
    table = {r.name: (r.depth, r.type, r.params, r.flops) for r in rows}
    assert table == {
        "": (0, "Sequential", 8 * 27 + 8 + 16 + 32, conv1 + conv2),
        "0": (1, "Conv2d", 8 * 27 + 8, conv1),
        "1": (1, "BatchNorm2d", 16, 0),
        "2": (1, "ReLU", 0, 0),
        "3": (1, "Sequential", 32, conv2),
        "3.0": (2, "Conv2d", 32, conv2),
    }
    text = format_report(rows, depth=1)
    assert "(total)" in text and "BatchNorm2d" in text and "  3 " in text
    assert "    0 " not in text  # depth 2 rows hidden
    assert "2 per multiply-accumulate" in text
    assert format_report(rows, depth=0).count("\n") == 2


def test_resnet_flops_are_its_convolutions():
    net = build_backbone("resnet50_v1c", device="meta")
    expected = []

    def hook(conv, inputs, output):
        macs = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        expected.append(2 * output.numel() * macs)

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    rows = complexity_report(net, (1, 3, 512, 512), device="meta")
    assert rows[0].name == "" and rows[0].flops == sum(expected)
    assert rows[0].params == count_parameters(net) == 23_527_264
    by_name = {r.name: r for r in rows}
    assert sum(by_name[f"layer{i}"].flops for i in range(1, 5)) + by_name["conv1"].flops == (
        rows[0].flops
    )


def test_swin_stages_are_credited_with_their_blocks():
    # The backbone calls each stage's blocks itself, never the stage's forward.
    tiny = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)
    net = build_backbone("swin_base_w12", device="meta", **tiny)
    rows = {r.name: r.flops for r in complexity_report(net, (1, 3, 64, 64), device="meta")}
    stages = [rows[f"layers.{i}"] for i in range(4)]
    assert all(f > 0 for f in stages)
    assert sum(stages) + rows["patch_embed"] == rows[""]
    # Window attention's two products: stage 1 has 16 windows of 16 tokens, C=16.
    assert (
        rows["layers.0.blocks.0"]
        - rows["layers.0.blocks.0.attn.qkv"]
        - rows["layers.0.blocks.0.attn.proj"]
        - rows["layers.0.blocks.0.mlp"]
        == 2 * (2 * 16 * 16 * 16) * 16
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"input_shape must be .* positive ints; got \(1, 0\)"):
        complexity_report(_small_net(), (1, 0))
    with pytest.raises(TypeError, match="model must be an nn.Module; got str"):
        complexity_report("resnet50_v1c")
    with pytest.raises(ValueError, match="depth must be a non-negative int; got -1"):
        format_report([], depth=-1)
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        count_parameters(None)


@pytest.mark.skipif(
    not (torch.cuda.is_available() or condnet.ops.triton.available("cpu")),
    reason="needs triton (a GPU, or the interpreter on the CPU)",
)
def test_triton_ops_get_the_formulas_when_they_load():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert condnet.ops.triton.available(device)  # loads the Triton ops
    # Registered by condnet.ops.triton as it loaded them: nothing is left to do.
    assert flops.register_flop_formulas("condnet_triton") == []
    x = torch.randn(1, 4, 3, 5, device=device)
    w = torch.randn(6, 4, device=device)
    with FlopCounterMode(display=False) as counter:
        torch.ops.condnet_triton.class_pool(x, w, None)
        torch.ops.condnet_triton.dynamic_classify(x, torch.randn(1, 6, 4, device=device), None)
    counts = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    assert counts == {
        "condnet_triton.class_pool": 4 * 6 * 4 * 15,
        "condnet_triton.dynamic_classify": 2 * 6 * 4 * 15,
    }


def test_cli_backbone(capsys):
    assert main(["resnet50_v1c", "--shape", "64", "64", "--depth", "1", "--device", "meta"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("resnet50_v1c at input 1x3x64x64\n")
    assert "layer4" in out and "Bottleneck" not in out and "23.527" in out


def test_cli_resolves_other_names_through_build_model(monkeypatch, capsys):
    monkeypatch.setattr(condnet.models, "build_model", lambda name: nn.Conv2d(3, 2, 1))
    main(["condnet_r50-d8_ade20k", "--shape", "4", "4", "--depth", "0", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "(total)" in out and "Conv2d" in out


def test_cli_errors(capsys):
    with pytest.raises(SystemExit):
        main(["resnet50_v1c", "--shape", "1,3", "x"])
    assert "--shape: expected a positive integer; got '1,3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["resnet50_v1c", "--device", "gpu0"])
    assert "--device: invalid choice: 'gpu0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "'nope' is not a config (condnet-configs lists them), a model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["resnet50_v1c", "--cfg-options", "model.channels=8"])
    assert "--cfg-options applies to a config file" in capsys.readouterr().err


def test_cli_reports_a_model_on_meta(capsys):
    main(["condnet_r50-d8_ade20k", "--device", "meta", "--depth", "1"])
    out = capsys.readouterr().out
    assert "decode_head" in out and "GFLOPs" in out
