"""Every transform's effect on the image and on the label."""

import numpy as np
import pytest
import torch

from condnet.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    Pad,
    PhotoMetricDistortion,
    RandomCrop,
    RandomFlip,
    Resize,
    ToTensor,
    colorize,
    eval_pipeline,
    train_pipeline,
)

LUT = np.random.default_rng(0).integers(0, 256, (256, 3), dtype=np.uint8)


def coded(label):
    """A sample whose image is a fixed colour per label value (to check alignment)."""
    label = np.asarray(label, dtype=np.uint8)
    return {
        "img": LUT[label],
        "gt_semantic_seg": label,
        "ori_shape": label.shape,
        "img_shape": label.shape,
    }


def blocks(height, width, size, values=(0, 3, 7, 255), seed=0):
    """A label made of ``size`` x ``size`` blocks of random values."""
    small = np.random.default_rng(seed).choice(
        np.asarray(values, np.uint8), (height // size, width // size)
    )
    return np.kron(small, np.ones((size, size), np.uint8))


def rng(seed=0):
    return np.random.default_rng(seed)


# -- Resize --------------------------------------------------------------------------------


def test_resize_keep_ratio_fits_long_and_short_edge():
    sample = coded(blocks(40, 60, 4))
    out = Resize((60, 20))(sample, rng())  # limits: long edge 60, short edge 20 -> factor 0.5
    assert out["img"].shape == (20, 30, 3) and out["gt_semantic_seg"].shape == (20, 30)
    assert out["img_shape"] == (20, 30) and out["scale_factor"] == (0.5, 0.5)
    out = Resize((2048, 512))(coded(blocks(512, 684, 4)), rng())  # ADE-sized: unchanged
    assert out["img"].shape == (512, 684, 3)


def test_resize_ratio_range_rescales_between_half_and_double_keeping_aspect():
    factors = []
    for seed in range(12):
        out = Resize((80, 20), ratio_range=(0.5, 2.0))(coded(blocks(20, 32, 4)), rng(seed))
        h, w = out["gt_semantic_seg"].shape
        assert out["img"].shape[:2] == (h, w)
        assert abs(w / h - 32 / 20) < 0.1
        factors.append(h / 20)
    assert min(factors) >= 0.5 - 0.05 and max(factors) <= 2.0 + 0.05
    assert max(factors) - min(factors) > 0.5  # really random


def test_resize_label_is_nearest_and_aligned_image_is_bilinear():
    label = blocks(32, 48, 8)
    sample = coded(label)
    out = Resize((12, 8))(sample, rng())  # factor 0.25: each 8x8 block becomes 2x2
    np.testing.assert_array_equal(out["gt_semantic_seg"], label[::4, ::4])
    assert set(np.unique(out["gt_semantic_seg"])) <= {0, 3, 7, 255}
    up = Resize((72, 48))(coded(label), rng())  # factor 1.5
    assert set(np.unique(up["gt_semantic_seg"])) <= {0, 3, 7, 255}
    palette_colours = {tuple(LUT[v]) for v in (0, 3, 7, 255)}
    image_colours = {tuple(c) for c in up["img"].reshape(-1, 3)}
    assert image_colours - palette_colours  # bilinear: new colours at block edges
    # away from block edges, image and label still agree
    inner = up["gt_semantic_seg"][5:7, 5:7]
    np.testing.assert_array_equal(up["img"][5:7, 5:7], LUT[inner])


def test_resize_nearest_for_wide_integer_labels_and_eval_mode():
    label = np.zeros((16, 16), np.int32)
    label[:8] = 300
    label[8:, 8:] = 1000
    out = Resize((8, 8))({"img": np.zeros((16, 16, 3), np.uint8), "gt_semantic_seg": label}, rng())
    assert out["gt_semantic_seg"].dtype == np.int32
    np.testing.assert_array_equal(out["gt_semantic_seg"], label[::2, ::2])
    keep = Resize((8, 8), resize_label=False)(coded(blocks(16, 16, 4)), rng())
    assert keep["img"].shape == (8, 8, 3) and keep["gt_semantic_seg"].shape == (16, 16)


# -- RandomCrop ----------------------------------------------------------------------------


def test_crop_size_and_alignment():
    label = blocks(40, 50, 2, values=range(10))
    out = RandomCrop((16, 20), cat_max_ratio=1.0)(coded(label), rng(3))
    top, left, h, w = out["crop_bbox"]
    assert (h, w) == (16, 20) and out["img"].shape == (16, 20, 3)
    np.testing.assert_array_equal(out["gt_semantic_seg"], label[top : top + 16, left : left + 20])
    np.testing.assert_array_equal(out["img"], LUT[out["gt_semantic_seg"]])
    small = RandomCrop((64, 64))(coded(label), rng())  # smaller image: kept whole
    assert small["img"].shape == (40, 50, 3)


def cat_max_label():
    """Columns 0-99: only class 1. Columns 100-399: per 10 columns 8 ignore, 1 of 1, 1 of 2."""
    label = np.ones((10, 400), np.uint8)
    pattern = np.array([255] * 8 + [1, 2], np.uint8)
    label[:, 100:] = np.tile(pattern, 30)
    return label


def dominant_share(window, ignore=255):
    values, counts = np.unique(window[window != ignore], return_counts=True)
    return counts.max() / counts.sum(), len(values)


def test_crop_obeys_cat_max_ratio_without_counting_ignore():
    label = cat_max_label()
    for seed in range(30):
        out = RandomCrop((10, 50), cat_max_ratio=0.75)(coded(label), rng(seed))
        share, classes = dominant_share(out["gt_semantic_seg"])
        assert classes >= 2 and share < 0.75, out["crop_bbox"]
        # the accepted windows are mostly ignore: counting ignore would have rejected them
        assert (out["gt_semantic_seg"] == 255).mean() > 0.75


def test_crop_without_cat_max_ratio_takes_dominated_windows():
    label = cat_max_label()
    shares = [
        dominant_share(
            RandomCrop((10, 50), cat_max_ratio=1.0)(coded(label), rng(s))["gt_semantic_seg"]
        )[0]
        for s in range(30)
    ]
    assert max(shares) == 1.0  # some windows are class 1 only


def test_crop_gives_up_after_max_retries():
    label = np.zeros((10, 100), np.uint8)  # one class everywhere: no window qualifies
    out = RandomCrop((10, 10), cat_max_ratio=0.75)(coded(label), rng())
    assert out["img"].shape == (10, 10, 3)


# -- RandomFlip ----------------------------------------------------------------------------


def test_flip_mirrors_image_and_label_together():
    label = blocks(8, 12, 2, values=range(6))
    out = RandomFlip(prob=1.0)(coded(label), rng())
    assert out["flip"] is True
    np.testing.assert_array_equal(out["gt_semantic_seg"], label[:, ::-1])
    np.testing.assert_array_equal(out["img"], LUT[label][:, ::-1])
    same = RandomFlip(prob=0.0)(coded(label), rng())
    assert same["flip"] is False
    np.testing.assert_array_equal(same["gt_semantic_seg"], label)
    flags = {RandomFlip(0.5)(coded(label), rng(s))["flip"] for s in range(10)}
    assert flags == {True, False}


# -- PhotoMetricDistortion -----------------------------------------------------------------


def photo_sample(seed=0):
    img = np.random.default_rng(seed).integers(40, 216, (16, 16, 3), dtype=np.uint8)
    return {"img": img, "gt_semantic_seg": blocks(16, 16, 4)}


def test_photometric_changes_image_only():
    changed = 0
    for seed in range(8):
        sample = photo_sample(seed)
        img, label = sample["img"].copy(), sample["gt_semantic_seg"].copy()
        out = PhotoMetricDistortion()(sample, rng(seed))
        assert out["img"].shape == img.shape and out["img"].dtype == np.uint8
        np.testing.assert_array_equal(out["gt_semantic_seg"], label)
        changed += not np.array_equal(out["img"], img)
    assert changed >= 6


def test_photometric_brightness_is_a_uniform_shift():
    only_brightness = PhotoMetricDistortion(
        brightness_delta=32, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0
    )
    shifts = set()
    for seed in range(10):
        sample = photo_sample()
        img = sample["img"].astype(int)
        out = only_brightness(sample, rng(seed))["img"].astype(int)
        diff = np.unique(out - img)
        assert len(diff) == 1 and abs(diff[0]) <= 32  # every pixel moved by the same amount
        shifts.add(int(diff[0]))
    assert 0 in shifts and len(shifts) > 2


def test_photometric_saturation_zero_gives_grey_and_hue_keeps_value():
    desaturate = PhotoMetricDistortion(
        brightness_delta=0, contrast_range=(1, 1), saturation_range=(0, 0), hue_delta=0
    )
    outcomes = set()
    for seed in range(10):
        sample = photo_sample()
        img = sample["img"].copy()
        out = desaturate(sample, rng(seed))["img"]
        grey = (np.ptp(out.astype(int), axis=2) <= 1).all()
        assert grey or np.array_equal(out, img)
        outcomes.add(bool(grey))
    assert outcomes == {True, False}
    hue_only = PhotoMetricDistortion(
        brightness_delta=0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=18
    )
    for seed in range(6):
        sample = photo_sample()
        img = sample["img"].astype(int)
        out = hue_only(sample, rng(seed))["img"].astype(int)
        assert np.abs(out.max(axis=2) - img.max(axis=2)).max() <= 2  # V = max(r, g, b) kept


# -- Normalize, Pad, ToTensor --------------------------------------------------------------


def test_normalize_uses_rgb_imagenet_statistics():
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, 0] = (255, 0, 0)
    out = Normalize(IMAGENET_MEAN, IMAGENET_STD)({"img": img}, rng())["img"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(
        out[0, 0], [(255 - 123.675) / 58.395, -116.28 / 57.12, -103.53 / 57.375], rtol=1e-6
    )
    np.testing.assert_allclose(
        out[1, 1], [-123.675 / 58.395, -116.28 / 57.12, -103.53 / 57.375], rtol=1e-6
    )


def test_pad_fills_image_with_zero_and_label_with_ignore():
    img = np.full((5, 7, 3), 9.0, np.float32)
    label = np.full((5, 7), 3, np.uint8)
    out = Pad((8, 10))({"img": img, "gt_semantic_seg": label}, rng())
    assert out["img"].shape == (8, 10, 3) and out["pad_shape"] == (8, 10)
    assert (out["img"][:5, :7] == 9).all() and (out["gt_semantic_seg"][:5, :7] == 3).all()
    assert (out["img"][5:] == 0).all() and (out["img"][:, 7:] == 0).all()
    padded_label = out["gt_semantic_seg"]
    assert (padded_label[5:] == 255).all() and (padded_label[:, 7:] == 255).all()
    with pytest.raises(ValueError, match="crop it first"):
        Pad((4, 10))({"img": img, "gt_semantic_seg": label}, rng())


def test_to_tensor_layout_and_types():
    img = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    out = ToTensor()({"img": img, "gt_semantic_seg": np.full((2, 3), 255, np.uint8)}, rng())
    assert out["img"].shape == (3, 2, 3) and out["img"][1, 0, 2] == img[0, 2, 1]
    assert out["gt_semantic_seg"].dtype == torch.int64 and (out["gt_semantic_seg"] == 255).all()


# -- whole pipelines -----------------------------------------------------------------------


def test_train_pipeline_pads_small_images_and_is_reproducible():
    label = blocks(24, 32, 4, values=(0, 1, 2, 255))
    pipeline = train_pipeline(scale=(32, 24), ratio_range=(0.5, 0.5), crop_size=(20, 20))
    out = pipeline(coded(label), rng(1))  # resized to 12x16: padded to 20x20
    assert out["img"].shape == (3, 20, 20) and out["img_shape"] == (12, 16)
    assert (out["gt_semantic_seg"][12:] == 255).all() and (out["img"][:, 12:] == 0).all()
    assert set(out["gt_semantic_seg"].unique().tolist()) <= {0, 1, 2, 255}
    again = pipeline(coded(label), rng(1))
    assert torch.equal(out["img"], again["img"])
    other = pipeline(coded(label), rng(2))
    assert not torch.equal(out["img"], other["img"])


def test_eval_pipeline_keeps_original_label():
    label = blocks(40, 60, 4)
    out = eval_pipeline(scale=(30, 10))(coded(label), rng())
    assert out["img"].shape == (3, 10, 15) and out["img_shape"] == (10, 15)
    assert out["ori_shape"] == (40, 60)
    np.testing.assert_array_equal(out["gt_semantic_seg"].numpy(), label)
    assert isinstance(eval_pipeline(), Compose)


def test_resize_without_keep_ratio_uses_exact_width_and_height():
    out = Resize((10, 6), keep_ratio=False)(coded(blocks(40, 60, 4)), rng())
    assert out["img"].shape == (6, 10, 3) and out["gt_semantic_seg"].shape == (6, 10)


def test_colorize_paints_classes_and_ignore_black():
    painted = colorize(np.array([[0, 1], [255, 1]]), [(10, 20, 30), (40, 50, 60)])
    np.testing.assert_array_equal(
        painted, [[[10, 20, 30], [40, 50, 60]], [[0, 0, 0], [40, 50, 60]]]
    )
