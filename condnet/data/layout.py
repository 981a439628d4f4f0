"""The constructor every dataset class of :mod:`condnet.data` shares: a class declares
where its files are and which settings a user may change; :class:`LayoutDataset`
finds the samples and builds the :class:`~condnet.data.SegDataset`.

A dataset class declares, as class attributes:

- ``FOLDERS``: a :class:`DatasetFolders`, the image and annotation folders relative
  to the root, the file suffixes and, for datasets that list their samples, the
  split file;
- ``SPLITS``: the split names a user may pass and the folder name each stands for
  (``None``: any name, used as given);
- ``OPTIONS``: the keyword arguments its constructor takes; a setting left out is
  fixed by the dataset (Cityscapes' train ids start at 0, so it takes no
  ``reduce_zero_label``);
- ``REDUCE_ZERO_LABEL`` (the default, or the fixed value), ``DEFAULT_ROOT``,
  ``LAYOUT`` (shown in the errors), ``CLASSES`` and ``PALETTE``.

The constructor's signature (what ``inspect.signature`` and ``help`` show, and what a
config's ``data.dataset_kwargs`` are checked against) is made from these, so each
class keeps exactly the arguments it documents. A dataset whose files need more than
the declared folders (VOC's SBD masks, Cityscapes' city folders) overrides
:meth:`LayoutDataset.find_samples`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .base import SegDataset, folder_samples, require_dir, split_samples

__all__ = ["DatasetFolders", "LayoutDataset"]


@dataclass(frozen=True)
class DatasetFolders:
    """Where a dataset's files are, relative to its root, with ``/`` between folders.

    A path part ``{split}`` stands for the split's folder (and is left out when the
    split is None); ``{split}`` inside a name (``"{split}.txt"``) is replaced.

    Args:
        img_dir, ann_dir: the folders of the images and of the annotations.
        img_suffix, ann_suffix: what the file names end with; an image
            ``<name><img_suffix>`` pairs with the annotation ``<name><ann_suffix>``.
        split_file: a text file listing the split's sample names, one per line;
            None: every image in ``img_dir``, sorted by name.
    """

    img_dir: str
    ann_dir: str
    img_suffix: str = ".jpg"
    ann_suffix: str = ".png"
    split_file: str | None = None


# Every keyword argument a dataset class may take, with its annotation and default
# (None: the class's declaration gives it).
_OPTIONS: dict[str, tuple[str, object]] = {
    "pipeline": ("Pipeline | None", None),
    "reduce_zero_label": ("bool", None),
    "on_corrupt": ("str", "error"),
    "ignore_index": ("int", 255),
    "img_suffix": ("str", None),
    "ann_suffix": ("str", None),
    "classes": ("Sequence[str] | None", None),
    "palette": ("Sequence[Sequence[int]] | None", None),
}


class LayoutDataset(SegDataset):
    """A :class:`~condnet.data.SegDataset` whose samples are found from its declared
    folders (see the module docstring); subclasses declare, this constructs.

    ``dataset.root`` is the root as a ``Path``; ``dataset.split`` is the split's
    folder name (``SPLITS[split]``), or the split as given.
    """

    FOLDERS: ClassVar[DatasetFolders]
    SPLITS: ClassVar[Mapping[str, str] | None] = None
    OPTIONS: ClassVar[tuple[str, ...]] = ()
    # The constructor's positional arguments; "classes" only where names must be given.
    POSITIONAL: ClassVar[tuple[str, ...]] = ("root", "split")
    REDUCE_ZERO_LABEL: ClassVar[bool] = False
    DEFAULT_ROOT: ClassVar[str | None] = None
    DEFAULT_SPLIT: ClassVar[str | None] = "train"
    LAYOUT: ClassVar[str] = ""
    __signature__: ClassVar[inspect.Signature]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        unknown = [name for name in cls.OPTIONS if name not in _OPTIONS]
        if unknown:
            raise TypeError(f"{cls.__name__}.OPTIONS: unknown {unknown}; valid: {list(_OPTIONS)}")
        cls.__signature__ = cls._declared_signature()

    @classmethod
    def _default(cls, option: str) -> object:
        if option == "reduce_zero_label":
            return cls.REDUCE_ZERO_LABEL
        if option in ("img_suffix", "ann_suffix"):
            return getattr(cls.FOLDERS, option)
        return _OPTIONS[option][1]

    @classmethod
    def _declared_signature(cls) -> inspect.Signature:
        param = inspect.Parameter
        defaults = {
            "root": param.empty if cls.DEFAULT_ROOT is None else cls.DEFAULT_ROOT,
            "split": cls.DEFAULT_SPLIT,
            "classes": param.empty,  # class names taken positionally must be given
        }
        annotations = {
            "root": "str | os.PathLike",
            "split": "str" if cls.DEFAULT_SPLIT is not None else "str | None",
            "classes": "Sequence[str] | str | os.PathLike",
        }
        positional = [
            param(n, param.POSITIONAL_OR_KEYWORD, default=defaults[n], annotation=annotations[n])
            for n in cls.POSITIONAL
        ]
        keywords = [
            param(n, param.KEYWORD_ONLY, default=cls._default(n), annotation=_OPTIONS[n][0])
            for n in cls.OPTIONS
            if n not in cls.POSITIONAL
        ]
        return inspect.Signature(positional + keywords)

    def __init__(self, *args: object, **kwargs: object) -> None:
        cls = type(self)
        try:
            bound = cls.__signature__.bind(*args, **kwargs)
        except TypeError as err:
            raise TypeError(f"{cls.__name__}.__init__() {err}") from None
        bound.apply_defaults()
        # The values' types are the signature's annotations, which bind() does not check.
        settings: dict[str, Any] = {n: cls._default(n) for n in _OPTIONS} | bound.arguments
        split = settings["split"]
        if cls.SPLITS is not None:
            if split not in cls.SPLITS:
                raise ValueError(f"split must be one of {sorted(cls.SPLITS)}, got {split!r}")
            split = cls.SPLITS[split]
        classes = self.class_names(settings["classes"])
        self.root = Path(settings["root"])
        self.split = split
        samples = self.find_samples(settings["img_suffix"], settings["ann_suffix"])
        super().__init__(
            samples,
            classes=classes,
            palette=settings["palette"],
            pipeline=settings["pipeline"],
            reduce_zero_label=bool(settings["reduce_zero_label"]),
            ignore_index=settings["ignore_index"],
            on_corrupt=settings["on_corrupt"],
        )

    def class_names(self, classes: Any) -> Sequence[str] | None:
        """The class names the user gave (None: the class's ``CLASSES``)."""
        return classes

    def folder(self, template: str) -> Path:
        """``template`` of :class:`DatasetFolders` under the root, for this split."""
        parts = [p for p in template.split("/") if not (p == "{split}" and self.split is None)]
        return self.root.joinpath(*(p.replace("{split}", str(self.split)) for p in parts))

    def find_samples(self, img_suffix: str, ann_suffix: str) -> list[tuple[Path, Path]]:
        """The (image, annotation) pairs of the split, from ``FOLDERS``; raises
        ``FileNotFoundError`` naming what is missing and showing ``LAYOUT``."""
        require_dir(self.root, self.LAYOUT)
        folders = self.FOLDERS
        if folders.split_file is None:
            return folder_samples(
                self.folder(folders.img_dir),
                self.folder(folders.ann_dir),
                img_suffix,
                ann_suffix,
                self.LAYOUT,
            )
        return split_samples(
            self.folder(folders.split_file),
            self.folder(folders.img_dir),
            self.folder(folders.ann_dir),
            self.LAYOUT,
            img_suffix,
            ann_suffix,
        )
