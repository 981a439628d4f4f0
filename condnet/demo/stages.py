"""The trainings of one demo run: what each recipe trains, and training one stage.

Two recipes, each a matched comparison (same network, data, seed, data order and
training budget; only the classifier differs):

- ``warm_start``: a shared plain stage trains the plain network; then two arms get
  the same additional budget from its weights: the plain model continues, and the
  CondNet arm is the same network converted to its warm-started twin (guidance =
  the trained classifier, every generated classifier = the plain one, so it starts
  from the plain model's predictions) and fine-tuned with the released losses;
- ``from_scratch`` (the paper's recipe): both models trained from random
  initialisation for the stage + arm budget.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from condnet.checkpoint_files import load_tensors, read_state_dict, save_atomic
from condnet.engine.config import load_config, with_options
from condnet.engine.trainer import Trainer
from condnet.models import build_model, check_warm_start, conditional_twin

__all__ = [
    "ARM_ITERS",
    "ARM_LR_FACTOR",
    "MODELS",
    "RECIPES",
    "STAGE_ITERS",
    "Stage",
    "TrainingStopped",
    "plan",
    "train_stage",
    "write_twin",
]

#: The config file of each model, in the demo's config folder.
MODELS = {"plain": "plain_r18-d8_scenes.py", "condnet": "condnet_r18-d8_scenes.py"}
RECIPES = ("warm_start", "from_scratch")
# The arms of the warm start fine-tune at this fraction of the config's learning rate
# (both arms alike). Measured at seed 0 (200 iterations from the same plain stage,
# guidance weight 1.0): 0.2 gave plain 23.91 / CondNet 24.00 mIoU, 1.0 gave 22.90 /
# 23.88; restarting at the stage's full rate undoes part of what it learnt.
ARM_LR_FACTOR = 0.2
# The budget: about 6 minutes for the warm start on the quiet 2-core machine.
STAGE_ITERS, ARM_ITERS = 250, 150


class TrainingStopped(Exception):
    """Training stopped by SIGTERM/SIGINT after saving; the demo stops too.
    ``args[0]``: the signal number."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training of a run: ``iters`` iterations of ``model`` ("plain" or
    "condnet") into ``work_dir``, starting from the weights ``load_from``
    (None: random initialisation); ``convert_from``: first write ``load_from``
    as the warm-started twin of this plain checkpoint (:func:`write_twin`)."""

    label: str
    model: str
    iters: int
    work_dir: Path
    load_from: Path | None = None
    convert_from: Path | None = None
    final: bool = True  # its model is one of the two compared
    lr_factor: float = 1.0  # times the config's optimizer.lr


def plan(recipe: str, stage_iters: int, arm_iters: int, run_dir: Path) -> list[Stage]:
    """The trainings of one run of ``recipe`` (see the module docstring)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}; got {recipe!r}")
    if recipe == "from_scratch":
        total = stage_iters + arm_iters
        return [
            Stage("plain, from scratch", "plain", total, run_dir / "plain"),
            Stage("CondNet, from scratch", "condnet", total, run_dir / "condnet"),
        ]
    start = run_dir / "plain_stage" / "latest.pth"
    return [
        Stage("shared plain stage", "plain", stage_iters, run_dir / "plain_stage", final=False),
        Stage(
            "plain arm (continues)",
            "plain",
            arm_iters,
            run_dir / "plain",
            load_from=start,
            lr_factor=ARM_LR_FACTOR,
        ),
        Stage(
            "CondNet arm (warm start from the plain stage)",
            "condnet",
            arm_iters,
            run_dir / "condnet",
            load_from=run_dir / "twin.pth",
            convert_from=start,
            lr_factor=ARM_LR_FACTOR,
        ),
    ]


def write_twin(plain_checkpoint: Path, out: Path, config: Path) -> None:
    """Writes to ``out`` the warm-started CondNet twin of the plain model in
    ``plain_checkpoint``, in the layout of the CondNet ``config``, as
    ``condnet-convert PLAIN OUT --config CONFIG`` does: both models loaded
    strictly and their logits compared in float64 before anything is written."""
    model = load_config(config, ["model.pretrained_backbone=False"]).model.config
    plain = build_model(dataclasses.replace(model, classifier="plain"))
    load_tensors(plain, read_state_dict(plain_checkpoint), target="the plain model")
    twin = conditional_twin(plain, layout=model.layout)
    diff = check_warm_start(plain, twin)
    state = twin.state_dict()
    meta = {
        "converted_from": os.path.abspath(plain_checkpoint),
        "layout": model.layout,
        "warm_start_max_logit_difference": diff,
    }
    save_atomic({"state_dict": state, "meta": meta}, out)
    print(
        f"wrote the warm-started CondNet twin ({len(state)} tensors, layout "
        f"{model.layout!r}) to {out}; its logits equal the plain model's (largest "
        f"difference {diff:.2g} in float64 on a random image)"
    )


def train_stage(stage: Stage, config: Path, options: list[str], fresh: bool, device):
    """Runs ``stage``; returns the trained model (eval mode) and the training seconds.
    Resumes from the stage's latest checkpoint unless ``fresh``; raises
    :class:`TrainingStopped` when a signal stopped the training."""
    cfg = load_config(config, [*options, f"runner.max_iters={stage.iters}"])
    if stage.lr_factor != 1.0:
        cfg = with_options(cfg, {"optimizer.lr": cfg.optimizer.lr * stage.lr_factor})
    if stage.convert_from is not None and stage.load_from is not None:
        if fresh or not stage.load_from.is_file():
            write_twin(stage.convert_from, stage.load_from, config)
    trainer = Trainer(cfg, stage.work_dir, device=device, validate=False)
    latest = None if fresh else trainer.checkpoints.latest()
    if latest is not None:
        trainer.resume(latest)
    elif stage.load_from is not None:
        trainer.load_from(stage.load_from)
    start = time.perf_counter()
    summary = trainer.run()
    seconds = time.perf_counter() - start
    if summary["stopped_by_signal"] is not None:
        raise TrainingStopped(summary["stopped_by_signal"])
    return trainer.model.eval(), seconds
