"""The evaluation loop: predict every image once, score it, optionally draw it.

:func:`evaluate` works in one process or under ``torchrun``: rank ``r`` of ``W``
takes images ``r, r + W, r + 2W, ...`` (no padding, so every image is counted
exactly once, unlike a padded ``DistributedSampler``), and the confusion
matrices are summed across ranks before the metrics are computed, so every rank
returns the same numbers.

The dataset is an evaluation dataset (``condnet.data.eval_pipeline``): ``img``
is the resized, normalised (3, h, w) image and ``gt_semantic_seg`` the (H, W)
label at the original size ``ori_shape``, where predictions are scored.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from condnet.data import SegDataset, collate_samples
from condnet.models import InferenceConfig, Segmentor

from .amp import AMP_DTYPES, autocast
from .metrics import ConfusionMatrix
from .visualize import denormalize, guidance_grid, overlay, save_image

__all__ = ["evaluate", "has_guidance"]


def has_guidance(model: torch.nn.Module) -> bool:
    """Whether ``model.decode`` returns guide logits (a CondNet conditional classifier):
    :attr:`condnet.models.Segmentor.has_guidance`, False for other models."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return bool(getattr(model, "has_guidance", False))


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Progress:
    """``eval: done/total, N img/s`` on stderr: one rewritten line on a terminal,
    otherwise a line about every 5% (log files stay short)."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self.total, self.enabled, self.label = total, enabled and total > 0, label
        self.tty = sys.stderr.isatty()
        self.every = max(1, math.ceil(total / 20))
        self.start = time.perf_counter()
        self.done = 0

    def step(self, count: int) -> None:
        if not self.enabled:
            return
        before, self.done = self.done, self.done + count
        if (
            not self.tty
            and self.done < self.total
            and before // self.every == self.done // self.every
        ):
            return
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        text = f"{self.label}: {self.done}/{self.total} images, {rate:.2f} img/s"
        end = "\n" if not self.tty or self.done >= self.total else ""
        print(("\r" if self.tty else "") + text, end=end, file=sys.stderr, flush=True)


def _guide_logits(model: Segmentor, img: torch.Tensor) -> torch.Tensor:
    """The guide logits of a CondNet model (``has_guidance`` was checked first)."""
    _, guide = model.decode(img)
    if guide is None:
        raise ValueError("the model's decode head produced no guide logits (plain classifier)")
    return guide


def _stem(filename: object, index: int) -> str:
    return Path(str(filename)).stem if filename else f"{index:06d}"


def _original_image(img: torch.Tensor, meta: dict, size: tuple[int, int]):
    """The input picture as uint8 (H, W, 3) at ``size`` (undo Normalize and the resize)."""
    if tuple(img.shape[-2:]) != tuple(size):
        img = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    return denormalize(img, meta.get("img_norm_cfg"))


def _samples(batch: dict) -> list[dict]:
    """A collated batch back to per-sample dicts (images of different sizes arrive as lists)."""
    count = len(batch["img"])
    return [{key: value[i] for key, value in batch.items()} for i in range(count)]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset,
    *,
    num_classes: int,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    device: str | torch.device = "cpu",
    inference: InferenceConfig | None = None,
    amp: str | None = None,
    show_dir: str | os.PathLike | None = None,
    opacity: float = 0.5,
    guidance_dir: str | os.PathLike | None = None,
    guidance_accuracy: bool = False,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    ignore_index: int = 255,
) -> dict:
    """Score ``model`` on ``dataset``; returns :meth:`ConfusionMatrix.compute` on every rank.

    Args:
        model: a :class:`~condnet.models.Segmentor` (a DDP wrapper is unwrapped);
            moved to ``device``, run in eval mode, and put back in its previous
            mode afterwards (the trainer calls this mid-training).
        dataset: an evaluation dataset (see the module docstring).
        num_classes, class_names, palette: of the dataset.
        device: where to run (``"cuda"`` is the current CUDA device).
        inference: how ``model.predict`` runs (None: the model's ``test_cfg``);
            the tools resolve it with :func:`condnet.models.resolve_inference`.
        amp: None, ``"bf16"`` or ``"fp16"``: ``torch.autocast`` on ``device``.
        show_dir: write ``<stem>.png``, the prediction over the image (``opacity``).
        guidance_dir: write ``<stem>.png``, the guidance-map grid of the classes
            in the label or the prediction (CondNet models only).
        guidance_accuracy: also score the guide logits (CondNet models only):
            ``results["acc_guidance"]`` is the fraction of pixels whose guide
            argmax is the label, counted like the training loss's
            ``acc_guidance`` (label nearest-resized to the guide logits of the
            whole resized image, ``ignore_index`` left out). It costs one
            more forward per image (``model.decode``) unless ``guidance_dir``
            already runs it.
        batch_size, num_workers: of the data loader (each image is still
            predicted at its own size).
        progress: print progress on rank 0 to stderr.
        ignore_index: label value that is not scored.
    """
    if amp is not None and amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None or one of {tuple(AMP_DTYPES)}; got {amp!r}")
    if len(class_names) != num_classes or len(palette) != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but class_names has {len(class_names)} names and "
            f"palette {len(palette)} colours"
        )
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    if not isinstance(model, Segmentor):
        raise TypeError(
            "model must be a condnet.models.Segmentor or a DistributedDataParallel of one; "
            f"got {type(model).__name__}"
        )
    model_classes = getattr(model, "num_classes", num_classes)
    if model_classes != num_classes:
        raise ValueError(
            f"the model predicts {model_classes} classes; the dataset has {num_classes}"
        )
    for name, wanted in (
        ("guidance_dir", guidance_dir is not None),
        ("guidance_accuracy", guidance_accuracy),
    ):
        if wanted and not has_guidance(model):
            raise ValueError(
                f"{name} needs a CondNet model (conditional classifier): this model's decode "
                "head has a plain classifier, which produces no guidance maps"
            )
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world = _rank_world()

    # Keys (index, 0) run SegDataset's pipeline with a fixed generator instead of
    # drawing a seed from torch's global one, so evaluating mid-training leaves the
    # training RNG untouched; the loader gets its own generator for the same reason.
    indices = range(rank, len(dataset), world)
    keys: list[Any] = (  # Subset passes them through to the dataset
        [(i, 0) for i in indices] if isinstance(dataset, SegDataset) else list(indices)
    )
    loader = DataLoader(
        Subset(dataset, keys),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_samples,
        generator=torch.Generator(),
        pin_memory=device.type == "cuda",
    )
    show_dir = Path(show_dir) if show_dir is not None else None
    guidance_dir = Path(guidance_dir) if guidance_dir is not None else None

    confusion = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    guide_counts = torch.zeros(2, dtype=torch.float64, device=device)  # correct, scored
    label = "eval" if world == 1 else f"eval (rank 0 of {world})"
    bar = _Progress(len(keys), progress and rank == 0, label)
    was_training = model.training
    model.to(device).eval()
    try:
        for batch in loader:
            for sample in _samples(batch):
                img = sample["img"].to(device, non_blocking=True)[None]
                gt = sample["gt_semantic_seg"].to(device, non_blocking=True)
                size = tuple(gt.shape[-2:])
                with autocast(device.type, amp):
                    logits = model.predict(img, inference, out_size=size)
                pred = logits.argmax(1)[0]
                confusion.update(pred, gt)
                stem = _stem(sample.get("filename"), int(sample.get("index", 0)))
                if show_dir is not None or guidance_dir is not None:
                    picture = _original_image(sample["img"], sample, size)
                if show_dir is not None:
                    save_image(
                        overlay(picture, pred.cpu().numpy(), palette, opacity),
                        show_dir / f"{stem}.png",
                    )
                if guidance_dir is not None or guidance_accuracy:
                    with autocast(device.type, amp):
                        guide = _guide_logits(model, img)
                if guidance_accuracy:
                    small = F.interpolate(
                        gt[None, None].float(), size=guide.shape[-2:], mode="nearest"
                    )
                    small = small[0, 0].long()
                    scored = small != ignore_index
                    guide_counts[0] += ((guide[0].argmax(0) == small) & scored).sum()
                    guide_counts[1] += scored.sum()
                if guidance_dir is not None:
                    probs = F.interpolate(
                        guide.float(), size=size, mode="bilinear", align_corners=False
                    ).softmax(1)
                    present = torch.cat([gt[gt != ignore_index].unique(), pred.unique()])
                    ids = present.unique().tolist()
                    grid = guidance_grid(picture, probs[0], ids, class_names, palette)
                    save_image(grid, guidance_dir / f"{stem}.png")
                bar.step(1)
    finally:
        model.train(was_training)
    confusion.all_reduce()
    results = confusion.compute()
    if guidance_accuracy:
        if world > 1:
            dist.all_reduce(guide_counts)
        results["acc_guidance"] = float(guide_counts[0] / guide_counts[1].clamp(min=1))
    return results
