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

import math
from collections.abc import Mapping

import torch

POLICIES = ("poly", "constant")
WARMUPS = (None, "linear")


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


class IterLRScheduler:
    """Sets every parameter group's lr for an iteration (see the module docstring).

    Args:
        optimizer: the optimizer whose groups it drives.
        max_iters: the length of training (>= 1).
        policy: ``"poly"`` or ``"constant"``.
        power: the poly exponent (> 0).
        min_lr: the poly floor (>= 0), absolute.
        warmup: None or ``"linear"``.
        warmup_iters: warm-up length in iterations (>= 0).
        warmup_ratio: the warm-up's starting fraction, in (0, 1].

    Call :meth:`step` with the 0-based iteration before each optimizer step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iters: int,
        policy: str = "poly",
        power: float = 0.9,
        min_lr: float = 1e-4,
        warmup: str | None = None,
        warmup_iters: int = 0,
        warmup_ratio: float = 1e-6,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer)}")
        self.max_iters = _count(max_iters, "max_iters", 1)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}; got {policy!r}")
        self.power = _real(power, "power")
        if self.power <= 0:
            raise ValueError(f"power must be > 0; got {power!r}")
        self.min_lr = _real(min_lr, "min_lr")
        if self.min_lr < 0:
            raise ValueError(f"min_lr must be >= 0; got {min_lr!r}")
        if warmup not in WARMUPS:
            raise ValueError(f"warmup must be one of {WARMUPS}; got {warmup!r}")
        self.warmup_iters = _count(warmup_iters, "warmup_iters", 0)
        self.warmup_ratio = _real(warmup_ratio, "warmup_ratio")
        if not 0 < self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in (0, 1]; got {warmup_ratio!r}")
        self.optimizer, self.policy, self.warmup = optimizer, policy, warmup
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_iteration: int | None = None

    def lr_at(self, iteration: int) -> list[float]:
        """The lr of every group at ``iteration``, without setting it."""
        it = _count(iteration, "iteration", 0)
        if self.policy == "poly":
            coeff = (1 - min(it, self.max_iters) / self.max_iters) ** self.power
            regular = [(base - self.min_lr) * coeff + self.min_lr for base in self.base_lrs]
        else:
            regular = list(self.base_lrs)
        if self.warmup is None or it >= self.warmup_iters:
            return regular
        k = (1 - it / self.warmup_iters) * (1 - self.warmup_ratio)
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
            self.step(_count(last, "last_iteration", 0))
