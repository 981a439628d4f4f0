"""What a training run reports: a human log, JSON lines, TensorBoard and a progress line.

Files in the work dir, named by the run's start time as mmseg does, so a
resumed run adds new files instead of rewriting old ones:

- ``<time>.log``: the text printed to stdout;
- ``<time>.log.json``: one JSON object per line: ``{"mode": "train", "iter": ...,
  "lr": ..., "loss": ..., ...}`` per logged iteration and ``{"mode": "val", ...}``
  per evaluation. Each line is flushed when written, so a killed run keeps
  everything it logged;
- ``tf_logs/``: TensorBoard scalars, when the ``tensorboard`` package is installed.

Only rank 0 writes; on the other ranks every method does nothing.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import torch

if TYPE_CHECKING:  # tensorboard is optional: imported where it is used
    from torch.utils.tensorboard import SummaryWriter


def format_duration(seconds: float) -> str:
    """``1 day, 2:03:04`` style, whole seconds."""
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


def memory_mb(device: torch.device) -> float:
    """Peak memory of this process in MiB: CUDA allocations on a GPU, else the
    resident set size (all allocations, not only torch's)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB else


class RunLogger:
    """Writes the run's log files and progress on rank 0.

    Args:
        work_dir: where the files go (created).
        enabled: False on ranks other than 0.
        stream: where text goes besides the log file (stdout).
        progress_stream: where the one-line progress bar goes when it is a
            terminal (stderr); nothing is drawn otherwise.
    """

    def __init__(
        self,
        work_dir: str | os.PathLike,
        enabled: bool = True,
        stream: TextIO | None = None,
        progress_stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.progress_stream = progress_stream if progress_stream is not None else sys.stderr
        self._bar_drawn = False
        # Open on rank 0 only: the methods check the handle they write to.
        self._text: TextIO | None = None
        self._json: TextIO | None = None
        self._tb: SummaryWriter | None = None
        if not enabled:
            return
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d_%H%M%S")
        self.log_path = self.work_dir / f"{stamp}.log"
        self.json_path = self.work_dir / f"{stamp}.log.json"
        self._text = open(self.log_path, "a", encoding="utf-8")
        self._json = open(self.json_path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            pass
        else:
            self._tb = SummaryWriter(str(self.work_dir / "tf_logs"))

    def info(self, message: str) -> None:
        """A line of text for stdout and the log file."""
        if self._text is None:
            return
        self._clear_bar()
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        print(line, file=self.stream, flush=True)
        self._text.write(line + "\n")
        self._text.flush()

    def record(self, mode: str, iteration: int, values: dict[str, float]) -> None:
        """One JSON line (and TensorBoard scalars) for iteration ``iteration``."""
        if self._json is None:
            return
        entry = {"mode": mode, "iter": iteration, **values}
        self._json.write(json.dumps(entry) + "\n")
        self._json.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{mode}/{key}", value, iteration)

    def progress(self, iteration: int, max_iters: int, iter_time: float, mem: float) -> None:
        """Redraws the progress bar (terminals only): done/total, ETA, s/iter, memory."""
        if not self.enabled or not self.progress_stream.isatty():
            return
        width = 30
        done = int(width * iteration / max_iters)
        eta = format_duration(iter_time * (max_iters - iteration))
        bar = "#" * done + "." * (width - done)
        self.progress_stream.write(
            f"\r[{bar}] {iteration}/{max_iters}  {iter_time:.3f} s/iter  "
            f"ETA {eta}  mem {mem:.0f} MiB "
        )
        self.progress_stream.flush()
        self._bar_drawn = True

    def _clear_bar(self) -> None:
        if self._bar_drawn:
            self.progress_stream.write("\r\033[K")
            self.progress_stream.flush()
            self._bar_drawn = False

    def close(self) -> None:
        if not self.enabled:
            return
        self._clear_bar()
        for handle in (self._text, self._json, self._tb):
            if handle is not None:
                handle.close()
        self._text = self._json = self._tb = None
