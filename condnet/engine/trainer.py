"""The training loop: iterations, evaluation, checkpoints and exact resumption.

An *iteration* is one optimizer step. It consumes ``runner.accumulate_steps``
batches of ``data.samples_per_gpu`` images on every process, so the effective
batch is ``samples_per_gpu x processes x accumulate_steps``; ``runner.max_iters``
and every interval count iterations, as in mmseg's iteration-based runner.

Nothing finished is ever lost:

- checkpoints are written atomically (:mod:`condnet.checkpoint_files`): a
  kill leaves the previous files whole;
- ``iter_N.pth`` every ``checkpoint.interval`` iterations and at the end,
  ``best.pth`` whenever the validation metric improves, and ``latest.pth``
  after each of them and at the end of every epoch of the data;
- SIGTERM or SIGINT (Ctrl-C, a scheduler's preemption) finishes the current
  iteration, writes ``latest.pth`` and exits;
- a checkpoint holds the model, optimizer, schedule, grad scaler, iteration,
  position in the data order and every random generator's state, so a
  resumed run reproduces the uninterrupted run's losses exactly (same
  machine and settings).
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..checkpoint_files import load_checkpoint
from ..diagnostics import GuidanceGradients
from ..models import Segmentor, resolve_inference
from . import dist
from .amp import autocast
from .builders import build_dataset, build_model, build_train_loader, dataset_meta
from .checkpoint import CheckpointManager
from .config import Config, format_config
from .evaluate import evaluate, has_guidance
from .logger import RunLogger, format_duration, memory_mb
from .lr_schedule import IterLRScheduler
from .optim import build_optimizer
from .rng_state import capture_rng_state, restore_rng_state
from .weights import load_weights

#: What :class:`GuidanceGradients` measures on logged iterations (CondNet models).
GRADIENT_KEYS = ("grad_guide_dice", "grad_guide_pool", "cos_guide")


class _TrainStep(nn.Module):
    """``forward(img, label)`` = ``model.forward_train``: DDP synchronises the
    gradients of what runs inside ``forward``, so training must go through it."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.forward_train(img, label)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop stops at the end of the iteration."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}

    def __enter__(self) -> _StopFlag:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds ``random``, numpy and torch; ``deterministic`` also makes torch pick
    deterministic kernels (and fail on ops that have none)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Trainer:
    """Trains ``cfg``'s model on its dataset (see the module docstring).

    Args:
        cfg: a loaded :class:`~condnet.engine.config.Config`.
        work_dir: where logs and checkpoints go.
        device: "cpu", "cuda" (this process's GPU under torchrun) or a device.
        validate: evaluate every ``evaluation.interval`` iterations.
        stream: where the text log is printed (stdout).

    Call :meth:`run` after ``dist.init_distributed`` when running under torchrun.
    """

    def __init__(
        self,
        cfg: Config,
        work_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        validate: bool = True,
        stream=None,
    ) -> None:
        self.cfg = cfg
        self.work_dir = Path(work_dir)
        self.device = dist.local_device(device)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.validate = validate and cfg.evaluation.interval > 0
        self.log = RunLogger(self.work_dir, enabled=dist.is_main(), stream=stream)
        runner = cfg.runner
        self.max_iters = runner.max_iters
        self.accumulate = runner.accumulate_steps

        seed_everything(runner.seed, runner.deterministic)
        self.model = build_model(cfg).to(self.device)
        if runner.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # After the (identical) initialisation, each rank draws its own dropout masks.
        torch.manual_seed(runner.seed + self.rank)

        # Resolved now, so that a setting that does not fit fails here, not at the
        # first evaluation; tools/test.py resolves its settings the same way.
        self.inference = resolve_inference(self.model.test_cfg, cfg.evaluation.inference_layer())
        self.train_set = build_dataset(cfg, "train")
        self.val_set = build_dataset(cfg, "val") if self.validate else None
        self.loader = build_train_loader(cfg, self.train_set, self.rank, self.world_size)
        if len(self.loader) == 0:
            raise ValueError(
                f"the training set has {len(self.train_set)} images, fewer than one batch of "
                f"data.samples_per_gpu={cfg.data.samples_per_gpu} per process"
            )
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        self.scheduler = IterLRScheduler(self.optimizer, cfg.lr_config, self.max_iters)
        self.scaler = torch.amp.GradScaler(self.device.type) if runner.amp == "fp16" else None
        step: _TrainStep | DistributedDataParallel = _TrainStep(self.model)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            step = DistributedDataParallel(step, device_ids=ids)
        self.step_module = step
        self.checkpoints = CheckpointManager(self.work_dir, max_keep=cfg.checkpoint.max_keep)
        self.guidance_gradients = GuidanceGradients(self.model, self.world_size)

        self.iteration = 0
        self.epoch = 0
        self.epoch_batches = 0  # batches of the current epoch already consumed
        self.best_metric: float | None = None
        self.best_iteration: int | None = None

    # -- state -----------------------------------------------------------------

    def state(self) -> dict:
        return {
            "meta": {
                "iteration": self.iteration,
                "epoch": self.epoch,
                "epoch_start": self.epoch_batches,
                "best_metric": self.best_metric,
                "best_iteration": self.best_iteration,
                "config": format_config(self.cfg),
                "condnet_version": __version__,
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": capture_rng_state(),
        }

    def resume(self, path: str | os.PathLike) -> None:
        """Continues from checkpoint ``path`` exactly where it was written."""
        ckpt = load_checkpoint(path, map_location=self.device)
        missing = [
            k for k in ("meta", "state_dict", "optimizer", "scheduler", "rng") if k not in ckpt
        ]
        if missing:
            raise ValueError(
                f"{path} is not a training checkpoint (no {', '.join(missing)}); "
                "use --load-from to start from its weights"
            )
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        meta = ckpt["meta"]
        self.iteration, self.epoch = int(meta["iteration"]), int(meta["epoch"])
        self.epoch_batches = int(meta["epoch_start"])
        self.best_metric, self.best_iteration = meta["best_metric"], meta["best_iteration"]
        restore_rng_state(ckpt["rng"])
        # The random streams differ per rank; the checkpoint holds rank 0's.
        if self.rank:
            torch.manual_seed(self.cfg.runner.seed + self.rank + self.iteration)
        self.log.info(f"resumed from {path} at iteration {self.iteration}")

    def load_from(self, path: str | os.PathLike) -> None:
        """Starts from the weights in ``path`` (iteration 0, fresh optimizer)."""
        load_weights(self.model, path)
        self.log.info(f"loaded weights from {path}")

    def _save(self, best: bool = False) -> None:
        if dist.is_main():
            path = self.checkpoints.save(self.iteration, self.state(), best=best)
            self.log.info(f"saved checkpoint {path}" + (" (best)" if best else ""))
        dist.barrier()

    def _save_latest(self) -> None:
        if dist.is_main():
            self.checkpoints.save_latest(self.state())
        dist.barrier()

    # -- loop --------------------------------------------------------------------

    def _batches(self) -> Iterator[dict]:
        """Batches in the sampler's seeded order, from the current epoch position on."""
        batch_size = self.cfg.data.samples_per_gpu
        while True:
            self.loader.sampler.set_epoch(self.epoch, start=self.epoch_batches * batch_size)
            for batch in self.loader:
                self.epoch_batches += 1
                yield batch
            self.epoch += 1
            self.epoch_batches = 0

    def _epoch_finished(self) -> bool:
        return self.epoch_batches == len(self.loader)

    def _train_iteration(
        self, batches: Iterator[dict], diagnose: bool = False
    ) -> tuple[dict[str, float], float]:
        """One optimizer step; ``diagnose`` also measures the guidance gradients."""
        model = self.step_module
        diagnose = diagnose and self.guidance_gradients.enabled
        model.train()
        self.scheduler.step(self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        data_time = 0.0
        for micro in range(self.accumulate):
            start = time.perf_counter()
            batch = next(batches)
            data_time += time.perf_counter() - start
            img = batch["img"].to(self.device, non_blocking=True)
            label = batch["gt_semantic_seg"].to(self.device, non_blocking=True)
            if self.cfg.runner.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            last = micro == self.accumulate - 1
            # Several processes (DDP) sync the gradients at the last micro-batch only.
            sync = (
                model.no_sync()
                if isinstance(model, DistributedDataParallel) and not last
                else nullcontext()
            )
            with sync:
                with autocast(self.device.type, self.cfg.runner.amp):
                    losses = model(img, label)
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss is {loss.item()} at iteration {self.iteration + 1}; the "
                        f"last checkpoints in {self.work_dir} are intact (lower the lr, or try "
                        "runner.amp=None)"
                    )
                loss = loss / self.accumulate
                scale = self.scaler.get_scale() if self.scaler is not None else 1.0
                if diagnose and "loss_guidance" in losses:
                    self.guidance_gradients.add_dice(
                        losses["loss_guidance"] * scale / self.accumulate
                    )
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / self.accumulate
        if diagnose:
            totals.update(self.guidance_gradients.measure(scale))
        clip = self.cfg.optimizer.grad_clip
        if clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.iteration += 1
        totals["lr"] = self.scheduler.get_lr()[0]
        return totals, data_time

    def _evaluate(self) -> dict[str, float]:
        ev = self.cfg.evaluation
        names, palette = dataset_meta(self.val_set)
        self.model.eval()
        results = evaluate(
            self.model,
            self.val_set,
            num_classes=self.model.num_classes,
            class_names=names,
            palette=palette,
            device=self.device,
            inference=self.inference,
            amp=self.cfg.runner.amp,
            guidance_accuracy=has_guidance(self.model),
            batch_size=ev.samples_per_gpu,
            num_workers=ev.workers_per_gpu,
            progress=False,
        )
        keys = ("aAcc", "mIoU", "mAcc", "acc_guidance")
        summary = {k: float(results[k]) for k in keys if k in results}
        self.log.info(
            f"iter {self.iteration} val: "
            + "  ".join(f"{k} {100 * v:.2f}" for k, v in summary.items())
        )
        self.log.record("val", self.iteration, summary)
        return summary

    def run(self) -> dict:
        """Trains to ``runner.max_iters``; returns the last evaluation and the best.

        Returns ``{"iteration", "stopped_by_signal" (the signal number or None),
        "last_eval", "best_metric", "best_iteration"}``.
        """
        cfg = self.cfg
        log_interval, ckpt_interval = cfg.runner.log_interval, cfg.checkpoint.interval
        eval_interval = cfg.evaluation.interval if self.validate else 0
        batches = self._batches()
        window: dict[str, float] = {}
        window_iters, window_start = 0, time.perf_counter()
        last_eval: dict[str, float] | None = None
        if self.iteration >= self.max_iters:
            self.log.info(f"nothing to do: iteration {self.iteration} >= max_iters")
        self.log.info(
            f"training {self.max_iters} iterations from {self.iteration} on {self.device} "
            f"x{self.world_size}, {len(self.train_set)} images, batch "
            f"{cfg.data.samples_per_gpu}x{self.world_size}x{self.accumulate}"
        )
        stopped = None
        with _StopFlag() as stop:
            while self.iteration < self.max_iters:
                start = time.perf_counter()
                logged = (self.iteration + 1) % log_interval == 0 or (
                    self.iteration + 1 == self.max_iters
                )
                values, data_time = self._train_iteration(batches, diagnose=logged)
                measured = {k: values.pop(k) for k in GRADIENT_KEYS if k in values}
                iter_time = time.perf_counter() - start
                for key, value in values.items():
                    window[key] = window.get(key, 0.0) + value
                window["data_time"] = window.get("data_time", 0.0) + data_time
                window_iters += 1
                mem = memory_mb(self.device)
                self.log.progress(self.iteration, self.max_iters, iter_time, mem)
                if self.iteration % log_interval == 0 or self.iteration == self.max_iters:
                    self._log_window(window, window_iters, window_start, mem, measured)
                    window, window_iters, window_start = {}, 0, time.perf_counter()
                saved = False
                if eval_interval and (
                    self.iteration % eval_interval == 0 or self.iteration == self.max_iters
                ):
                    last_eval = self._evaluate()
                    metric = last_eval[cfg.evaluation.metric]
                    if cfg.evaluation.save_best and (
                        self.best_metric is None or metric > self.best_metric
                    ):
                        self.best_metric, self.best_iteration = metric, self.iteration
                        self._save(best=True)
                        saved = True
                if not saved and (
                    self.iteration % ckpt_interval == 0 or self.iteration == self.max_iters
                ):
                    self._save()
                    saved = True
                if not saved and self._epoch_finished():
                    self._save_latest()
                if self._should_stop(stop):
                    self._save_latest()
                    self.log.info(
                        f"stopped by signal at iteration {self.iteration}; latest.pth holds it "
                        "(resume with --auto-resume)"
                    )
                    stopped = stop.signum
                    break
        self.log.close()
        return {
            "iteration": self.iteration,
            "stopped_by_signal": stopped,
            "last_eval": last_eval,
            "best_metric": self.best_metric,
            "best_iteration": self.best_iteration,
        }

    def _should_stop(self, stop: _StopFlag) -> bool:
        flag = torch.tensor([1.0 if stop.signum is not None else 0.0], device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)

    def _log_window(
        self, window: dict, iters: int, start: float, mem: float, measured: dict
    ) -> None:
        """Logs the window's averages and ``measured``, the guidance gradients of its
        last iteration (:mod:`condnet.diagnostics.guidance_gradients`; empty for plain models)."""
        avg = {k: v / iters for k, v in window.items()}
        avg.update(measured)
        avg["time"] = (time.perf_counter() - start) / iters
        reduced = dist.all_reduce_mean(avg, self.device)
        reduced["memory_mb"] = mem
        eta = format_duration(reduced["time"] * (self.max_iters - self.iteration))
        losses = "  ".join(
            f"{k} {v:.4f}" for k, v in reduced.items() if k.startswith(("loss", "acc"))
        )
        if measured:
            losses += (
                "  grad_guide dice {grad_guide_dice:.2e} pool {grad_guide_pool:.2e} "
                "cos {cos_guide:+.2f}".format(**reduced)
            )
        self.log.info(
            f"iter {self.iteration}/{self.max_iters}  lr {reduced['lr']:.3e}  {losses}  "
            f"time {reduced['time']:.3f}s  data {reduced['data_time']:.3f}s  "
            f"mem {mem:.0f}MiB  eta {eta}"
        )
        self.log.record("train", self.iteration, reduced)
        if not all(math.isfinite(v) for v in reduced.values()):
            self.log.info("warning: non-finite values in this window")
