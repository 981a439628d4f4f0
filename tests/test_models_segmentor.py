"""Segmentor: forward at input size, one-pass training losses, predict (whole,
slide, multi-scale + flip) and bad input, on a tiny backbone."""

import pytest
import torch
from torch import nn

from condnet.models import InferenceConfig, Segmentor
from condnet.models.heads import FCNHead, SepASPPHead
from condnet.models.losses import CondNetLoss

K = 4


class TinyBackbone(nn.Module):
    """Four maps at strides 4, 8, 8, 8, like the dilated ResNets."""

    out_channels = (8, 8, 12, 16)
    strides = (4, 8, 8, 8)

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.stage3 = nn.Conv2d(8, 12, 3, padding=1)
        self.stage4 = nn.Conv2d(12, 16, 3, padding=2, dilation=2)
        self.calls = 0

    def forward(self, img):
        self.calls += 1
        c1 = torch.relu(self.stem(img))
        c2 = torch.relu(self.down(c1))
        c3 = torch.relu(self.stage3(c2))
        return [c1, c2, c3, torch.relu(self.stage4(c3))]


def tiny(classifier="conditional", aux=True, test_cfg=None, seed=0):
    torch.manual_seed(seed)
    backbone = TinyBackbone()
    head = SepASPPHead(16, 8, K, channels=16, c1_channels=4, classifier=classifier)
    aux_head = FCNHead(12, K, channels=8) if aux else None
    return Segmentor(backbone, head, aux_head, CondNetLoss(), test_cfg=test_cfg)


def image(B=2, H=65, W=97, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 3, H, W, generator=g)


def label(B=2, H=65, W=97, seed=2):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, K, (B, H, W), generator=g)
    lab[:, :5] = 255
    return lab


def test_forward_gives_logits_at_input_size():
    model = tiny()
    assert model(image()).shape == (2, K, 65, 97)
    assert model.num_classes == K
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == {"backbone", "decode_head", "auxiliary_head"}


def test_forward_train_runs_each_part_once_and_backpropagates():
    model = tiny()
    calls = {"decode_head": 0, "auxiliary_head": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
    losses = model.forward_train(image(), label())
    assert set(losses) == {
        "loss_seg",
        "acc_seg",
        "loss_guidance",
        "acc_guidance",
        "loss_aux",
        "acc_aux",
        "loss",
    }
    assert model.backbone.calls == 1 and calls == {"decode_head": 1, "auxiliary_head": 1}
    total = losses["loss_seg"] + losses["loss_guidance"] + losses["loss_aux"]
    torch.testing.assert_close(losses["loss"], total)
    losses["loss"].backward()
    guide = model.decode_head.classifier.guidance_project.weight
    assert guide.grad is not None and guide.grad.abs().sum() > 0
    assert model.auxiliary_head.classifier.conv_seg.weight.grad.abs().sum() > 0
    assert model.backbone.stem.weight.grad.abs().sum() > 0


def test_forward_train_matches_the_loss_on_the_head_outputs():
    model = tiny().eval()  # deterministic: no dropout, running statistics
    img, lab = image(), label()
    feats = model.backbone(img)
    logits, guide = model.decode_head(feats)
    aux, _ = model.auxiliary_head(feats)
    expected = CondNetLoss()(lab, logits, guide, aux)
    got = model.forward_train(img, lab)
    torch.testing.assert_close(got, expected)


def test_plain_twin_and_no_auxiliary_head():
    losses = tiny(classifier="plain").forward_train(image(), label())
    assert set(losses) == {"loss_seg", "acc_seg", "loss_aux", "acc_aux", "loss"}
    losses = tiny(aux=False).forward_train(image(), label())
    assert set(losses) == {"loss_seg", "acc_seg", "loss_guidance", "acc_guidance", "loss"}
    model = tiny(classifier="plain").eval()
    assert model.decode(image())[1] is None


def test_predict_whole_equals_forward_and_slide_with_full_crop():
    model = tiny().eval()
    img = image()
    with torch.no_grad():
        expected = model(img)
    whole = model.predict(img)
    torch.testing.assert_close(whole, expected)
    slide = model.predict(img, mode="slide", crop_size=(65, 97), stride=(40, 50))
    torch.testing.assert_close(slide, expected)
    assert not whole.requires_grad


def test_predict_slide_counts_windows_and_uses_test_cfg():
    cfg = InferenceConfig("slide", crop_size=32, stride=24)
    model = tiny(test_cfg=cfg).eval()
    model.backbone.calls = 0
    out = model.predict(image(B=1))
    # rows: (65 - 32 + 23) // 24 + 1 = 3; cols: (97 - 32 + 23) // 24 + 1 = 4
    assert out.shape == (1, K, 65, 97) and model.backbone.calls == 12
    model.backbone.calls = 0
    model.predict(image(B=1), mode="whole")
    assert model.backbone.calls == 1


def test_predict_multi_scale_flip_probs_and_out_size():
    model = tiny().eval()
    probs = model.predict(
        image(), scales=(0.5, 1.0, 1.5), flip=True, out_size=(40, 30), output="probs"
    )
    assert probs.shape == (2, K, 40, 30)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 40, 30))
    # Flip averaging makes a single-scale prediction of a mirrored image mirrored.
    img = image()
    a = model.predict(img, flip=True)
    b = model.predict(img.flip(-1), flip=True)
    torch.testing.assert_close(a, b.flip(-1), rtol=1e-4, atol=1e-5)


def test_bad_input():
    model = tiny()
    with pytest.raises(ValueError, match=r"img must be a floating-point \(B, C, H, W\)"):
        model(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="img must be"):
        model.forward_train(torch.randn(3, 8, 8), label())
    with pytest.raises(ValueError, match="mode must be one of"):
        model.predict(image(), mode="tiles")
    with pytest.raises(ValueError, match="needs crop_size and stride"):
        model.predict(image(), mode="slide", crop_size=32)
    with pytest.raises(ValueError, match="output must be one of"):
        model.predict(image(), output="argmax")
    with pytest.raises(ValueError, match="needs crop_size and stride"):
        InferenceConfig("slide")
    with pytest.raises(ValueError, match="crop_size must be a positive int"):
        InferenceConfig("slide", crop_size=(0, 5), stride=3)
    head = SepASPPHead(16, 8, K, channels=16, c1_channels=4)
    with pytest.raises(ValueError, match="decode_head predicts 4 classes; num_classes=5"):
        Segmentor(TinyBackbone(), head, num_classes=5)
    with pytest.raises(ValueError, match="test_cfg must be an InferenceConfig"):
        Segmentor(TinyBackbone(), head, test_cfg={"mode": "whole"})
