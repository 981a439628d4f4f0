"""Released-checkpoint import: fake mmseg checkpoints, written from a condnet
model by a mapping independent of condnet.models.released, must load back
tensor for tensor; the converted classifier must compute the released head's
cls_seg; the converter (tools/convert_released.py); errors."""

import os
import re

import pytest
import torch
import torch.nn.functional as F

from condnet.models import build_model, get_config, infer_model_name, list_models, load_released
from condnet.models.released import read_released
from condnet.tools import convert_released
from condnet.tools.convert_released import main as convert_main

SMALL = dict(channels=16, c1_channels=8, aux_channels=8, num_classes=5)
TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4)


# ---- condnet (timm) names -> mmseg names, written from the mmseg layouts ----

_STEM = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3", "conv1.4": "stem.4"}
_STEM |= {"conv1.6": "stem.6", "bn1": "stem.7"}


def resnet_to_mmseg(key, value):
    head, _, rest = key.partition(".")
    if head == "conv1" or head == "bn1":
        stem_key = key.rsplit(".", 1)[0]
        return _STEM[stem_key] + "." + key.rsplit(".", 1)[1], value
    return key, value


def merge_to_unfold(value):
    """timm's patch-merging channel order (dw, dh, c) -> mmseg's unfold order (c, dh, dw)."""
    c = value.shape[-1] // 4
    lead = value.shape[:-1]
    return (
        value.reshape(*lead, 2, 2, c).permute(*range(len(lead)), -1, -2, -3).reshape(*lead, 4 * c)
    )


def swin_to_mmseg(key, value):
    if m := re.match(r"out_norms\.(\d+)\.(.+)", key):
        return f"norm{m[1]}.{m[2]}", value
    if key.startswith("patch_embed."):  # its norm keeps its name
        return key.replace("patch_embed.proj.", "patch_embed.projection."), value
    if m := re.match(r"layers\.(\d+)\.downsample\.(.+)", key):
        return f"stages.{int(m[1]) - 1}.downsample.{m[2]}", merge_to_unfold(value)
    m = re.match(r"layers\.(\d+)\.(.+)", key)
    rest = m[2].replace(".attn.", ".attn.w_msa.")
    rest = rest.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
    return f"stages.{m[1]}.{rest}", value


def head_to_mmseg(key):
    key = key.replace("classifier.guidance_project.", "guidance_project.conv.")
    key = key.replace("classifier.filter_project.", "filter_project.conv.")
    # CAC's heads hold the classifier's parameters themselves (decode_head.proj.0.weight).
    key = key.replace("classifier.proj.", "proj.").replace("classifier.apd_proj.", "apd_proj.")
    return key.replace("classifier.conv_seg.", "conv_seg.")


def to_mmseg(model):
    """An mmseg EncoderDecoder state dict holding ``model``'s tensors."""
    swin = model.config.backbone.startswith("swin")
    out = {}
    for key, value in model.state_dict().items():
        part, _, rest = key.partition(".")
        if part == "backbone":
            rest, value = (swin_to_mmseg if swin else resnet_to_mmseg)(rest, value)
        else:
            rest = head_to_mmseg(rest)
        out[f"{part}.{rest}"] = value
    if swin:  # mmseg stores these buffers; they are rebuilt, not loaded
        for key in [k for k in out if k.endswith("relative_position_bias_table")]:
            out[key.replace("_bias_table", "_index")] = torch.zeros(4, 4, dtype=torch.long)
    return out


def released_checkpoint(model):
    meta = {"CLASSES": tuple(f"c{i}" for i in range(model.num_classes)), "config": "..."}
    return {"meta": meta, "state_dict": to_mmseg(model)}


# ---- the released head's classifier, transcribed from its cls_seg ----


def released_cls_seg(feat, guide_w, guide_b, filter_w, filter_b, K):
    B, C, H, W = feat.shape
    guide = F.conv2d(feat, guide_w, guide_b)
    mask = guide.softmax(dim=1).reshape(B, K, H * W)
    key = feat.reshape(B, C, H * W).permute(0, 2, 1)
    filters = (H * W) ** -1 * torch.matmul(mask, key)  # (B, K, C)
    params = F.conv2d(filters.reshape(B, K * C, 1, 1), filter_w, filter_b, groups=K)
    weights, biases = params.reshape(B, -1).split([C * K, K], dim=1)
    weights, biases = weights.reshape(B * K, C, 1, 1), biases.reshape(B * K)
    out = F.conv2d(feat.reshape(1, B * C, H, W), weights, biases, groups=B)
    return out.view(B, K, H, W), guide


@pytest.fixture(scope="module")
def small_r50():
    torch.manual_seed(0)
    return build_model("condnet_r50-d8_ade20k", **SMALL)


def fresh(name, seed, **overrides):
    torch.manual_seed(seed)
    return build_model(name, **overrides)


def assert_same_tensors(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resnet_checkpoint_arrives_tensor_for_tensor(small_r50, tmp_path):
    path = tmp_path / "released.pth"
    torch.save(released_checkpoint(small_r50), path)
    target = fresh("condnet_r50-d8_ade20k", 1, **SMALL)
    guide = "decode_head.classifier.guidance_project.weight"
    assert not torch.equal(target.state_dict()[guide], small_r50.state_dict()[guide])
    assert load_released(path, model=target) is target
    assert_same_tensors(target, small_r50)


def test_swin_checkpoint_arrives_tensor_for_tensor():
    kw = dict(SMALL, backbone_kwargs=TINY_SWIN)
    source = fresh("condnet_upernet_swin-b_ade20k", 0, **kw)
    # Break the symmetries of the freshly initialised norms so that a wrong
    # channel order in the patch merging cannot go unnoticed.
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    target = fresh("condnet_upernet_swin-b_ade20k", 1, **kw)
    checkpoint = released_checkpoint(source)
    assert "backbone.stages.0.downsample.reduction.weight" in checkpoint["state_dict"]
    load_released(checkpoint, model=target)
    assert_same_tensors(target, source)
    target.eval(), source.eval()
    img = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(target(img), source(img))


def test_converted_classifier_computes_the_released_cls_seg(small_r50):
    state = to_mmseg(small_r50)
    model = load_released(state, model=fresh("condnet_r50-d8_ade20k", 2, **SMALL))
    clf = model.decode_head.classifier.double().eval()
    K = SMALL["num_classes"]
    params = [
        state[f"decode_head.{name}.conv.{kind}"].double()
        for name in ("guidance_project", "filter_project")
        for kind in ("weight", "bias")
    ]
    feat = torch.randn(2, SMALL["channels"], 5, 7, dtype=torch.float64)
    logits, guide = clf(feat, return_guide=True)
    ref_logits, ref_guide = released_cls_seg(feat, *params, K)
    torch.testing.assert_close(guide, ref_guide, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-12)


def test_name_is_inferred_for_every_model():
    for name in list_models():
        with torch.device("meta"):
            model = build_model(name)
        state = to_mmseg(model)
        inferred = infer_model_name(state)
        # The plain twins of a CondNet and a CAC model of one network are one
        # configuration under two names: the first name stands for both.
        assert inferred == name or (
            name.startswith("cac_") and get_config(inferred) == get_config(name)
        )
        # DataParallel prefixes and an mmcv wrapper do not matter.
        wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
        assert infer_model_name(read_released(wrapped)) == inferred
    with torch.device("meta"):
        odd = build_model("condnet_r50-d8_ade20k", num_classes=21)
    with pytest.raises(ValueError, match="cannot tell the model.*num_classes=21.*pass name="):
        infer_model_name(to_mmseg(odd))


def test_cli_round_trip(tmp_path, capsys):
    name = "condnet_r50-d8_cityscapes"
    source = fresh(name, 0)
    src, out = tmp_path / "released.pth", tmp_path / "condnet.pth"
    torch.save(released_checkpoint(source), src)
    assert convert_main([str(src), str(out)]) == 0
    assert name in capsys.readouterr().out
    # Written through a temporary file that is renamed into place: none is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["condnet.pth", "released.pth"]
    target = fresh(name, 1)
    target.load_state_dict(torch.load(out, map_location="cpu", weights_only=True), strict=True)
    assert_same_tensors(target, source)
    # With an explicit name that does not fit: an error, and no output written.
    out2 = tmp_path / "other.pth"
    assert convert_main([str(src), str(out2), "--model", "condnet_r50-d8_ade20k"]) == 1
    assert "shape mismatches" in capsys.readouterr().err and not out2.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["condnet.pth", "released.pth"]


def test_missing_and_unexpected_keys_are_listed(small_r50):
    state = to_mmseg(small_r50)
    del state["decode_head.bottleneck.conv.weight"]
    state["decode_head.extra.weight"] = torch.zeros(1)
    target = fresh("condnet_r50-d8_ade20k", 1, **SMALL)
    with pytest.raises(ValueError) as err:
        load_released(state, model=target)
    msg = str(err.value)
    assert "missing keys (1): ['decode_head.bottleneck.conv.weight']" in msg
    assert "unexpected keys (1): ['decode_head.extra.weight']" in msg
    before = target.state_dict()["decode_head.bottleneck.conv.weight"].clone()
    load_released(state, model=target, strict=False)
    assert torch.equal(target.state_dict()["decode_head.bottleneck.conv.weight"], before)
    key = "decode_head.c1_bottleneck.conv.weight"
    assert torch.equal(target.state_dict()[key], small_r50.state_dict()[key])


def test_shape_and_layout_errors(small_r50):
    state = to_mmseg(small_r50)
    other_k = fresh("condnet_r50-d8_ade20k", 1, **dict(SMALL, num_classes=6))
    with pytest.raises(ValueError, match=r"shape mismatches \(\d+\): \['auxiliary_head"):
        load_released(state, model=other_k, strict=False)
    per_class = fresh("condnet_r50-d8_ade20k", 1, **dict(SMALL, layout="per_class"))
    with pytest.raises(ValueError, match="layout='per_class'; released checkpoints hold"):
        load_released(state, model=per_class)
    with pytest.raises(ValueError, match="give name or model, not both"):
        load_released(state, name="condnet_r50-d8_ade20k", model=per_class)
    with pytest.raises(ValueError, match="checkpoint values must be tensors"):
        load_released({"state_dict": {"backbone.stem.0.weight": [1.0]}}, model=per_class)


class Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to build it."""

    def __reduce__(self):
        return (print, ("this must not run",))


def test_pickled_objects_are_refused(tmp_path, small_r50, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": to_mmseg(small_r50), "meta": Payload()}, path)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        load_released(path, model=small_r50)
    assert convert_main([str(path), str(tmp_path / "out.pth")]) == 1
    assert "this must not run" not in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_released(tmp_path / "missing.pth", model=small_r50)


def truncate_half(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_a_truncated_file_is_called_truncated(tmp_path, small_r50):
    path = tmp_path / "released.pth"
    torch.save(released_checkpoint(small_r50), path)
    truncate_half(path)
    with pytest.raises(ValueError) as err:
        load_released(path, model=small_r50)
    assert "is truncated or not a checkpoint" in str(err.value)
    # The advice for files that hold objects would be wrong for a corrupt one.
    assert "weights_only=False" not in str(err.value)


def test_cli_checks_the_output_folder_before_converting(tmp_path, capsys, monkeypatch):
    src = tmp_path / "released.pth"
    torch.save(released_checkpoint(fresh("condnet_r50-d8_cityscapes", 0)), src)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the conversion ran before the output folder was checked")

    monkeypatch.setattr(convert_released, "read_released", must_not_run)
    out = tmp_path / "missing" / "condnet.pth"
    with pytest.raises(SystemExit) as exc:
        convert_main([str(src), str(out)])
    assert exc.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("condnet-convert-released: error: output: cannot write")
    assert "does not exist" in line and "Traceback" not in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["released.pth"]


def test_cli_writes_the_usual_file_mode(tmp_path):
    src, out = tmp_path / "released.pth", tmp_path / "condnet.pth"
    torch.save(released_checkpoint(fresh("condnet_r50-d8_cityscapes", 0)), src)
    old = os.umask(0o022)
    try:
        assert convert_main([str(src), str(out)]) == 0
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o644  # not tempfile.mkstemp's 0o600
