"""condnet.models.inference: whole, sliding-window and multi-scale/flip
inference, checked with small models whose behaviour is known exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condnet.models.inference import (
    ADE20K_TTA_SCALES,
    aug_inference,
    slide_inference,
    whole_inference,
)

K = 4


def pointwise_model(seed=0):
    """A 1x1 conv: translation- and flip-equivariant, so any tiling of the
    image gives the same logits."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, K, 1).double()


def image(B=2, H=20, W=23, seed=0):
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed)).double()


def coordinates(H, W):
    """A (1, 2, H, W) image whose channels hold each pixel's row and column."""
    rows = torch.arange(H, dtype=torch.float64)[:, None].expand(H, W)
    cols = torch.arange(W, dtype=torch.float64)[None, :].expand(H, W)
    return torch.stack([rows, cols])[None]


def test_whole_inference_resizes_to_the_image_or_out_size():
    model = pointwise_model()
    img = image()
    torch.testing.assert_close(whole_inference(model, img), model(img))
    eighth = whole_inference(lambda x: model(F.avg_pool2d(x, 4)), img[..., :16, :20])
    assert eighth.shape == (2, K, 16, 20)
    got = whole_inference(model, img, out_size=(7, 9))
    want = F.interpolate(model(img), size=(7, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got, want)
    assert whole_inference(model, img, out_size=5).shape == (2, K, 5, 5)


@pytest.mark.parametrize(
    "crop, stride", [(8, 5), ((8, 6), (4, 6)), (7, 7), (20, 1), ((3, 23), (2, 1))]
)
def test_slide_equals_whole_for_a_pointwise_model(crop, stride):
    model = pointwise_model()
    img = image()
    got = slide_inference(model, img, K, crop_size=crop, stride=stride)
    torch.testing.assert_close(got, model(img))


def test_slide_window_positions_follow_mmseg():
    seen = []

    def record(crop):
        seen.append((int(crop[0, 0, 0, 0]), int(crop[0, 1, 0, 0]), *crop.shape[-2:]))
        return crop[:, :1].expand(-1, K, -1, -1)

    # H=11: rows = (11 - 4 + 3 - 1) // 3 + 1 = 4, the last shifted back to end at 11.
    # W=10: cols = (10 - 4 + 2) // 3 + 1 = 3.
    slide_inference(record, coordinates(11, 10), K, crop_size=4, stride=3)
    starts = [(y, x) for y in (0, 3, 6, 7) for x in (0, 3, 6)]
    assert seen == [(y, x, 4, 4) for y, x in starts]


def test_slide_averages_overlapping_windows():
    def window_start(crop):  # every pixel of a window gets the window's first column
        return crop[:, 1:2, :1, :1].expand(-1, K, *crop.shape[-2:])

    got = slide_inference(window_start, coordinates(1, 10), K, crop_size=(1, 4), stride=(1, 3))
    # Windows start at columns 0, 3, 6; columns 3 and 6 are covered twice.
    want = torch.tensor([0, 0, 0, 1.5, 3, 3, 4.5, 6, 6, 6], dtype=torch.float64)
    torch.testing.assert_close(got[0, 0, 0], want)


def test_slide_with_eighth_resolution_logits():
    model = pointwise_model()

    def coarse(x):
        return model(F.avg_pool2d(x, 8, ceil_mode=True))

    img = torch.ones(1, 3, 40, 48, dtype=torch.float64)
    got = slide_inference(coarse, img, K, crop_size=16, stride=12)
    assert got.shape == (1, K, 40, 48)
    # On a constant image every window and the whole image agree.
    torch.testing.assert_close(got, whole_inference(coarse, img))


def test_slide_runs_an_image_smaller_than_the_crop_as_is():
    model = pointwise_model()
    shapes = []

    def record(x):
        shapes.append(tuple(x.shape[-2:]))
        return model(x)

    img = image(H=5, W=6)
    torch.testing.assert_close(slide_inference(record, img, K, 8, 4), model(img))
    assert shapes == [(5, 6)]
    out = slide_inference(model, img, K, 8, 4, out_size=(10, 12))
    assert out.shape == (2, K, 10, 12)


def test_aug_with_one_scale_and_flip_equals_whole_for_a_flip_equivariant_model():
    model = pointwise_model()
    img = image()
    got = aug_inference(model, img, K, scales=(1.0,), flip=True)
    torch.testing.assert_close(got, model(img))
    slid = aug_inference(model, img, K, flip=True, mode="slide", crop_size=8, stride=6)
    torch.testing.assert_close(slid, model(img))


def test_aug_flip_averages_with_the_unflipped_mirror_image():
    torch.manual_seed(1)
    model = nn.Conv2d(3, K, 3, padding=1).double()  # not flip-equivariant
    img = image()
    want = (model(img) + model(img.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(aug_inference(model, img, K, flip=True), want)


def test_aug_averages_over_scales():
    def width_squared(x):  # logits that depend only on the scale
        return torch.full((x.shape[0], K, 2, 2), float(x.shape[-1] ** 2), dtype=x.dtype)

    img = image(H=10, W=20)
    got = aug_inference(width_squared, img, K, scales=(0.5, 1.0, 1.5))
    assert got.shape == (2, K, 10, 20)
    torch.testing.assert_close(got, torch.full_like(got, (10**2 + 20**2 + 30**2) / 3))
    # Rounding half up, as mmcv: 0.75 * (14, 22) = (10.5, 16.5) -> (11, 17).
    sizes = []

    def record(x):
        sizes.append(x.shape[-2:])
        return width_squared(x)

    aug_inference(record, image(H=14, W=22), K, scales=0.75)
    assert sizes == [(11, 17)]


def test_aug_probs_average_softmax_of_the_mmseg_pipeline():
    model = pointwise_model()

    def coarse(x):  # logits at half resolution
        return model(F.avg_pool2d(x, 2, ceil_mode=True))

    def resize(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    img = image()
    scales = (0.5, 1.0, 1.5)
    got = aug_inference(coarse, img, K, scales=scales, flip=True, output="probs")
    torch.testing.assert_close(got.sum(1), torch.ones(2, 20, 23, dtype=torch.float64))
    # mmseg: logits resized to the scaled image, flipped back, resized to the
    # original size, softmax, then the mean over the six runs.
    want = 0
    for s in scales:
        scaled = resize(img, (int(20 * s + 0.5), int(23 * s + 0.5)))
        for view, unflip in ((scaled, False), (scaled.flip(-1), True)):
            out = resize(coarse(view), view.shape[-2:])
            out = resize(out.flip(-1) if unflip else out, (20, 23))
            want = want + out.softmax(1) / 6
    torch.testing.assert_close(got, want)


def test_aug_ade20k_scales_and_out_size():
    model = pointwise_model()
    out = aug_inference(model, image(H=16, W=16), K, scales=ADE20K_TTA_SCALES, out_size=(9, 11))
    assert out.shape == (2, K, 9, 11)
    assert ADE20K_TTA_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def test_aug_keeps_low_precision_logits_in_float32_sums():
    model = pointwise_model().to(torch.bfloat16)
    out = aug_inference(model, image().to(torch.bfloat16), K, flip=True)
    assert out.dtype == torch.float32


def test_inference_leaves_autograd_to_the_caller():
    model = pointwise_model()
    assert whole_inference(model, image()).requires_grad
    assert slide_inference(model, image(), K, 8, 5).requires_grad
    with torch.no_grad():
        assert not aug_inference(model, image(), K, flip=True).requires_grad


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x: slide_inference(m, x, K, 0, 1), r"crop_size.*got 0"),
        (lambda m, x: slide_inference(m, x, K, 8, (2,)), r"stride.*pair.*\(2,\)"),
        (lambda m, x: slide_inference(m, x, K, 8, True), r"stride"),
        (lambda m, x: slide_inference(m, x, K, (8, 4), (4, 5)), r"stride must not exceed"),
        (lambda m, x: slide_inference(m, x, K + 1, 8, 4), r"4 channels; num_classes=5"),
        (lambda m, x: slide_inference(m, x, 0, 8, 4), r"num_classes"),
        (lambda m, x: whole_inference(m, x[0]), r"img must have shape \(B, C, H, W\)"),
        (lambda m, x: whole_inference(m, x, out_size=(0, 3)), r"out_size"),
        (lambda m, x: whole_inference(lambda y: m(y)[0], x), r"forward_fn must return"),
        (lambda m, x: whole_inference(lambda y: m(y)[:1], x), r"batch size 1 for 2 images"),
        (lambda m, x: aug_inference(m, x, K, mode="grid"), r"mode"),
        (lambda m, x: aug_inference(m, x, K, mode="slide"), r"crop_size and stride"),
        (lambda m, x: aug_inference(m, x, K, output="argmax"), r"output"),
        (lambda m, x: aug_inference(m, x, K, scales=()), r"scales"),
        (lambda m, x: aug_inference(m, x, K, scales=(1.0, -0.5)), r"scales"),
        (lambda m, x: aug_inference(m, x, K + 1), r"num_classes=5"),
    ],
)
def test_inference_rejects_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(pointwise_model(), image())
