"""Backbones: structure of the dilated ResNet-V1c and of Swin-B and Swin-T, Swin's
attention in mmseg's pad-then-shift order, and checkpoint loading from mmseg,
official Swin and timm key layouts (the mmseg names are built here from
mmseg's module structure, independently of the converters)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condnet.models import backbone_weights, backbones
from condnet.models.backbones import build_backbone

TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4)


@pytest.fixture(scope="module")
def r50():
    return build_backbone("resnet50_v1c").eval()


@pytest.fixture(scope="module")
def r50_source():
    """A ResNet-50 with non-trivial values everywhere: the checkpoint source."""
    return _randomise(build_backbone("resnet50_v1c"), seed=1)


@pytest.fixture(scope="module")
def r101():
    # The big models on the meta device: their structure and shapes, in no time.
    return build_backbone("resnet101_v1c", device="meta").eval()


@pytest.fixture(scope="module")
def swin_b():
    return build_backbone("swin_base_w12", device="meta").eval()


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial values everywhere (BN statistics, LayerNorms, position
    tables), so that any mix-up of keys changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(noise.abs() + 0.5)
            elif t.dim() == 1 or "bias_table" in name:
                t.add_(0.3 * noise)
    return module.eval()


def _outputs(model, img):
    with torch.no_grad():
        return model(img)


def _assert_same_outputs(a, b, img):
    for x, y in zip(_outputs(a, img), _outputs(b, img), strict=True):
        torch.testing.assert_close(x, y)


# --- ResNet-V1c -------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "blocks"), [("r50", [3, 4, 6, 3]), ("r101", [3, 4, 23, 3])])
def test_resnet_output_stride_8(request, fixture, blocks):
    net = request.getfixturevalue(fixture)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == blocks
    assert [net.conv1[i].out_channels for i in (0, 3, 6)] == [32, 32, 64]  # deep stem
    l2, l3, l4 = net.layer2, net.layer3, net.layer4
    assert l2[0].conv2.stride == (2, 2) and l2[0].downsample[0].stride == (2, 2)
    assert l3[0].conv2.stride == l3[0].downsample[0].stride == (1, 1)
    assert l4[0].conv2.stride == l4[0].downsample[0].stride == (1, 1)
    # mmseg's contract_dilation: a dilated stage's first block at the previous dilation.
    assert l3[0].conv2.dilation == (1, 1) and l3[0].conv2.padding == (1, 1)
    assert all(b.conv2.dilation == b.conv2.padding == (2, 2) for b in l3[1:])
    assert l4[0].conv2.dilation == (2, 2)
    assert all(b.conv2.dilation == b.conv2.padding == (4, 4) for b in l4[1:])
    assert net.out_channels == [256, 512, 1024, 2048] and net.strides == [4, 8, 8, 8]
    device = next(net.parameters()).device
    feats = _outputs(net, torch.randn(1, 3, 32, 48, device=device))
    assert [tuple(f.shape) for f in feats] == [
        (1, c, 32 // s, 48 // s) for c, s in zip(net.out_channels, net.strides, strict=True)
    ]


def test_resnet_parameter_counts(r50, r101):
    assert sum(p.numel() for p in r50.parameters()) == 23_527_264
    assert sum(p.numel() for p in r101.parameters()) == 42_519_392
    assert not any(k.startswith("fc.") for k in r50.state_dict())


def _timm_to_mmseg_resnet(state):
    stem = {"conv1.0": "stem.0", "conv1.1": "stem.1", "conv1.3": "stem.3"}
    stem |= {"conv1.4": "stem.4", "conv1.6": "stem.6", "bn1": "stem.7"}
    out = {}
    for key, value in state.items():
        head, _, rest = key.rpartition(".")
        for timm_name, mmseg_name in stem.items():
            if head == timm_name:
                head = mmseg_name
        out[f"{head}.{rest}"] = value
    return out


def test_resnet_loads_mmseg_imagenet_checkpoint(r50, r50_source, tmp_path):
    source = r50_source
    state = _timm_to_mmseg_resnet(source.state_dict())
    assert "stem.7.running_var" in state and "layer1.0.downsample.1.weight" in state
    state |= {"fc.weight": torch.randn(1000, 2048), "fc.bias": torch.randn(1000)}
    path = tmp_path / "resnet50_v1c.pth"
    torch.save({"meta": {"epoch": 100}, "state_dict": state}, path)
    loaded = build_backbone("resnet50_v1c", pretrained=path).eval()
    _assert_same_outputs(loaded, source, torch.randn(1, 3, 32, 40))
    with pytest.raises(AssertionError):  # the check can fail: a fresh model differs
        _assert_same_outputs(r50, source, torch.randn(1, 3, 32, 40))


def test_resnet_loads_segmentor_backbone_and_timm_state_dicts(r50_source):
    source = r50_source
    img = torch.randn(1, 3, 32, 32)
    mmseg = {f"backbone.{k}": v for k, v in _timm_to_mmseg_resnet(source.state_dict()).items()}
    segmentor = {"state_dict": {**mmseg, "decode_head.conv_seg.weight": torch.randn(19, 512)}}
    _assert_same_outputs(build_backbone("resnet50_v1c", pretrained=segmentor).eval(), source, img)
    timm_state = {**source.state_dict(), "fc.weight": torch.randn(1000, 2048)}
    _assert_same_outputs(build_backbone("resnet50_v1c", pretrained=timm_state).eval(), source, img)


def test_resnet_missing_unexpected_and_mismatched_keys_are_listed(r50):
    state = _timm_to_mmseg_resnet(r50.state_dict())
    del state["layer2.1.bn2.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    state["stem.0.weight"] = torch.zeros(32, 3, 5, 5)
    with pytest.raises(ValueError) as err:
        build_backbone("resnet50_v1c", pretrained=state)
    message = str(err.value)
    assert "missing keys (1): ['layer2.1.bn2.weight']" in message
    assert "unexpected keys (1): ['layer5.0.conv1.weight']" in message
    assert "conv1.0.weight: checkpoint (32, 3, 5, 5) vs model (32, 3, 3, 3)" in message


def test_resnet_checkpoint_without_batch_counters_loads(r50):
    state = {k: v for k, v in r50.state_dict().items() if "num_batches_tracked" not in k}
    build_backbone("resnet50_v1c", pretrained=state)


# --- Swin -------------------------------------------------------------------


def test_swin_b_structure(swin_b):
    assert swin_b.out_channels == [128, 256, 512, 1024] and swin_b.strides == [4, 8, 16, 32]
    blocks = [b for stage in swin_b.layers for b in stage.blocks]
    assert [len(s.blocks) for s in swin_b.layers] == [2, 2, 18, 2]
    assert all(b.window_size == (12, 12) for b in blocks)
    assert [b.shift_size for b in blocks] == [(0, 0), (6, 6)] * 12
    # Stochastic depth 0.3, rising linearly over the 24 blocks (released config).
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 24))
    assert sum(p.numel() for p in swin_b.parameters()) == 86_880_376


def test_swin_b_feature_maps(swin_b):
    feats = _outputs(swin_b, torch.randn(1, 3, 32, 64, device="meta"))
    assert [tuple(f.shape) for f in feats] == [(1, 128, 8, 16), (1, 256, 4, 8)] + [
        (1, 512, 2, 4),
        (1, 1024, 1, 2),
    ]
    assert all(f.is_contiguous() for f in feats)


def test_swin_any_input_size():
    net = build_backbone("swin_base_w12", **TINY_SWIN).eval()
    feats = _outputs(net, torch.randn(2, 3, 37, 50))  # padded to 40x52 for the patches
    assert [tuple(f.shape[2:]) for f in feats] == [(10, 13), (5, 7), (3, 4), (2, 2)]


def _timm_stage_forward(net, img):
    """timm's own stage forward (shift, then pad) with our output norms."""
    x, feats = net.patch_embed(img), []
    for stage, norm in zip(net.layers, net.out_norms, strict=True):
        x = stage(x)
        feats.append(norm(x).permute(0, 3, 1, 2))
    return feats


def test_swin_matches_timm_when_sizes_are_window_multiples():
    net = _randomise(build_backbone("swin_base_w12", **TINY_SWIN), seed=3)
    img = torch.randn(2, 3, 128, 128)  # stages 32, 16, 8, 4: multiples of window 4
    for ours, timms in zip(_outputs(net, img), _timm_stage_forward(net, img), strict=True):
        torch.testing.assert_close(ours, timms)


def _mmseg_relative_position_index(ws):
    """mmseg WindowMSA's construction (double_step_seq, then flip)."""
    seq = (torch.arange(0, (2 * ws - 1) * ws, 2 * ws - 1)[:, None] + torch.arange(ws)).reshape(
        1, -1
    )
    return (seq + seq.T).flip(1)


@pytest.mark.parametrize("ws", [4, 7, 12])
def test_relative_position_index_matches_mmseg(ws):
    net = build_backbone("swin_base_w12", **{**TINY_SWIN, "window_size": ws})
    index = net.layers[0].blocks[0].attn.relative_position_index
    assert torch.equal(index, _mmseg_relative_position_index(ws))


def _mmseg_window_attention(block, x):
    """mmseg's ShiftWindowMSA written window by window: pad, shift, mask the
    regions that the shift brought together, attend, unshift, crop."""
    ws, shift = block.window_size[0], block.shift_size[0]
    B, H, W, C = x.shape
    x = F.pad(x, (0, 0, 0, (-W) % ws, 0, (-H) % ws))
    Hp, Wp = x.shape[1:3]
    x = torch.roll(x, (-shift, -shift), (1, 2)) if shift else x

    def region(i, size):
        return 0 if i < size - ws else 1 if i < size - shift else 2

    label = torch.tensor(
        [[region(i, Hp) * 3 + region(j, Wp) for j in range(Wp)] for i in range(Hp)]
    )
    attn = block.attn
    index = _mmseg_relative_position_index(ws).reshape(-1)
    bias = attn.relative_position_bias_table[index].reshape(ws * ws, ws * ws, -1).permute(2, 0, 1)
    heads = attn.num_heads
    out = torch.empty_like(x)
    for i in range(0, Hp, ws):
        for j in range(0, Wp, ws):
            tokens = x[:, i : i + ws, j : j + ws].reshape(B, ws * ws, C)
            q, k, v = attn.qkv(tokens).reshape(B, ws * ws, 3, heads, -1).permute(2, 0, 3, 1, 4)
            scores = q @ k.transpose(-2, -1) / math.sqrt(C // heads) + bias
            if shift:
                lab = label[i : i + ws, j : j + ws].reshape(-1)
                scores = scores - 100.0 * (lab[:, None] != lab[None, :])
            y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, ws * ws, C)
            out[:, i : i + ws, j : j + ws] = attn.proj(y).reshape(B, ws, ws, C)
    out = torch.roll(out, (shift, shift), (1, 2)) if shift else out
    return out[:, :H, :W]


def _mmseg_forward(net, img):
    x = net.patch_embed(F.pad(img, (0, (-img.shape[3]) % 4, 0, (-img.shape[2]) % 4)))
    feats = []
    for stage, norm in zip(net.layers, net.out_norms, strict=True):
        x = stage.downsample(x)
        for block in stage.blocks:
            x = x + _mmseg_window_attention(block, block.norm1(x))
            x = x + block.mlp(block.norm2(x))
        feats.append(norm(x).permute(0, 3, 1, 2))
    return feats


def test_swin_follows_mmseg_when_sizes_are_not_window_multiples():
    net = _randomise(build_backbone("swin_base_w12", **TINY_SWIN), seed=4)
    # Stages 21x17, 11x9, 6x5, 3x3 with window 4, shift 2. (Where the padding
    # equals the shift the two orders agree, so 22x18 would not tell them apart.)
    img = torch.randn(1, 3, 84, 68)
    with torch.no_grad():
        expected = _mmseg_forward(net, img)
        timms = _timm_stage_forward(net, img)
    for ours, ref in zip(_outputs(net, img), expected, strict=True):
        torch.testing.assert_close(ours, ref)
    # ...which is not what timm's shift-then-pad order gives.
    assert not torch.allclose(timms[0], expected[0], atol=1e-3)


def _timm_to_mmseg_unfold(value):
    """timm's patch-merging channel order (dw, dh, c) -> nn.Unfold's (c, dh, dw)."""
    lead, c = value.shape[:-1], value.shape[-1] // 4
    return value.reshape(*lead, 2, 2, c).permute(*range(len(lead)), -1, -2, -3).reshape(value.shape)


def _timm_to_mmseg_swin(state):
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "out_norms":
            key = f"norm{parts[1]}.{parts[2]}"
        elif parts[0] == "patch_embed":
            key = key.replace("patch_embed.proj.", "patch_embed.projection.")
        elif parts[2] == "downsample":  # layers.i.downsample -> end of stage i-1
            key = ".".join(["stages", str(int(parts[1]) - 1), *parts[2:]])
            value = _timm_to_mmseg_unfold(value)
        else:
            key = ".".join(["stages", *parts[1:]])
            key = key.replace(".attn.", ".attn.w_msa.").replace(".mlp.fc1.", ".ffn.layers.0.0.")
            key = key.replace(".mlp.fc2.", ".ffn.layers.1.")
        out[key] = value
    return out


def test_mmseg_patch_merging_order():
    """The test's mmseg names really are in nn.Unfold order: an mmseg-style
    patch merging with them equals timm's."""
    net = _randomise(build_backbone("swin_base_w12", **TINY_SWIN), seed=5)
    merge = net.layers[1].downsample
    mm = _timm_to_mmseg_swin({f"layers.1.downsample.{k}": v for k, v in merge.state_dict().items()})
    x = torch.randn(2, 6, 10, 16)  # (B, H, W, C) with C = 16
    cols = F.unfold(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).transpose(1, 2)
    cols = F.layer_norm(
        cols, (64,), mm["stages.0.downsample.norm.weight"], mm["stages.0.downsample.norm.bias"]
    )
    expected = (cols @ mm["stages.0.downsample.reduction.weight"].T).reshape(2, 3, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(merge(x), expected)


def test_swin_loads_mmseg_segmentor_backbone(tmp_path):
    source = _randomise(build_backbone("swin_base_w12", **TINY_SWIN), seed=6)
    state = _timm_to_mmseg_swin(source.state_dict())
    assert "stages.2.blocks.1.attn.w_msa.qkv.weight" in state and "norm3.bias" in state
    assert "stages.0.downsample.reduction.weight" in state
    for i in range(4):  # mmseg keeps this buffer in its checkpoints
        state[f"stages.{i}.blocks.0.attn.w_msa.relative_position_index"] = torch.zeros(16, 16)
    path = tmp_path / "condnet_swin.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}}, path)
    loaded = build_backbone("swin_base_w12", pretrained=path, **TINY_SWIN).eval()
    _assert_same_outputs(loaded, source, torch.randn(1, 3, 56, 40))


def test_swin_loads_official_imagenet_checkpoint():
    source = _randomise(build_backbone("swin_base_w12", **TINY_SWIN), seed=7)
    fresh = build_backbone("swin_base_w12", **TINY_SWIN)
    with torch.no_grad():  # ImageNet checkpoints leave these at their init
        source.out_norms.load_state_dict(fresh.out_norms.state_dict())
    state = {}
    for key, value in source.state_dict().items():
        if key.startswith("out_norms."):
            continue
        parts = key.split(".")
        if parts[2:3] == ["downsample"]:  # official: at the end of the previous stage
            key = ".".join(["layers", str(int(parts[1]) - 1), *parts[2:]])
        state[key] = value
    state |= {"head.weight": torch.randn(1000, 128), "norm.weight": torch.ones(128)}
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 16, 16)
    assert backbone_weights.checkpoint_format(state, "swin") == "official"
    loaded = build_backbone("swin_base_w12", pretrained={"model": state}, **TINY_SWIN)
    _assert_same_outputs(loaded.eval(), source, torch.randn(1, 3, 32, 32))


def test_swin_partial_output_norms_are_missing_keys():
    state = build_backbone("swin_base_w12", **TINY_SWIN).state_dict()
    del state["out_norms.2.weight"], state["layers.3.blocks.1.mlp.fc2.bias"]
    with pytest.raises(
        ValueError, match=r"missing keys \(2\): \['layers.3.blocks.1.mlp.fc2.bias', 'out_"
    ):
        build_backbone("swin_base_w12", pretrained=state, **TINY_SWIN)


def test_swin_t_structure():
    swin_t = build_backbone("swin_tiny_w7", device="meta").eval()
    assert swin_t.variant == "swin_tiny_patch4_window7_224"
    assert swin_t.out_channels == [96, 192, 384, 768] and swin_t.strides == [4, 8, 16, 32]
    blocks = [b for stage in swin_t.layers for b in stage.blocks]
    assert [len(s.blocks) for s in swin_t.layers] == [2, 2, 6, 2]
    assert [b.attn.num_heads for b in blocks] == [3, 3, 6, 6] + [12] * 6 + [24, 24]
    assert all(b.window_size == (7, 7) for b in blocks)
    assert [b.shift_size for b in blocks] == [(0, 0), (3, 3)] * 6
    # Stochastic depth 0.3 over the 12 blocks (CAC's Swin-T config).
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 12))
    assert sum(p.numel() for p in swin_t.parameters()) == 27_520_698


def test_swin_t_loads_mmseg_segmentor_backbone(tmp_path):
    """A whole Swin-T at its real widths through the mmseg import: window 7 never
    divides the stages of a 60x44 image, so mmseg's pad-then-shift order counts."""
    source = _randomise(build_backbone("swin_tiny_w7"), seed=8)
    state = _timm_to_mmseg_swin(source.state_dict())
    assert state["patch_embed.projection.weight"].shape == (96, 3, 4, 4)
    assert state["stages.2.downsample.reduction.weight"].shape == (768, 1536)
    path = tmp_path / "cac_swin_t.pth"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in state.items()}}, path)
    loaded = build_backbone("swin_tiny_w7", pretrained=path).eval()
    _assert_same_outputs(loaded, source, torch.randn(1, 3, 60, 44))


# --- arguments and errors ---------------------------------------------------


def test_pretrained_true_failure_says_how_to_use_a_local_file(monkeypatch):
    def offline(variant, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        raise AssertionError("only the pretrained build is expected")

    monkeypatch.setattr(backbones.timm, "create_model", offline)
    with pytest.raises(RuntimeError) as err:
        build_backbone("resnet50_v1c", pretrained=True)
    message = str(err.value)
    assert "'resnet50c'" in message and "OSError: Name or service not known" in message
    assert "pretrained='/path/to/checkpoint.pth'" in message


def test_bad_arguments(r50, tmp_path):
    with pytest.raises(ValueError, match="cannot be loaded into a backbone on device='meta'"):
        build_backbone("resnet50_v1c", pretrained=True, device="meta")
    with pytest.raises(ValueError, match=r"name must be one of \('resnet18_v1c'.*got 'resnet18'"):
        build_backbone("resnet18")
    with pytest.raises(TypeError, match="pretrained must be False, True, .* got int"):
        build_backbone("resnet50_v1c", pretrained=1)
    with pytest.raises(FileNotFoundError, match="pretrained checkpoint not found"):
        build_backbone("resnet50_v1c", pretrained=tmp_path / "nope.pth")
    with pytest.raises(
        ValueError, match=r"img must be a \(B, 3, H, W\) tensor; got \(1, 4, 8, 8\)"
    ):
        r50(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="checkpoint values must be tensors"):
        build_backbone("resnet50_v1c", pretrained={"conv1.0.weight": [1.0]})


def test_unsafe_pickle_is_refused_with_advice(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "meta": nn.Identity()}, path)
    with pytest.raises(ValueError, match=r"(?s)weights_only=True.*weights_only=False"):
        backbone_weights.read_checkpoint(path)


@pytest.mark.parametrize("name, channels", [("resnet18_v1c", [64, 128, 256, 512])])
def test_basic_block_v1c_resnets_are_dilated_with_the_deep_stem(name, channels):
    net = build_backbone(name).eval()
    assert net.conv1[0].out_channels == 32 and net.conv1[6].out_channels == 64  # deep stem
    assert net.layer3[0].conv1.dilation == (1, 1) and net.layer3[1].conv1.dilation == (2, 2)
    assert net.layer4[0].conv1.dilation == (2, 2) and net.layer4[1].conv1.dilation == (4, 4)
    feats = net(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == channels == net.out_channels
    assert [f.shape[-1] for f in feats] == [16, 8, 8, 8]
    with pytest.raises(ValueError, match="timm has no ImageNet weights for resnet18_v1c"):
        build_backbone(name, pretrained=True)
