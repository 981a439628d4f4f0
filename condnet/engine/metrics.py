"""Semantic segmentation metrics from a confusion matrix, as mmseg computes them.

:class:`ConfusionMatrix` counts ``(label, prediction)`` pixel pairs in a K x K
int64 matrix on the model's device (one ``torch.bincount`` per update, no host
round trip), sums it across ranks with :meth:`ConfusionMatrix.all_reduce`, and
turns it into the usual numbers with :meth:`ConfusionMatrix.compute`:

``aAcc``
    correctly labelled pixels / labelled pixels (over all classes).
``IoU[k]``
    ``|pred = k and label = k| / |pred = k or label = k|``; NaN when class k
    appears in neither the labels nor the predictions.
``Acc[k]``
    ``|pred = k and label = k| / |label = k|``; NaN when no pixel is labelled k.
``mIoU``, ``mAcc``
    means over the classes whose value is not NaN (mmseg's ``np.nanmean``), so an
    absent class does not count as 0. A class that is predicted but never
    labelled has IoU 0 and Acc NaN: it lowers mIoU but not mAcc.

Pixels labelled ``ignore_index`` are left out entirely.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["ConfusionMatrix", "format_table"]


def _as_int_tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integer class indices; got dtype {value.dtype} "
            "(take argmax(1) of the logits first)"
        )
    return value


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN when there are none (without numpy's warning)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


class ConfusionMatrix:
    """Pixel counts ``matrix[label, pred]`` over a whole evaluation.

    Args:
        num_classes: K; labels and predictions must be in ``[0, K)``.
        ignore_index: label value of pixels that are not scored (255).
        device: where the counts live (put it on the model's device).

    Example::

        cm = ConfusionMatrix(150, device="cuda")
        for img, label in data:
            cm.update(model.predict(img).argmax(1), label)
        cm.all_reduce()          # no-op without torch.distributed
        print(format_table(cm.compute(), class_names))
    """

    def __init__(
        self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an int; got {ignore_index!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index {ignore_index} is a valid class index for {num_classes} classes"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(
            (num_classes, num_classes), dtype=torch.int64, device=torch.device(device)
        )

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Count one image ``(H, W)`` or a batch ``(B, H, W)`` of predictions against labels.

        Both must be integer tensors (or numpy arrays) of the same shape; they are
        moved to the matrix's device.
        """
        pred = _as_int_tensor(pred, "pred")
        label = _as_int_tensor(label, "label")
        if pred.shape != label.shape:
            raise ValueError(
                f"pred and label must have the same shape; got pred {tuple(pred.shape)} and "
                f"label {tuple(label.shape)} (resize the prediction to the label's size)"
            )
        if pred.dim() not in (2, 3):
            raise ValueError(f"pred and label must be (H, W) or (B, H, W); got {tuple(pred.shape)}")
        k = self.num_classes
        pred = pred.to(self.device, torch.int64, non_blocking=True).reshape(-1)
        label = label.to(self.device, torch.int64, non_blocking=True).reshape(-1)
        keep = label != self.ignore_index
        pred, label = pred[keep], label[keep]
        if label.numel() == 0:
            return
        # One fused check instead of four host syncs; bincount would silently count
        # out-of-range values into the wrong cells.
        lo = torch.minimum(pred.min(), label.min())
        hi = torch.maximum(pred.max(), label.max())
        if lo.item() < 0 or hi.item() >= k:
            bad_label = label[(label < 0) | (label >= k)].unique()[:10].tolist()
            bad_pred = pred[(pred < 0) | (pred >= k)].unique()[:10].tolist()
            raise ValueError(
                f"class indices must be in [0, {k}) (or ignore_index {self.ignore_index} in the "
                f"label); got label values {bad_label} and pred values {bad_pred} outside it"
            )
        counts = torch.bincount(label * k + pred, minlength=k * k)
        self.matrix += counts.reshape(k, k)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all ranks (in place; call once, after the last update).

        Does nothing unless ``torch.distributed`` is initialised. NCCL reduces on
        the GPU, gloo on the CPU; the matrix returns to its own device either way.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        if dist.get_backend() == "nccl":
            comm = torch.device("cuda", torch.cuda.current_device())
        else:
            comm = torch.device("cpu")
        buffer = self.matrix.to(comm)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        self.matrix.copy_(buffer.to(self.device))
        return self

    def compute(self) -> dict:
        """``{"aAcc", "mIoU", "mAcc"}`` (floats in [0, 1]) and per-class ``"IoU"``, ``"Acc"``
        (lists of K floats, NaN where undefined); see the module docstring."""
        matrix = self.matrix.cpu().numpy().astype(np.float64)
        intersect = np.diag(matrix)
        area_label = matrix.sum(axis=1)
        area_pred = matrix.sum(axis=0)
        union = area_label + area_pred - intersect
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = intersect / union
            acc = intersect / area_label
        total = area_label.sum()
        return {
            "aAcc": float(intersect.sum() / total) if total else math.nan,
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }


def _percent(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A boxed text table; the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        parts = [
            f" {c:<{w}} " if i == 0 else f" {c:>{w}} "
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "|" + "|".join(parts) + "|"

    return [rule, line(header), rule, *(line(r) for r in rows), rule]


def format_table(results: Mapping, class_names: Sequence[str]) -> str:
    """The per-class IoU/Acc table and a summary table of aAcc/mIoU/mAcc, in percent.

    ``results`` is :meth:`ConfusionMatrix.compute`'s output; NaN prints as ``nan``
    (a class absent from the labels and predictions).
    """
    missing = [key for key in ("aAcc", "mIoU", "mAcc", "IoU", "Acc") if key not in results]
    if missing:
        raise ValueError(f"results lacks {missing}; pass ConfusionMatrix.compute()'s output")
    names = [str(name) for name in class_names]
    if len(names) != len(results["IoU"]) or len(names) != len(results["Acc"]):
        raise ValueError(
            f"class_names has {len(names)} names for {len(results['IoU'])} classes in results"
        )
    rows = [
        [name, _percent(iou), _percent(acc)]
        for name, iou, acc in zip(names, results["IoU"], results["Acc"], strict=True)
    ]
    summary = [[_percent(results[key]) for key in ("aAcc", "mIoU", "mAcc")]]
    lines = ["per class results:", *_table(["Class", "IoU", "Acc"], rows)]
    lines += ["Summary:", *_table(["aAcc", "mIoU", "mAcc"], summary)]
    return "\n".join(lines)
