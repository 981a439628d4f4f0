"""condnet.models.losses: cross-entropy, the Dice guidance loss, accuracy and
CondNetLoss, checked against torch and against a transcription of mmseg's
DiceLoss."""

import pytest
import torch
import torch.nn.functional as F

from condnet.models.losses import CondNetLoss, accuracy, cross_entropy, dice_guidance_loss

IGNORE = 255


def make_batch(B=2, K=5, h=4, w=6, scale=4, ignore_frac=0.3, seed=0, dtype=torch.float64):
    """Logits at 1/scale of the label, a label with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, K, h, w, generator=g, dtype=dtype)
    label = torch.randint(0, K, (B, h * scale, w * scale), generator=g)
    ignored = torch.rand(label.shape, generator=g) < ignore_frac
    return logits, label.masked_fill(ignored, IGNORE)


def mmseg_dice_transcription(pred_logits, label, smooth, exponent, ignore_index):
    """The released guidance loss written out as mmseg's DiceLoss computes it:
    the float label is nearest-resized, clamped one-hot targets, a valid mask
    on the numerator only, one binary Dice per class averaged over the batch,
    the class numbered ignore_index skipped, the sum divided by K."""
    small = F.interpolate(label[:, None].float(), size=pred_logits.shape[2:], mode="nearest")
    target = small[:, 0]
    pred = F.softmax(pred_logits, dim=1)
    num_classes = pred.shape[1]
    one_hot = F.one_hot(torch.clamp(target.long(), 0, num_classes - 1), num_classes)
    valid_mask = (target != ignore_index).long()
    total = 0
    for i in range(num_classes):
        if i == ignore_index:
            continue
        p = pred[:, i].reshape(pred.shape[0], -1)
        t = one_hot[..., i].reshape(one_hot.shape[0], -1)
        v = valid_mask.reshape(valid_mask.shape[0], -1)
        num = torch.sum(torch.mul(p, t) * v, dim=1) * 2 + smooth
        den = torch.sum(p.pow(exponent) + t.pow(exponent), dim=1) + smooth
        total = total + (1 - num / den).mean()
    return total / num_classes


def exclude_dice_by_loops(pred_logits, label, smooth, ignore_index):
    """The "exclude" Dice, pixel by pixel: ignored pixels appear nowhere."""
    small = F.interpolate(label[:, None].float(), size=pred_logits.shape[2:], mode="nearest")
    small = small[:, 0].long()
    probs = pred_logits.softmax(dim=1)
    B, K = probs.shape[:2]
    losses = torch.zeros(B, K, dtype=probs.dtype)
    for b in range(B):
        keep = small[b] != ignore_index
        for k in range(K):
            p = probs[b, k][keep]
            t = (small[b][keep] == k).to(p.dtype)
            losses[b, k] = 1 - (2 * (p * t).sum() + smooth) / ((p**2 + t**2).sum() + smooth)
    return losses.mean()


# ---------------------------------------------------------------- cross-entropy


def test_cross_entropy_is_torch_cross_entropy_on_the_upsampled_logits():
    logits, label = make_batch()
    up = F.interpolate(logits, size=label.shape[1:], mode="bilinear", align_corners=False)
    want = F.cross_entropy(up, label, ignore_index=IGNORE)
    torch.testing.assert_close(cross_entropy(logits, label), want)
    torch.testing.assert_close(cross_entropy(logits, label[:, None]), want)


def test_cross_entropy_ignores_pixels_and_honours_ignore_index():
    logits, label = make_batch(scale=1)
    ignored = label == IGNORE
    changed = logits + 5.0 * torch.randn_like(logits) * ignored[:, None]
    torch.testing.assert_close(cross_entropy(changed, label), cross_entropy(logits, label))
    # With another ignore_index the 255s would be out of range; relabel them.
    relabelled = label.masked_fill(ignored, -1)
    torch.testing.assert_close(
        cross_entropy(logits, relabelled, ignore_index=-1), cross_entropy(logits, label)
    )


@pytest.mark.parametrize(
    "fn",
    [
        cross_entropy,
        lambda g, y: dice_guidance_loss(g, y),
        lambda g, y: CondNetLoss()(y, g, g, g)["loss"],
    ],
    ids=["cross_entropy", "dice_exclude", "CondNetLoss"],
)
def test_all_ignored_label_gives_zero_loss_and_zero_gradients(fn):
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    label = torch.full((2, 6, 6), IGNORE)
    loss = fn(logits, label)
    assert loss.requires_grad and loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(grad).all() and (grad == 0).all()


# ---------------------------------------------------------------- Dice


@pytest.mark.parametrize("ignore_index", [IGNORE, 1])
@pytest.mark.parametrize("smooth", [1e-5, 1.0])
def test_released_dice_matches_mmseg_transcription(ignore_index, smooth):
    logits, label = make_batch(K=4, scale=2)
    label = torch.where(label == IGNORE, ignore_index, label)
    got = dice_guidance_loss(
        logits, label, ignore_index=ignore_index, smooth=smooth, ignore_mode="released"
    )
    want = mmseg_dice_transcription(logits, label, smooth, 2, ignore_index)
    torch.testing.assert_close(got, want)


def test_exclude_dice_matches_a_pixel_loop():
    logits, label = make_batch(K=4, scale=2, seed=3)
    got = dice_guidance_loss(logits, label)
    torch.testing.assert_close(got, exclude_dice_by_loops(logits, label, 1e-5, IGNORE))


def test_dice_modes_differ_exactly_when_pixels_are_ignored():
    logits, label = make_batch(K=4, scale=2, ignore_frac=0.0)
    assert not (label == IGNORE).any()
    exclude = dice_guidance_loss(logits, label)
    released = dice_guidance_loss(logits, label, ignore_mode="released")
    torch.testing.assert_close(exclude, released, rtol=0, atol=0)
    label[:, :2] = IGNORE
    exclude = dice_guidance_loss(logits, label)
    released = dice_guidance_loss(logits, label, ignore_mode="released")
    assert (exclude - released).abs() > 1e-3


def test_exclude_dice_does_not_see_ignored_pixels():
    logits, label = make_batch(K=4, scale=1)
    ignored = (label == IGNORE)[:, None]
    changed = logits + 3.0 * torch.randn_like(logits) * ignored
    assert dice_guidance_loss(changed, label) == dice_guidance_loss(logits, label)
    released = dice_guidance_loss(changed, label, ignore_mode="released")
    assert released != dice_guidance_loss(logits, label, ignore_mode="released")


def test_dice_resizes_the_label_by_nearest_neighbour():
    logits, label = make_batch(K=4, scale=2)
    torch.testing.assert_close(
        dice_guidance_loss(logits, label), dice_guidance_loss(logits, label[:, ::2, ::2])
    )


def test_dice_is_zero_for_a_perfect_prediction_and_near_one_for_a_wrong_one():
    label = torch.randint(0, 3, (2, 8, 8))
    one_hot = F.one_hot(label, 3).permute(0, 3, 1, 2).double()
    assert dice_guidance_loss(100 * one_hot, label) < 1e-6
    assert dice_guidance_loss(-100 * one_hot, label) > 0.99


# ---------------------------------------------------------------- accuracy


def test_accuracy_by_hand():
    predicted = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    logits = F.one_hot(predicted, 3).permute(0, 3, 1, 2).float()
    label = torch.tensor([[[0, 1, 1], [IGNORE, 1, 2]]])
    # Five counted pixels, three right.
    acc = accuracy(logits.requires_grad_(), label)
    assert acc.item() == pytest.approx(60.0) and not acc.requires_grad
    assert accuracy(logits, torch.full_like(label, IGNORE)).item() == 0.0


def test_accuracy_resizes_the_logits_first():
    logits, label = make_batch(scale=2)
    up = F.interpolate(logits, size=label.shape[1:], mode="bilinear", align_corners=False)
    valid = label != IGNORE
    want = 100.0 * ((up.argmax(1) == label) & valid).sum() / valid.sum()
    torch.testing.assert_close(accuracy(logits, label), want.float())


# ---------------------------------------------------------------- CondNetLoss


def heads(seed=0):
    logits, label = make_batch(K=5, h=8, w=8, scale=4, seed=seed)
    guide = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    aux = torch.randn(2, 5, 8, 8, dtype=torch.float64)
    return label, logits, guide, aux


def test_condnet_loss_terms_weights_and_total():
    label, logits, guide, aux = heads()
    out = CondNetLoss()(label, logits, guide, aux)
    terms = ("seg", "guidance", "aux")
    assert set(out) == {"loss"} | {f"{kind}_{t}" for kind in ("loss", "acc") for t in terms}
    torch.testing.assert_close(out["loss_seg"], cross_entropy(logits, label))
    torch.testing.assert_close(out["loss_guidance"], 0.2 * dice_guidance_loss(guide, label))
    torch.testing.assert_close(out["loss_aux"], 0.4 * cross_entropy(aux, label))
    torch.testing.assert_close(out["acc_seg"], accuracy(logits, label))
    torch.testing.assert_close(out["acc_aux"], accuracy(aux, label))
    # The guidance accuracy is taken at the guide logits' size.
    torch.testing.assert_close(out["acc_guidance"], accuracy(guide, label[:, ::4, ::4]))
    torch.testing.assert_close(
        out["loss"], out["loss_seg"] + out["loss_guidance"] + out["loss_aux"]
    )
    scaled = CondNetLoss(seg_weight=2.0, guidance_weight=1.0, aux_weight=0.5)
    out2 = scaled(label, logits, guide, aux)
    torch.testing.assert_close(out2["loss_seg"], 2 * out["loss_seg"])
    torch.testing.assert_close(out2["loss_guidance"], 5 * out["loss_guidance"])
    torch.testing.assert_close(out2["loss_aux"], 1.25 * out["loss_aux"])


def test_condnet_loss_drops_absent_and_zero_weight_terms():
    label, logits, guide, aux = heads()
    assert set(CondNetLoss()(label, logits)) == {"loss", "loss_seg", "acc_seg"}
    out = CondNetLoss(guidance_weight=0)(label, logits, guide, aux)
    assert set(out) == {"loss", "loss_seg", "acc_seg", "loss_aux", "acc_aux"}
    out = CondNetLoss(seg_weight=0, aux_weight=0)(label, logits, guide, aux)
    assert set(out) == {"loss", "loss_guidance", "acc_guidance"}
    torch.testing.assert_close(out["loss"], out["loss_guidance"])
    with pytest.raises(ValueError, match="no loss term"):
        CondNetLoss(seg_weight=0)(label, logits)


def test_condnet_loss_released_dice_mode():
    label, logits, guide, _ = heads()
    out = CondNetLoss(dice_ignore_mode="released", dice_smooth=1.0)(label, logits, guide)
    want = dice_guidance_loss(guide, label, smooth=1.0, ignore_mode="released")
    torch.testing.assert_close(out["loss_guidance"], 0.2 * want)


def test_losses_are_float32_for_bfloat16_logits_and_under_autocast():
    label, logits, guide, aux = heads()
    logits, guide, aux = (t.to(torch.bfloat16).requires_grad_() for t in (logits, guide, aux))
    want = CondNetLoss()(label, logits.float(), guide.float(), aux.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = CondNetLoss()(label, logits, guide, aux)
    for key, value in got.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, want[key], rtol=1e-6, atol=1e-6)
    got["loss"].backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad).all()


def test_condnet_loss_backward_reaches_every_head():
    label, *outputs = heads()
    logits, guide, aux = (t.requires_grad_() for t in outputs)
    CondNetLoss()(label, logits, guide, aux)["loss"].backward()
    for t in (logits, guide, aux):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda y, x, g, a: (y.float(), x, g, a), r"label.*integer.*float32"),
        (lambda y, x, g, a: (y[0], x, g, a), r"label.*\(B, H, W\).*\(32, 32\)"),
        (lambda y, x, g, a: (y, x[0], g, a), r"logits.*\(B, K, h, w\).*\(5, 8, 8\)"),
        (lambda y, x, g, a: (y[:1], x, g, a), r"logits has batch size 2; the label has 1"),
        (lambda y, x, g, a: (y, x, g[:1], a), r"guide_logits has batch size 1"),
        (lambda y, x, g, a: (y, x, g, a[:, :4]), r"aux_logits has 4 classes; logits have K=5"),
        (lambda y, x, g, a: (y.clone().fill_(5), x, g, a), r"\[0, 5\).*ignore_index=255.*e\.g\. 5"),
        (lambda y, x, g, a: (y.clone().fill_(-1), x, g, a), r"outside \[0, K\).*e\.g\. -1"),
    ],
)
def test_condnet_loss_rejects_bad_input(change, match):
    args = change(*heads())
    with pytest.raises(ValueError, match=match):
        CondNetLoss()(*args)


def test_functions_reject_bad_input():
    logits, label = make_batch()
    with pytest.raises(ValueError, match="label"):
        cross_entropy(logits, label.float())
    with pytest.raises(ValueError, match="guide_logits has batch size 2"):
        dice_guidance_loss(logits, label[:1])
    with pytest.raises(ValueError, match="ignore_mode"):
        dice_guidance_loss(logits, label, ignore_mode="mask")
    with pytest.raises(ValueError, match="e.g. 7"):
        accuracy(logits, label.masked_fill(label == 0, 7))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seg_weight": -1.0}, "seg_weight must be a number >= 0"),
        ({"aux_weight": True}, "aux_weight"),
        ({"dice_smooth": float("nan")}, "dice_smooth"),
        ({"seg_weight": 0, "guidance_weight": 0, "aux_weight": 0}, "at least one"),
        ({"dice_ignore_mode": "mask"}, "dice_ignore_mode"),
        ({"ignore_index": 255.0}, "ignore_index"),
    ],
)
def test_condnet_loss_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CondNetLoss(**kwargs)
