"""The trainings of one demo run: a shared plain stage, then one arm per classifier.

The comparison is matched: the three arms (plain, CondNet, CAC) are the same
network (the configs in :data:`MODELS` differ only in ``model.classifier``),
start from the same weights, see the same data in the same order from the same
seed for the same number of iterations at the same learning rate, and are scored
on the same validation scenes.

1. **Shared plain stage.** The plain network trains from random initialisation
   for :data:`STAGE_ITERS` iterations.
2. **Arms**, :data:`ARM_ITERS` iterations each from the stage's weights, at
   :data:`ARM_LR_FACTOR` times the configs' learning rate:

   - plain: the plain model continues;
   - CondNet: the stage converted as ``condnet-convert`` does (the guidance
     takes the trained classifier and every generated classifier starts as the
     plain one, so it starts from the plain model's predictions exactly);
   - CAC: the stage's weights with the plain 1x1 conv as CAC's ``conv_seg``
     (its static logits are the plain model's) and fresh projections, as
     ``make_conditional(model, variant="cac")`` converts a trained model.

The stage validates every ``evaluation.interval`` iterations of the configs, the
arms every :data:`ARM_EVAL_INTERVAL`; the stage's scores followed by an arm's are
that arm's learning curve (CAC's with its score at the start of its arm, since it
does not start from the plain model's predictions).

Why this recipe and not training each arm from scratch for the same total
budget: measured at seed 0 (docs/demo.md, How the demo was chosen), from scratch
for 250 iterations the plain model reached 69.5 mIoU, CondNet 41.7 and CAC 51.7,
all still rising, and three such trainings do not fit ``make demo``'s 10 minutes.
That comparison measures how fast each classifier learns from nothing; the warm
start asks what a user of the converters asks: does a conditional classifier add
to a trained network what the same extra training of the plain one does not?
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from condnet.checkpoint_files import load_tensors, read_state_dict, save_atomic
from condnet.engine.config import load_config
from condnet.engine.trainer import Trainer
from condnet.models import build_model, check_warm_start, conditional_twin

__all__ = [
    "ARM_EVAL_INTERVAL",
    "ARM_ITERS",
    "ARM_LR_FACTOR",
    "MODELS",
    "STAGE_ITERS",
    "TrainingStopped",
    "learning_curve",
    "train",
    "write_twin",
]

#: The config file of each arm, in the demo's config folder.
MODELS = {
    "plain": "plain_r18-d8_scenes.py",
    "condnet": "condnet_r18-d8_scenes.py",
    "cac": "cac_r18-d8_scenes.py",
}
#: The budget: about 6 minutes on the quiet 2-core machine for the three arms.
STAGE_ITERS, ARM_ITERS = 200, 100
#: The arms' learning rate, as a fraction of the configs' (all arms alike).
ARM_LR_FACTOR = 0.5
#: The arms validate this often (the stage at the configs' ``evaluation.interval``).
ARM_EVAL_INTERVAL = 25


class TrainingStopped(Exception):
    """Training stopped by SIGTERM/SIGINT after saving; the demo stops too.
    ``args[0]``: the signal number."""


def learning_curve(work_dir: Path, offset: int = 0) -> list[list[float]]:
    """``[[iteration + offset, validation mIoU %], ...]`` from the JSON logs in
    ``work_dir`` (every run's, so that a resumed training keeps the points logged
    before it stopped; a later run's score for an iteration replaces an earlier's)."""
    points: dict[int, float] = {}
    for path in sorted(work_dir.glob("*.log.json")):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry.get("mode") == "val":
                points[int(entry["iter"])] = 100 * float(entry["mIoU"])
    return [[it + offset, points[it]] for it in sorted(points)]


def write_twin(arm: str, plain_checkpoint: Path, out: Path, config: Path) -> None:
    """Writes to ``out`` the ``arm`` ("condnet" or "cac") model of ``config`` started
    from the plain model in ``plain_checkpoint`` (see the module docstring).

    CondNet's twin is ``condnet-convert``'s: both models loaded strictly and their
    logits compared in float64 before anything is written. CAC's takes every plain
    tensor, strictly, and leaves only the projections (``proj``, ``apd_proj``) at
    their initialisation."""
    if arm not in ("condnet", "cac"):
        raise ValueError(f"arm must be 'condnet' or 'cac'; got {arm!r}")
    model = load_config(config, ["model.pretrained_backbone=False"]).model.config
    plain = build_model(dataclasses.replace(model, classifier="plain"))
    load_tensors(plain, read_state_dict(plain_checkpoint), target="the plain model")
    if arm == "condnet":
        twin = conditional_twin(plain, layout=model.layout)
        diff = check_warm_start(plain, twin)
        note = f"its logits equal the plain model's (largest difference {diff:.2g} in float64)"
        meta: dict[str, object] = {"layout": model.layout, "warm_start_max_logit_difference": diff}
    else:
        twin = build_model(model)
        fresh = [k for k in twin.state_dict() if ".proj." in k or ".apd_proj." in k]
        load_tensors(twin, plain.state_dict(), optional=fresh, target="the CAC twin")
        note = f"its static logits are the plain model's; {len(fresh)} projection tensors fresh"
        meta = {"fresh": fresh}
    meta["converted_from"] = os.path.abspath(plain_checkpoint)
    save_atomic({"state_dict": twin.state_dict(), "meta": meta}, out)
    print(f"wrote the {arm} twin of the plain stage to {out}: {note}")


def train(
    config: Path,
    options: list[str],
    work_dir: Path,
    fresh: bool,
    device,
    load_from: Path | None = None,
) -> tuple[object, float]:
    """Trains ``config`` with ``options`` into ``work_dir`` from ``load_from`` (None:
    random initialisation), validating every ``evaluation.interval`` iterations;
    returns the trained model (eval mode) and the seconds this call trained. Resumes
    from the latest checkpoint there unless ``fresh``; raises
    :class:`TrainingStopped` when a signal stopped it."""
    cfg = load_config(config, options)
    trainer = Trainer(cfg, work_dir, device=device, validate=True)
    latest = None if fresh else trainer.checkpoints.latest()
    if latest is not None:
        trainer.resume(latest)
    elif load_from is not None:
        trainer.load_from(load_from)
    start = time.perf_counter()
    summary = trainer.run()
    seconds = time.perf_counter() - start
    if summary["stopped_by_signal"] is not None:
        raise TrainingStopped(summary["stopped_by_signal"])
    return trainer.model.eval(), seconds
