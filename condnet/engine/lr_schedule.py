"""The learning-rate schedule by iteration: mmcv's ``PolyLrUpdaterHook`` (or
``FixedLrUpdaterHook``) with its linear warm-up, ``by_epoch=False``.

For iteration ``it`` (0-based) and a group whose initial lr is ``base``:

- ``poly``: ``regular = (base - min_lr) * (1 - it / max_iters) ** power + min_lr``
  (``min_lr`` is absolute and the same for every group, as in mmcv);
- ``constant``: ``regular = base``;
- linear warm-up, for ``it < warmup_iters``:
  ``lr = regular * (1 - (1 - it / warmup_iters) * (1 - warmup_ratio))``,
  so it starts at ``regular * warmup_ratio`` and reaches ``regular``.

Iterations past ``max_iters`` keep ``min_lr`` (mmcv would raise a complex
number to the power). ``base`` is the group's ``"initial_lr"``, which the
scheduler sets to the group's lr when the group has none (as
``torch.optim.lr_scheduler`` does), so building the scheduler after loading
a decayed optimizer state keeps the right base.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .config import LrConfig


def _iteration(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0; got {value!r}")
    return value


class IterLRScheduler:
    """Sets every parameter group's lr for an iteration (see the module docstring).

    Args:
        optimizer: the optimizer whose groups it drives.
        config: the config's ``lr_config`` section
            (:class:`~condnet.engine.config.LrConfig`: ``policy`` "poly" or
            "constant", the poly ``power`` and absolute ``min_lr``, ``warmup`` None
            or "linear", ``warmup_iters``, ``warmup_ratio``), checked when it was made.
        max_iters: the length of training, ``runner.max_iters`` (checked by
            :class:`~condnet.engine.config.RunnerConfig`).

    Call :meth:`step` with the 0-based iteration before each optimizer step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: LrConfig, max_iters: int) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer)}")
        if not isinstance(config, LrConfig):
            raise TypeError(f"config must be an LrConfig; got {type(config).__name__}")
        self.optimizer, self.config, self.max_iters = optimizer, config, max_iters
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_iteration: int | None = None

    def lr_at(self, iteration: int) -> list[float]:
        """The lr of every group at ``iteration``, without setting it."""
        it, cfg = _iteration(iteration, "iteration"), self.config
        if cfg.policy == "poly":
            coeff = (1 - min(it, self.max_iters) / self.max_iters) ** cfg.power
            regular = [(base - cfg.min_lr) * coeff + cfg.min_lr for base in self.base_lrs]
        else:
            regular = list(self.base_lrs)
        if cfg.warmup is None or it >= cfg.warmup_iters:
            return regular
        k = (1 - it / cfg.warmup_iters) * (1 - cfg.warmup_ratio)
        return [lr * (1 - k) for lr in regular]

    def step(self, iteration: int) -> list[float]:
        """Sets every group's lr for ``iteration`` (0-based); returns the lrs."""
        lrs = self.lr_at(iteration)
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self.last_iteration = iteration
        return lrs

    def get_lr(self) -> list[float]:
        """The groups' current lrs (set by the last :meth:`step`)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_iteration": self.last_iteration}

    def load_state_dict(self, state: Mapping) -> None:
        """Restores the last iteration and sets its lrs again."""
        if not isinstance(state, Mapping) or "last_iteration" not in state:
            raise ValueError(f"scheduler state must be a dict with 'last_iteration'; got {state!r}")
        last = state["last_iteration"]
        if last is None:
            self.last_iteration = None
        else:
            self.step(_iteration(last, "last_iteration"))
