"""The base of every segmentation dataset: a list of (image, annotation) file pairs.

A sample goes through three stages in :meth:`SegDataset.__getitem__`:

1. **load**: decode the image (``HxWx3`` uint8 RGB) and annotation (``HxW``),
   check that their sizes match, apply ``reduce_zero_label`` and check that
   every label value is in ``[0, num_classes)`` or the ignore value;
2. **pipeline**: the transforms (see :mod:`condnet.data.transforms`), called as
   ``pipeline(results, rng)`` with a ``numpy.random.Generator``;
3. the resulting dict is returned (without a pipeline it holds numpy arrays).

Keys of the loaded dict: ``img``, ``gt_semantic_seg``, ``filename``,
``ann_filename``, ``ori_shape`` ``(H, W)``, ``img_shape`` ``(H, W)``, ``index``.

Randomness: ``dataset[(index, seed)]`` (what :class:`condnet.data.SeededSampler`
yields) runs the pipeline with ``numpy.random.default_rng(seed)``, so the
augmentation of a sample depends only on that seed. ``dataset[index]`` draws the
seed from torch's global generator, so it follows ``torch.manual_seed`` (and the
per-worker seeds torch gives ``DataLoader`` workers).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .loading import CorruptFileError, read_image, read_label
from .palette import Palette, as_palette, label_colormap

ON_CORRUPT = ("error", "skip")
Pipeline = Callable[[dict, np.random.Generator], dict]


def require_dir(path: Path, layout: str) -> Path:
    """Raise ``FileNotFoundError`` naming ``path`` and the expected ``layout`` if absent."""
    if not path.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {path}\nexpected layout:\n{layout}")
    return path


def read_split_file(path: Path, layout: str) -> list[str]:
    """The non-empty lines of a split file (one sample name per line)."""
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}\nexpected layout:\n{layout}")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [name for name in names if name]
    if not names:
        raise ValueError(f"split file {path} lists no samples")
    return names


def require_files(samples: Sequence[tuple[Path, Path]], layout: str, hint: str = "") -> None:
    """Raise ``FileNotFoundError`` listing missing images/annotations, if any."""
    missing = [str(p) for pair in samples for p in pair if not os.path.isfile(p)]
    if missing:
        shown = "\n  ".join(missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"{len(missing)} dataset file(s) not found:\n  {shown}{more}\n"
            f"expected layout:\n{layout}{hint}"
        )


def folder_samples(
    img_dir: Path, ann_dir: Path, img_suffix: str, ann_suffix: str, layout: str
) -> list[tuple[Path, Path]]:
    """Every ``img_dir/*img_suffix`` (sorted) paired with ``ann_dir/<stem>ann_suffix``."""
    require_dir(img_dir, layout)
    require_dir(ann_dir, layout)
    images = sorted(p for p in img_dir.iterdir() if p.name.endswith(img_suffix))
    if not images:
        raise FileNotFoundError(
            f"no '*{img_suffix}' images in {img_dir}\nexpected layout:\n{layout}"
        )
    samples = [(p, ann_dir / (p.name[: -len(img_suffix)] + ann_suffix)) for p in images]
    require_files(samples, layout)
    return samples


def split_samples(
    split_file: Path,
    img_dir: Path,
    ann_dir: Path,
    layout: str,
    img_suffix: str = ".jpg",
    ann_suffix: str = ".png",
) -> list[tuple[Path, Path]]:
    """``(img_dir/<name>img_suffix, ann_dir/<name>ann_suffix)`` per name in ``split_file``."""
    names = read_split_file(split_file, layout)
    samples = [(img_dir / f"{name}{img_suffix}", ann_dir / f"{name}{ann_suffix}") for name in names]
    require_files(samples, layout)
    return samples


class SegDataset(Dataset):
    """Semantic segmentation samples from a list of ``(image_path, annotation_path)``.

    Args:
        samples: the file pairs, in order (index ``i`` is ``samples[i]``).
        classes: class names; ``num_classes = len(classes)``. Defaults to ``CLASSES``.
        palette: one ``(r, g, b)`` per class. Defaults to ``PALETTE``, else the VOC map.
        pipeline: ``pipeline(results, rng) -> results``, e.g. :func:`train_pipeline`.
            ``None`` returns the loaded numpy arrays.
        reduce_zero_label: stored 0 becomes ``ignore_index`` and the other values
            shift down by one (for annotations where 0 means "other"/unlabelled).
        ignore_index: the label value that marks pixels to ignore (255).
        on_corrupt: ``"error"`` raises :class:`CorruptFileError` for an unreadable
            file; ``"skip"`` warns (naming the file) and returns the next sample
            (index + 1, wrapping around) instead.
    """

    CLASSES: tuple[str, ...] = ()
    PALETTE: Palette = ()

    def __init__(
        self,
        samples: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
        *,
        classes: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        pipeline: Pipeline | None = None,
        reduce_zero_label: bool = False,
        ignore_index: int = 255,
        on_corrupt: str = "error",
    ):
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        self.classes = tuple(classes if classes is not None else self.CLASSES)
        if not self.classes:
            raise ValueError(f"{type(self).__name__} needs at least one class name")
        if ignore_index < len(self.classes):
            raise ValueError(
                f"{len(self.classes)} classes do not fit below ignore_index {ignore_index}"
            )
        if palette is None:
            palette = self.PALETTE if len(self.PALETTE) == len(self.classes) else None
        if palette is None:
            palette = label_colormap(min(len(self.classes), 256))
        self.palette = as_palette(palette, len(self.classes))
        self.samples = [(Path(img), Path(ann)) for img, ann in samples]
        if not self.samples:
            raise ValueError(f"{type(self).__name__} has no samples")
        self.pipeline = pipeline
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.on_corrupt = on_corrupt

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} samples, {self.num_classes} classes, "
            f"reduce_zero_label={self.reduce_zero_label}, on_corrupt={self.on_corrupt!r})"
        )

    # -- loading -----------------------------------------------------------------------

    def load(self, index: int) -> dict:
        """Decode and check sample ``index``; raises on any problem (see module doc)."""
        img_path, ann_path = self.samples[index]
        img = read_image(img_path)
        label = read_label(ann_path)
        if img.shape[:2] != label.shape:
            raise ValueError(
                f"image and annotation sizes differ: {img_path} is "
                f"{img.shape[1]}x{img.shape[0]} (WxH) but {ann_path} is "
                f"{label.shape[1]}x{label.shape[0]}"
            )
        if self.reduce_zero_label:
            label = self._reduce_zero_label(label)
        self._check_label_values(label, ann_path)
        shape = tuple(img.shape[:2])
        return {
            "img": img,
            "gt_semantic_seg": label,
            "filename": str(img_path),
            "ann_filename": str(ann_path),
            "ori_shape": shape,
            "img_shape": shape,
            "index": index,
        }

    def _reduce_zero_label(self, label: np.ndarray) -> np.ndarray:
        keep = (label == 0) | (label == self.ignore_index)
        if label.dtype == np.uint8 and self.ignore_index <= 255:
            reduced = label - np.uint8(1)  # 0 wraps to 255; overwritten just below
        else:
            reduced = label.astype(np.int32) - 1
        reduced[keep] = self.ignore_index
        return reduced

    def _check_label_values(self, label: np.ndarray, ann_path: Path) -> None:
        k, ignore = self.num_classes, self.ignore_index
        if label.dtype == np.uint8:
            counts = np.bincount(label.ravel(), minlength=256)
            bad = np.flatnonzero(counts[k:]) + k
        else:
            bad = np.unique(label[(label < 0) | (label >= k)])
        bad = bad[bad != ignore]
        if bad.size:
            if self.reduce_zero_label:
                stored = ", ".join(str(v + 1) for v in bad[:10].tolist())
                reduced = ", ".join(str(v) for v in bad[:10].tolist())
                values = f"stored values {{{stored}}} ({{{reduced}}} after reduce_zero_label)"
            else:
                values = "values {" + ", ".join(str(v) for v in bad[:10].tolist()) + "}"
            raise ValueError(
                f"{ann_path}: label {values} outside [0, {k}) and not the ignore value "
                f"{ignore} ({type(self).__name__} has {k} classes)"
            )

    # -- sampling ----------------------------------------------------------------------

    def _load_or_skip(self, index: int) -> dict:
        n = len(self)
        for attempt in range(n):
            current = (index + attempt) % n
            try:
                return self.load(current)
            except CorruptFileError as err:
                if self.on_corrupt == "error":
                    raise
                warnings.warn(
                    f"skipping unreadable sample {current} ({err}); "
                    f"using sample {(current + 1) % n} instead",
                    RuntimeWarning,
                    stacklevel=3,
                )
        raise RuntimeError(f"all {n} samples of {type(self).__name__} are unreadable")

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        if isinstance(key, tuple):
            index, seed = key
            rng = np.random.default_rng(seed)
        else:
            # One seed from torch's global generator: reproducible under torch.manual_seed,
            # and in DataLoader workers (which torch seeds per worker and epoch).
            index = key
            rng = np.random.default_rng(int(torch.randint(0, 2**63 - 1, ()).item()))
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        results = self._load_or_skip(index % len(self))
        if self.pipeline is not None:
            results = self.pipeline(results, rng)
        return results
