"""Composable transforms on the sample dict, after mmsegmentation's pipeline steps.

Every transform is called as ``transform(results, rng)`` where ``results`` is the
sample dict (``img``: ``HxWx3`` uint8 RGB, later float32 once normalised;
``gt_semantic_seg``: ``HxW`` integer label map) and ``rng`` a
``numpy.random.Generator``; it returns the updated dict. Labels are only ever
resampled by nearest neighbour, so they keep exactly their original values.

Sizes follow mmseg: ``crop_size`` and ``Pad.size`` are ``(height, width)``;
``Resize.scale`` is ``(long_edge, short_edge)`` bounds with ``keep_ratio`` (e.g.
``(2048, 512)``) and ``(width, height)`` without it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

LABEL_KEY = "gt_semantic_seg"
# The resampling filters: Image.Resampling from Pillow 9.1, on Image itself before.
_RESAMPLING = getattr(Image, "Resampling", Image)


def _resize_label(label: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (values are never mixed)."""
    if label.dtype == np.uint8:
        return np.asarray(Image.fromarray(label).resize((width, height), _RESAMPLING.NEAREST))
    rows = np.minimum((np.arange(height) + 0.5) * label.shape[0] / height, label.shape[0] - 1)
    cols = np.minimum((np.arange(width) + 0.5) * label.shape[1] / width, label.shape[1] - 1)
    return label[rows.astype(np.intp)[:, None], cols.astype(np.intp)[None, :]]


class Resize:
    """Resize the image (bilinear) and the label (nearest).

    With ``keep_ratio`` the image is rescaled by one factor so that its long edge
    fits ``max(scale)`` and its short edge ``min(scale)``: for ``scale=(2048, 512)``
    a 683x512 image stays 683x512. With ``ratio_range=(lo, hi)`` the scale is
    first multiplied by a ratio drawn uniformly from ``[lo, hi)`` (mmseg's
    ``Resize(img_scale, ratio_range)``), i.e. a random rescale by 0.5x-2x.

    ``resize_label=False`` leaves the label at its original resolution (evaluation).
    Pillow's bilinear filter antialiases when shrinking. Records ``img_shape``
    and ``scale_factor`` ``(sx, sy)``.
    """

    def __init__(
        self,
        scale: Sequence[int] = (2048, 512),
        ratio_range: Sequence[float] | None = None,
        keep_ratio: bool = True,
        resize_label: bool = True,
    ):
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"scale must be two positive sizes, got {scale}")
        if ratio_range is not None and not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f"ratio_range must be (lo, hi) with 0 < lo <= hi, got {ratio_range}")
        self.scale = tuple(int(s) for s in scale)
        self.ratio_range = None if ratio_range is None else tuple(float(r) for r in ratio_range)
        self.keep_ratio = keep_ratio
        self.resize_label = resize_label

    def target_size(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """The output ``(width, height)`` for an input of ``height x width``."""
        scale = self.scale
        if self.ratio_range is not None:
            lo, hi = self.ratio_range
            ratio = rng.random() * (hi - lo) + lo
            scale = (int(scale[0] * ratio), int(scale[1] * ratio))
        if not self.keep_ratio:
            return scale[0], scale[1]
        factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
        return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        img = results["img"]
        height, width = img.shape[:2]
        new_w, new_h = self.target_size(height, width, rng)
        if (new_w, new_h) != (width, height):
            resized = Image.fromarray(img).resize((new_w, new_h), _RESAMPLING.BILINEAR)
            results["img"] = np.asarray(resized)
            if self.resize_label and LABEL_KEY in results:
                results[LABEL_KEY] = _resize_label(results[LABEL_KEY], new_w, new_h)
        results["img_shape"] = (new_h, new_w)
        results["scale_factor"] = (new_w / width, new_h / height)
        return results

    def __repr__(self) -> str:
        return (
            f"Resize(scale={self.scale}, ratio_range={self.ratio_range}, "
            f"keep_ratio={self.keep_ratio}, resize_label={self.resize_label})"
        )


class RandomCrop:
    """Crop a random ``crop_size`` ``(h, w)`` window (the whole side if smaller).

    With ``cat_max_ratio < 1`` the window is redrawn (up to ``max_retries``
    times, 10 as in mmseg) until it holds at least two classes and no class
    covers ``cat_max_ratio`` or more of its labelled pixels (``ignore_index``
    pixels are not counted). If no draw qualifies, the last one is used, so the
    bound is best-effort on images dominated by one class. Records ``crop_bbox``
    ``(top, left, height, width)`` and ``img_shape``.
    """

    def __init__(
        self,
        crop_size: Sequence[int] = (512, 512),
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        max_retries: int = 10,
    ):
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be (height, width) > 0, got {crop_size}")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"cat_max_ratio must be in (0, 1], got {cat_max_ratio}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_retries = max_retries

    def _draw(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        top = int(rng.integers(0, max(height - self.crop_size[0], 0) + 1))
        left = int(rng.integers(0, max(width - self.crop_size[1], 0) + 1))
        return top, left

    def _acceptable(self, window: np.ndarray) -> bool:
        if window.dtype == np.uint8:
            counts = np.bincount(window.ravel(), minlength=256)
            if 0 <= self.ignore_index < 256:
                counts[self.ignore_index] = 0
            counts = counts[counts > 0]
        else:
            values, counts = np.unique(window, return_counts=True)
            counts = counts[values != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        img = results["img"]
        height, width = img.shape[:2]
        ch, cw = min(self.crop_size[0], height), min(self.crop_size[1], width)
        top, left = self._draw(height, width, rng)
        label = results.get(LABEL_KEY)
        if self.cat_max_ratio < 1 and label is not None:
            for _ in range(self.max_retries):
                if self._acceptable(label[top : top + ch, left : left + cw]):
                    break
                top, left = self._draw(height, width, rng)
        results["img"] = img[top : top + ch, left : left + cw]
        if label is not None:
            results[LABEL_KEY] = label[top : top + ch, left : left + cw]
        results["crop_bbox"] = (top, left, ch, cw)
        results["img_shape"] = (ch, cw)
        return results

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Mirror image and label left-right with probability ``prob``; records ``flip``."""

    def __init__(self, prob: float = 0.5):
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        flip = bool(rng.random() < self.prob)
        if flip:
            results["img"] = results["img"][:, ::-1]
            if LABEL_KEY in results:
                results[LABEL_KEY] = results[LABEL_KEY][:, ::-1]
        results["flip"] = flip
        return results

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


def _affine_lut(alpha: float, beta: float) -> list[int]:
    """``clip(v * alpha + beta, 0, 255)`` for v in 0..255, truncated to uint8 as mmseg does."""
    return np.clip(np.arange(256) * alpha + beta, 0, 255).astype(np.uint8).tolist()


class PhotoMetricDistortion:
    """mmseg's photometric distortion of the image (the label is untouched).

    Each step happens with probability 1/2, in this order: brightness
    (``+ U(-brightness_delta, brightness_delta)``); contrast (``* U(contrast_range)``)
    either here or last (a coin decides); saturation (HSV ``S * U(saturation_range)``);
    hue (HSV ``H + randint(-hue_delta, hue_delta)`` in OpenCV's 0-180 hue units).
    Works on uint8 like mmseg (values are clipped and truncated after each step);
    saturation and hue share one HSV round trip (Pillow's 8-bit HSV).
    """

    def __init__(
        self,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        img = results["img"]
        if img.dtype != np.uint8:
            raise TypeError(
                "PhotoMetricDistortion expects the uint8 image; put it before Normalize"
            )
        # Draw everything first, in a fixed order, so the stream of draws is fixed.
        brightness = (
            rng.uniform(-self.brightness_delta, self.brightness_delta) if rng.integers(2) else None
        )
        contrast_first = bool(rng.integers(2))
        low, high = self.contrast_range
        contrast = rng.uniform(low, high) if rng.integers(2) else None
        low, high = self.saturation_range
        saturation = rng.uniform(low, high) if rng.integers(2) else None
        hue = int(rng.integers(-self.hue_delta, self.hue_delta + 1)) if rng.integers(2) else None

        if saturation == 1.0:  # identity steps: skip the lossy 8-bit HSV round trip
            saturation = None
        if hue is not None and round(hue * 256 / 180) % 256 == 0:
            hue = None
        image = Image.fromarray(np.ascontiguousarray(img))
        if brightness is not None:
            image = image.point(_affine_lut(1.0, brightness) * 3)
        if contrast is not None and contrast_first:
            image = image.point(_affine_lut(contrast, 0.0) * 3)
        if saturation is not None or hue is not None:
            h, s, v = image.convert("HSV").split()
            if saturation is not None:
                s = s.point(_affine_lut(saturation, 0.0))
            if hue is not None:
                shift = round(hue * 256 / 180)  # OpenCV hue units (0-180) -> Pillow's (0-256)
                h = h.point([(i + shift) % 256 for i in range(256)])
            image = Image.merge("HSV", (h, s, v)).convert("RGB")
        if contrast is not None and not contrast_first:
            image = image.point(_affine_lut(contrast, 0.0) * 3)
        results["img"] = np.asarray(image)
        return results

    def __repr__(self) -> str:
        return (
            f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
            f"contrast_range={self.contrast_range}, saturation_range="
            f"{self.saturation_range}, hue_delta={self.hue_delta})"
        )


class Normalize:
    """``(img - mean) / std`` per RGB channel, in 0-255 units; the image becomes float32.

    Images are decoded as RGB, so ``mean``/``std`` are in RGB order (what mmseg
    calls ``to_rgb=True`` with its BGR decoder). Records ``img_norm_cfg``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
        if (self.inv_std <= 0).any() or not np.isfinite(self.inv_std).all():
            raise ValueError(f"std must be positive, got {std}")

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        img = np.array(results["img"], dtype=np.float32)  # always a fresh array
        img -= self.mean
        img *= self.inv_std
        results["img"] = img
        results["img_norm_cfg"] = {
            "mean": self.mean.ravel().tolist(),
            "std": (1.0 / self.inv_std).ravel().tolist(),
        }
        return results

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={(1 / self.inv_std).ravel()})"


class Pad:
    """Pad image and label at the bottom/right to ``size`` ``(h, w)``.

    Image pixels get ``pad_val`` (0: after :class:`Normalize` that is the mean
    colour), label pixels ``seg_pad_val`` (255, ignored). An input larger than
    ``size`` is an error (crop first). Records ``pad_shape``.
    """

    def __init__(
        self, size: Sequence[int] = (512, 512), pad_val: float = 0, seg_pad_val: int = 255
    ):
        self.size = (int(size[0]), int(size[1]))
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def _pad(self, array: np.ndarray, value, name: str) -> np.ndarray:
        height, width = array.shape[:2]
        if height > self.size[0] or width > self.size[1]:
            raise ValueError(
                f"cannot pad {name} of size {height}x{width} (HxW) to the smaller "
                f"{self.size[0]}x{self.size[1]}; crop it first"
            )
        if (height, width) == self.size:
            return array
        out = np.full(self.size + array.shape[2:], value, dtype=array.dtype)
        out[:height, :width] = array
        return out

    def __call__(self, results: dict, rng: np.random.Generator) -> dict:
        results["img"] = self._pad(results["img"], self.pad_val, "image")
        if LABEL_KEY in results:
            results[LABEL_KEY] = self._pad(results[LABEL_KEY], self.seg_pad_val, "label")
        results["pad_shape"] = self.size
        return results

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val}, seg_pad_val={self.seg_pad_val})"
