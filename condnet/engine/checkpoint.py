"""The checkpoints of a training run in its work dir: ``iter_N.pth``,
``latest.pth`` and ``best.pth``.

Each file is written atomically (:func:`condnet.checkpoint_files.save_atomic`),
so a kill leaves the previous files whole. ``latest.pth`` and ``best.pth`` are
hard links to an ``iter_N.pth`` (a copy where the file system has no hard links),
so pruning old ``iter_N.pth`` files never loses the best one.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from pathlib import Path

from condnet.checkpoint_files import atomic_output, load_checkpoint, save_atomic

_ITER_FILE = re.compile(r"iter_(\d+)\.pth")
# condnet.checkpoint_files.temp_path's names: <name>.tmp.<pid>
_TEMP_FILE = re.compile(r".+\.tmp\.\d+")


def _link_atomic(source: Path, target: Path) -> None:
    """Points ``target`` at ``source``'s content atomically: a hard link (or, where
    links fail, a copy) under the temporary name, renamed over ``target``."""
    with atomic_output(target) as tmp:
        try:
            os.link(source, tmp)
        except (OSError, NotImplementedError):  # FAT, some network and FUSE file systems
            shutil.copyfile(source, tmp)


class CheckpointManager:
    """The checkpoints of one training run in ``work_dir``.

    Files: ``iter_{N}.pth`` (N = iteration), ``latest.pth`` (the last saved)
    and ``best.pth`` (the last saved with ``best=True``).

    Args:
        work_dir: the run's directory (created on the first save).
        max_keep: keep at most this many ``iter_*.pth`` files (None: all); the
            config's ``checkpoint.max_keep``, checked by
            :class:`~condnet.engine.config.CheckpointConfig`.
    """

    def __init__(self, work_dir: str | os.PathLike, max_keep: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.max_keep = max_keep

    def iter_path(self, iteration: int) -> Path:
        return self.work_dir / f"iter_{iteration}.pth"

    def iter_files(self) -> list[tuple[int, Path]]:
        """``(N, path)`` of the ``iter_N.pth`` files, by ascending N."""
        if not self.work_dir.is_dir():
            return []
        found = []
        for path in self.work_dir.iterdir():
            if (m := _ITER_FILE.fullmatch(path.name)) and path.is_file():
                found.append((int(m[1]), path))
        return sorted(found)

    def save(self, iteration: int, state, best: bool = False) -> Path:
        """Writes ``iter_{iteration}.pth``, points ``latest.pth`` (and
        ``best.pth`` when ``best``) at it and prunes old ``iter_*.pth``
        beyond ``max_keep``. Returns the ``iter_*.pth`` path."""
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"iteration must be an int >= 0; got {iteration!r}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        path = save_atomic(state, self.iter_path(iteration))
        _link_atomic(path, self.work_dir / "latest.pth")
        if best:
            _link_atomic(path, self.work_dir / "best.pth")
        self._prune(keep=path)
        return path

    def save_latest(self, state) -> Path:
        """Writes ``latest.pth`` alone (a stop between two ``iter_N.pth``)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return save_atomic(state, self.work_dir / "latest.pth")

    def _prune(self, keep: Path) -> None:
        if self.max_keep is None:
            return
        # The file just written stays even if a higher N exists (after a resume
        # from an earlier checkpoint).
        others = [p for _, p in self.iter_files() if p != keep]
        for path in others[: max(0, len(others) + 1 - self.max_keep)]:
            path.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The checkpoint to resume from: ``latest.pth``, else the highest
        ``iter_N.pth``, skipping (with a warning) files that do not load;
        None when there is none."""
        candidates = [self.work_dir / "latest.pth"]
        candidates += [p for _, p in reversed(self.iter_files())]
        for path in candidates:
            if not path.is_file():
                continue
            try:
                load_checkpoint(path, mmap=True)  # mmap: reads the pickle, not the tensors
            except ValueError as exc:
                warnings.warn(f"skipping checkpoint: {exc}", RuntimeWarning, stacklevel=2)
                continue
            return path
        return None

    def remove_temporaries(self) -> list[Path]:
        """Deletes leftover ``*.tmp.<pid>`` files of interrupted saves; returns them."""
        if not self.work_dir.is_dir():
            return []
        removed = [p for p in self.work_dir.iterdir() if _TEMP_FILE.fullmatch(p.name)]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed
