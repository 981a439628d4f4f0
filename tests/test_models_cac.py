"""CAC in the model zoo: the CAC heads (DeepLabV3+, UPerNet, FCN) with the
context-aware classifier, their released parameter names, a released-format
checkpoint that loads strictly and gives the released head's logits (the
released forward_test transcribed here, in float64), the segmentor's training
objective (CACLoss) and the three zoo entries with their plain twins."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from condnet.models import (
    CACLoss,
    build_model,
    get_config,
    infer_model_name,
    list_models,
    load_released,
)
from condnet.models.heads import FCNHead, PlainClassifier, SepASPPHead, UPerHead
from condnet.nn import ContextAwareClassifier, ContextAwareOutput, cac_losses
from condnet.tools.convert_released import main as convert_main
from tests.test_models_released import released_checkpoint, to_mmseg

CAC = ["cac_r50-d8_ade20k", "cac_upernet_swin-t_ade20k", "cac_upernet_swin-b_ade20k"]
GENERATORS = ("proj", "apd_proj")
SMALL = dict(channels=16, c1_channels=8, aux_channels=8, num_classes=5)
# ResNet-18-V1c in place of ResNet-50: the same key layout, a quarter of the work.
R18 = dict(SMALL, backbone="resnet18_v1c")
TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4)


def fresh(name, seed, **overrides):
    torch.manual_seed(seed)
    return build_model(name, **overrides)


def perturbed(model, seed):
    """Non-trivial values everywhere (BN statistics included), so that a tensor
    loaded into the wrong place changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen, dtype=t.dtype)
                t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else t + 0.05 * noise)
    return model


# ---- the released CAC head's inference, transcribed (sep_aspp_head_cac.py and
# uper_head_cac.py: forward, post_refine_proto_v2, get_pred, forward_test) ----


def released_forward_test(feat, state, norm_eps):
    """``norm_eps``: the DeepLabV3+ head divides by the exact norms (0), the
    UPerNet and FCN heads by norm + 1e-12."""
    w, b = state["decode_head.conv_seg.weight"], state["decode_head.conv_seg.bias"]
    x = F.conv2d(feat, w, b)  # conv_seg(dropout(feat)), eval mode
    bsz, c, h, wd = feat.shape
    proto = w.squeeze()
    pred = F.softmax(x.view(bsz, proto.shape[0], h * wd), 1)
    pred_proto = (pred @ feat.view(bsz, c, h * wd).permute(0, 2, 1)) / (
        pred.sum(-1).unsqueeze(-1) + 1e-12
    )
    pred_proto = torch.cat([pred_proto, proto.unsqueeze(0).repeat(bsz, 1, 1)], -1)
    hidden = F.relu(pred_proto @ state["decode_head.proj.0.weight"].T)
    pred_proto = hidden @ state["decode_head.proj.2.weight"].T + state["decode_head.proj.2.bias"]
    xn = feat / (torch.norm(feat, 2, 1, True) + norm_eps)
    pn = pred_proto / (torch.norm(pred_proto, 2, -1, True) + norm_eps)
    return (pn @ xn.contiguous().view(bsz, c, h * wd)).view(bsz, -1, h, wd) * 15


def classifier_input(model, img):
    """The decode head's features, as its classifier receives them."""
    seen = []
    hook = model.decode_head.classifier.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        with torch.no_grad():
            logits, extra = model.decode(img)
    finally:
        hook.remove()
    return seen[0], logits, extra


@pytest.mark.parametrize(
    "name, overrides, norm_eps, released",
    [
        ("cac_r50-d8_ade20k", {"backbone": "resnet18_v1c"}, 0.0, True),
        ("cac_r50-d8_ade20k", {"backbone": "resnet18_v1c"}, 0.0, False),
        ("cac_upernet_swin-t_ade20k", {"backbone_kwargs": TINY_SWIN}, 1e-12, False),
    ],
)
def test_released_checkpoint_loads_strictly_and_gives_the_released_logits(
    name, overrides, norm_eps, released, tmp_path
):
    kw = dict(SMALL, cac_released=released, **overrides)
    source = perturbed(fresh(name, 0, **kw), seed=1)
    checkpoint = released_checkpoint(source)
    state = checkpoint["state_dict"]
    # The released head's own names: its classifier's parameters sit on the head.
    for key in ("conv_seg.weight", "conv_seg.bias", "proj.0.weight", "proj.2.weight"):
        assert f"decode_head.{key}" in state
    assert state["decode_head.apd_proj.0.weight"].shape == (8, 32)
    assert not any(k.startswith("decode_head.classifier.") for k in state)
    path = tmp_path / "released_cac.pth"
    torch.save(checkpoint, path)
    target = fresh(name, 2, **kw)
    assert load_released(path, model=target) is target  # strict: no key left over or missing
    model = target.double().eval()
    img = torch.randn(2, 3, 32, 40, dtype=torch.float64)
    feat, logits, extra = classifier_input(model, img)
    assert extra is None  # eval mode: the logits only
    released = released_forward_test(feat, {k: v.double() for k, v in state.items()}, norm_eps)
    torch.testing.assert_close(logits, released, rtol=1e-10, atol=1e-10)


def test_cli_converts_a_released_cac_checkpoint(tmp_path, capsys):
    """condnet-convert-released, as for CondNet: the model inferred from the keys
    (a full-size network, as released), loaded strictly, written."""
    name = "cac_r50-d8_ade20k"
    source = fresh(name, 0)
    src, out = tmp_path / "released.pth", tmp_path / "condnet.pth"
    torch.save(released_checkpoint(source), src)
    assert convert_main([str(src), str(out)]) == 0
    assert name in capsys.readouterr().out
    target = fresh(name, 1)
    target.load_state_dict(torch.load(out, map_location="cpu", weights_only=True), strict=True)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    # A CondNet checkpoint is not a CAC model: named explicitly, the load fails.
    state = torch.load(src, weights_only=True)["state_dict"]
    del state["decode_head.apd_proj.2.bias"]
    torch.save(state, src)
    assert convert_main([str(src), str(tmp_path / "x.pth"), "--model", name]) == 1
    assert "decode_head.classifier.apd_proj.2.bias" in capsys.readouterr().err


def test_every_cac_name_is_inferred_from_its_checkpoint():
    for name in CAC:
        with torch.device("meta"):
            state = to_mmseg(build_model(name))
        assert infer_model_name(state) == name


# ---- heads -----------------------------------------------------------------


def head_inputs(channels, size=8, batch=2):
    strides = (1, 2, 2, 2)  # DeepLabV3+'s first map at twice the others' size
    sizes = [size // s for s in strides]
    return [torch.randn(batch, c, n, n) for c, n in zip(channels, sizes, strict=True)]


@pytest.mark.parametrize(
    "make, channels",
    [
        (lambda **kw: SepASPPHead(32, 8, 5, channels=16, c1_channels=4, **kw), (8, 8, 8, 32)),
        (lambda **kw: UPerHead((8, 8, 8, 32), 5, channels=16, **kw), (8, 8, 8, 32)),
        (
            lambda **kw: FCNHead(
                32, 5, channels=16, num_convs=2, concat_input=True, in_index=3, **kw
            ),
            (8, 8, 8, 32),
        ),
    ],
    ids=["sep_aspp", "uper", "fcn"],
)
def test_cac_heads_return_the_classifier_output_in_training(make, channels):
    torch.manual_seed(0)
    head = make(classifier="cac")
    assert isinstance(head.classifier, ContextAwareClassifier)
    names = {k for k in head.state_dict() if k.startswith("classifier.")}
    assert names == {
        "classifier.conv_seg.weight",
        "classifier.conv_seg.bias",
        *(
            f"classifier.{g}.{p}"
            for g in ("proj", "apd_proj")
            for p in ("0.weight", "2.weight", "2.bias")
        ),
    }
    feats = head_inputs(channels)
    label = torch.randint(0, 5, (2, 16, 16))
    head.train()
    logits, out = head(feats, label=label)
    assert isinstance(out, ContextAwareOutput) and out.logits is logits
    assert out.static_logits.shape == out.oracle_logits.shape == logits.shape
    logits, out = head(feats)  # no label: no oracle
    assert out is None and logits.shape[:2] == (2, 5)
    head.eval()
    with torch.no_grad():
        eval_logits, out = head(feats, label=label)  # the label is not used in eval
    assert out is None and eval_logits.shape == logits.shape
    # The same head with the plain classifier ignores the label.
    plain = make(classifier="plain").train()
    assert isinstance(plain.classifier, PlainClassifier)
    assert plain(feats, label=label)[1] is None


def test_fcn_decode_head_concatenates_its_input():
    head = FCNHead(32, 5, channels=16, num_convs=2, concat_input=True, in_index=3)
    assert head.conv_cat.conv.weight.shape == (16, 48, 3, 3)
    assert FCNHead(32, 5, channels=16).conv_cat is None  # the auxiliary head's setting
    with pytest.raises(ValueError, match="concat_input must be a bool"):
        FCNHead(32, 5, concat_input=1)
    with pytest.raises(ValueError, match="released must be a bool"):
        FCNHead(32, 5, classifier="cac", released="yes")


# ---- the segmentor's objective ---------------------------------------------


def test_forward_train_is_cac_losses_plus_the_auxiliary_head():
    model = fresh("cac_r50-d8_ade20k", 0, **R18)
    assert isinstance(model.criterion, CACLoss) and model.uses_label
    img = torch.randn(2, 3, 32, 32)
    label = torch.randint(0, 5, (2, 32, 32))
    label[:, :5] = 255
    torch.manual_seed(1)
    losses = model.forward_train(img, label)
    assert set(losses) == {
        "loss_seg",
        "loss_static",
        "loss_oracle",
        "loss_distill",
        "loss_aux",
        "acc_seg",
        "acc_static",
        "acc_aux",
        "loss",
    }
    # The same forward by hand: the head with the label, cac_losses (weights 1),
    # the auxiliary cross-entropy over the counted pixels (weight 0.4).
    torch.manual_seed(1)
    feats = model.backbone(img)
    logits, out = model.decode_head(feats, label=label)
    terms = cac_losses(out, label)
    aux, _ = model.auxiliary_head(feats)
    aux = F.interpolate(aux, size=(32, 32), mode="bilinear", align_corners=False)
    aux_loss = F.cross_entropy(aux, label, ignore_index=255)
    for key, name in (("main", "seg"), ("static", "static"), ("oracle", "oracle")):
        torch.testing.assert_close(losses[f"loss_{name}"], terms[key])
    torch.testing.assert_close(losses["loss_distill"], terms["distill"])
    torch.testing.assert_close(losses["loss_aux"], 0.4 * aux_loss)
    total = sum(terms.values()) + 0.4 * aux_loss
    torch.testing.assert_close(losses["loss"], total)
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []  # apd_proj learns through the oracle's loss
    assert model.decode_head.classifier.apd_proj[0].weight.grad.abs().sum() > 0


def test_released_numerics_reach_the_classifier_and_its_losses():
    model = fresh("cac_r50-d8_ade20k", 0, **R18, cac_released=True)
    assert model.decode_head.classifier.released and model.decode_head.classifier.eps == 0.0
    img, label = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    label[:, :8] = 255
    torch.manual_seed(2)
    losses = model.forward_train(img, label)
    assert torch.isfinite(losses["loss"])
    # The released auxiliary loss (mmseg 0.x) averages over every pixel, ignored ones as 0.
    torch.manual_seed(2)
    feats = model.backbone(img)
    _, out = model.decode_head(feats, label=label)
    assert out.released
    aux, _ = model.auxiliary_head(feats)
    aux = F.interpolate(aux, size=(32, 32), mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(aux, label, ignore_index=255, reduction="none")
    torch.testing.assert_close(losses["loss_aux"], 0.4 * per_pixel.mean())
    assert not torch.allclose(losses["loss_aux"], 0.4 * per_pixel.sum() / (label != 255).sum())
    terms = cac_losses(out, label)
    torch.testing.assert_close(losses["loss"], sum(terms.values()) + losses["loss_aux"])
    assert not fresh("cac_r50-d8_ade20k", 0, **R18).decode_head.classifier.released


def test_cac_loss_weights_and_errors():
    loss = CACLoss(static_weight=0.0, distill_weight=2.0, aux_weight=0.0)
    K = 3
    logits = torch.randn(2, K, 4, 4)
    out = ContextAwareOutput(logits, torch.randn(2, K, 4, 4), torch.randn(2, K, 4, 4), False)
    label = torch.randint(0, K, (2, 8, 8))
    got = loss(label, logits, out)
    assert "loss_static" not in got and "acc_static" not in got and "loss_aux" not in got
    torch.testing.assert_close(got["loss_distill"], 2.0 * cac_losses(out, label)["distill"])
    # Without the classifier's training output: the cross-entropy on the logits.
    assert set(CACLoss()(label, logits)) == {"loss_seg", "acc_seg", "loss"}
    with pytest.raises(ValueError, match="cac_output must be the ContextAwareOutput"):
        loss(label, logits, torch.randn(2, K, 4, 4))
    with pytest.raises(ValueError, match="static_weight must be a number >= 0; got -1"):
        CACLoss(static_weight=-1)
    with pytest.raises(ValueError, match="at least one of the loss weights must be > 0"):
        CACLoss(0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"aux_logits has 4 classes; logits have K=3"):
        loss(label, logits, out, torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="no loss term to compute"):
        CACLoss(seg_weight=0, aux_weight=0.4)(label, logits)


# ---- zoo -------------------------------------------------------------------


def test_cac_names_and_plain_twins():
    names = list_models()
    for name in CAC:
        assert name in names and name + "-plain" in names
        config, twin = get_config(name), get_config(name + "-plain")
        assert config.classifier == "cac" and twin.classifier == "plain"
        assert dataclasses.replace(twin, classifier="cac") == config
        assert not config.cac_released
    # mmseg's plain models are the CondNet zoo's plain twins where the network is the same.
    assert get_config("cac_r50-d8_ade20k-plain") == get_config("condnet_r50-d8_ade20k-plain")
    swin_b = get_config("cac_upernet_swin-b_ade20k-plain")
    assert swin_b == get_config("condnet_upernet_swin-b_ade20k-plain")


@pytest.mark.parametrize(
    "name, backbone, head, aux_in",
    [
        ("cac_r50-d8_ade20k", "resnet50_v1c", "sep_aspp", 1024),
        ("cac_upernet_swin-t_ade20k", "swin_tiny_w7", "uper", 384),
        ("cac_upernet_swin-b_ade20k", "swin_base_w12", "uper", 512),
    ],
)
def test_cac_settings_and_parameter_counts(name, backbone, head, aux_in):
    c = get_config(name)
    assert (c.backbone, c.head, c.num_classes, c.test_mode) == (backbone, head, 150, "whole")
    assert (c.channels, c.dropout, c.auxiliary, c.aux_channels, c.aux_weight) == (
        512,
        0.1,
        True,
        256,
        0.4,
    )
    if head == "uper":
        assert dict(c.backbone_kwargs) == {"drop_path_rate": 0.3}
    else:
        assert c.dilations is None and c.c1_channels == 48
    with torch.device("meta"):
        model, plain = build_model(name), build_model(name + "-plain")
    assert isinstance(model.criterion, CACLoss) and not plain.uses_label
    clf = model.decode_head.classifier
    assert isinstance(clf, ContextAwareClassifier) and (clf.scale, clf.hidden_channels) == (
        15.0,
        256,
    )
    assert model.auxiliary_head.convs[0].conv.weight.shape == (256, aux_in, 3, 3)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    # CAC adds proj and apd_proj to the plain head: 2 x (2C*C/2 + C/2*C + C), C = 512.
    assert count(model) - count(plain) == 2 * (2 * 512 * 256 + 256 * 512 + 512)
    # mmseg's UPerNet Swin-T has 60M parameters (its model zoo), DeepLabV3+ R50 43.7M.
    expected = {"resnet50_v1c": 43.7e6, "swin_tiny_w7": 59.9e6, "swin_base_w12": 121.4e6}
    assert count(plain) == pytest.approx(expected[backbone], rel=2e-3)


def test_cac_needs_the_255_ignore_index():
    with pytest.raises(ValueError, match="ignore_index must be 255 with classifier='cac'"):
        build_model("cac_r50-d8_ade20k", ignore_index=0)
    with pytest.raises(ValueError, match="cac_released must be a bool"):
        build_model("cac_r50-d8_ade20k", cac_released=1)


def test_fcn_decode_head_from_a_config():
    with torch.device("meta"):
        model = build_model("cac_r50-d8_ade20k", head="fcn")
    head = model.decode_head
    assert isinstance(head, FCNHead) and head.in_index == 3 and len(head.convs) == 2
    assert head.conv_cat.conv.weight.shape == (512, 2048 + 512, 3, 3)
    assert isinstance(head.classifier, ContextAwareClassifier)
    with pytest.raises(ValueError, match="dilations apply to the ASPP heads only; head='fcn'"):
        build_model("cac_r50-d8_ade20k", head="fcn", dilations=(1, 2))
