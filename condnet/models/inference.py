"""Test-time inference in the mmsegmentation style, for any model.

Each function takes ``forward_fn(img) -> logits``: a callable mapping images
(B, 3, H, W) to logits (B, K, h, w) at any resolution (full, 1/8, ...), e.g. a
segmentation model in eval mode. Outputs are (B, K, H_out, W_out), bilinearly
resized (align_corners=False) to ``out_size`` (default: the image's size).

    whole_inference   the whole image in one forward pass
    slide_inference   overlapping crops, logits averaged where crops overlap
    aug_inference     multi-scale and flipped copies, averaged

These functions do not switch off autograd: wrap calls in ``torch.no_grad()``
(or ``torch.inference_mode()``) as you would around the model itself, or keep
gradients when you need them, e.g. for attribution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .inference_config import InferenceConfig, scale_factors, size_pair

__all__ = ["ADE20K_TTA_SCALES", "aug_inference", "slide_inference", "whole_inference"]

# The multi-scale test of the ADE20K configs of mmseg (and of CondNet).
ADE20K_TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

ForwardFn = Callable[[torch.Tensor], torch.Tensor]
Size = tuple[int, int]


def _check_img(img: object) -> torch.Tensor:
    if not isinstance(img, torch.Tensor):
        raise TypeError(f"img must be a torch.Tensor, got {type(img).__name__}")
    if img.dim() != 4 or img.shape[-2] == 0 or img.shape[-1] == 0:
        raise ValueError(f"img must have shape (B, C, H, W) with H, W > 0; got {tuple(img.shape)}")
    return img


def _out_size(out_size: object, img: torch.Tensor) -> Size:
    size = size_pair(out_size, "out_size")
    return (img.shape[-2], img.shape[-1]) if size is None else size


def _run(forward_fn: ForwardFn, img: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """forward_fn(img), checked to be (B, K, h, w) logits with the image's B."""
    logits = forward_fn(img)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"forward_fn must return logits of shape (B, K, h, w); got {got}")
    if logits.shape[0] != img.shape[0]:
        raise ValueError(
            f"forward_fn returned batch size {logits.shape[0]} for {img.shape[0]} images"
        )
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(
            f"forward_fn returned {logits.shape[1]} channels; num_classes={num_classes}"
        )
    return logits


def _resize(x: torch.Tensor, size: Size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    return num_classes


def whole_inference(
    forward_fn: ForwardFn, img: torch.Tensor, out_size: int | Size | None = None
) -> torch.Tensor:
    """Logits for the whole image in one pass, resized to ``out_size``.

    Args:
        forward_fn: images (B, C, H, W) -> logits (B, K, h, w).
        img: (B, C, H, W).
        out_size: (H_out, W_out) or an int; default (H, W).

    Returns:
        (B, K, H_out, W_out) logits in forward_fn's dtype.
    """
    img = _check_img(img)
    size = _out_size(out_size, img)
    return _resize(_run(forward_fn, img, None), size)


def slide_inference(
    forward_fn: ForwardFn,
    img: torch.Tensor,
    num_classes: int,
    crop_size: int | Size | None,
    stride: int | Size | None,
    out_size: int | Size | None = None,
) -> torch.Tensor:
    """Sliding-window inference, as mmseg's ``slide`` test mode.

    Windows of ``crop_size`` start every ``stride`` pixels; there are
    ``max(H - crop_h + stride_h - 1, 0) // stride_h + 1`` rows of them (columns
    alike), and the last row and column are shifted back to end at the image
    border, so every window lies inside the image. Each window's logits are
    resized to the window's size and summed into place; each pixel's sum is
    divided by the number of windows covering it. An image smaller than the
    crop is run as is (one smaller window, no padding), as mmseg does.

    Args:
        forward_fn: images -> logits (B, K, h, w) at any resolution.
        img: (B, C, H, W).
        num_classes: K, which forward_fn must return.
        crop_size, stride: int or (h, w) pair of positive ints; stride <= crop
            in each direction, so that no pixel is left uncovered.
        out_size: as in :func:`whole_inference`.

    Returns:
        (B, K, H_out, W_out) logits, float32 or wider.
    """
    img = _check_img(img)
    num_classes = _check_num_classes(num_classes)
    # Checks the window: None for either is an error in "slide" mode.
    window = InferenceConfig(
        "slide", size_pair(crop_size, "crop_size"), size_pair(stride, "stride")
    )
    assert window.crop_size is not None and window.stride is not None
    (crop_h, crop_w), (stride_h, stride_w) = window.crop_size, window.stride
    size = _out_size(out_size, img)
    B, _, H, W = img.shape
    rows = max(H - crop_h + stride_h - 1, 0) // stride_h + 1
    cols = max(W - crop_w + stride_w - 1, 0) // stride_w + 1
    total = None
    count = img.new_zeros((H, W), dtype=torch.float32)
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride_h + crop_h, H)
            x2 = min(col * stride_w + crop_w, W)
            y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
            logits = _run(forward_fn, img[:, :, y1:y2, x1:x2], num_classes)
            logits = _resize(logits, (y2 - y1, x2 - x1))
            if total is None:
                # Summed in float32 at least: a bf16 running sum would lose
                # bits with every overlapping window added.
                dtype = torch.promote_types(logits.dtype, torch.float32)
                total = logits.new_zeros((B, num_classes, H, W), dtype=dtype)
            total[:, :, y1:y2, x1:x2] += logits
            count[y1:y2, x1:x2] += 1
    assert total is not None  # rows, cols >= 1: at least one window ran
    return _resize(total / count.to(total.dtype), size)


def aug_inference(
    forward_fn: ForwardFn,
    img: torch.Tensor,
    num_classes: int,
    scales: float | Sequence[float] = (1.0,),
    flip: bool = False,
    mode: str = "whole",
    crop_size: int | Size | None = None,
    stride: int | Size | None = None,
    out_size: int | Size | None = None,
    output: str = "logits",
) -> torch.Tensor:
    """Test-time augmentation: several scales, optionally flipped, averaged.

    For each scale ``s`` the image is bilinearly resized to
    ``(int(H*s + 0.5), int(W*s + 0.5))`` (rounding half up, as mmcv does),
    run with ``mode`` ("whole" or "slide"; the slide windows keep
    ``crop_size`` and ``stride`` at every scale), and the result resized to
    ``out_size``. With ``flip``, each scale also runs on the horizontally
    flipped image, whose output is flipped back. The len(scales) * (1 + flip)
    results are averaged.

    Args:
        forward_fn, img, num_classes: as in :func:`slide_inference`.
        scales: positive factors (or one), e.g. :data:`ADE20K_TTA_SCALES`.
        flip: also run horizontally flipped copies.
        mode: "whole" or "slide"; "slide" needs ``crop_size`` and ``stride``.
        out_size: as in :func:`whole_inference`.
        output: "probs" averages softmax probabilities (mmseg's behaviour) and
            returns probabilities; "logits" averages the logits.

    Returns:
        (B, K, H_out, W_out) averaged logits or probabilities, float32 or wider.
    """
    img = _check_img(img)
    num_classes = _check_num_classes(num_classes)
    crop, step = size_pair(crop_size, "crop_size"), size_pair(stride, "stride")
    factors = scale_factors(scales, "scales")
    settings = InferenceConfig(mode, crop, step, factors, flip)  # checks them all
    if output not in ("logits", "probs"):
        raise ValueError(f"output must be 'logits' or 'probs'; got {output!r}")
    size = _out_size(out_size, img)
    H, W = img.shape[-2:]
    total, runs = None, 0
    for scale in settings.scales:
        scaled_size = (max(int(H * scale + 0.5), 1), max(int(W * scale + 0.5), 1))
        scaled = _resize(img, scaled_size)
        for flipped in (False, True) if settings.flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            if settings.mode == "slide":
                out = slide_inference(
                    forward_fn, view, num_classes, settings.crop_size, settings.stride
                )
            else:
                # Resized to the scaled image first, then to out_size, as mmseg
                # does (two bilinear steps differ slightly from one).
                out = _resize(_run(forward_fn, view, num_classes), (view.shape[-2], view.shape[-1]))
            out = _resize(out.flip(-1) if flipped else out, size)
            out = out.to(torch.promote_types(out.dtype, torch.float32))
            if output == "probs":
                out = out.softmax(dim=1)
            total = out if total is None else total + out
            runs += 1
    assert total is not None  # settings.scales is never empty
    return total / runs
