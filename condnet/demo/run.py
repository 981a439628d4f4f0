"""The demo from start to end: CondNet against its plain twin on the generated scenes,
on the CPU (``condnet-demo`` parses its arguments into :class:`DemoSettings` and calls
:func:`run_demo`).

It writes the scene set (:mod:`condnet.demo.scenes`) unless it is already there,
measures what colour alone gives a global and a per-image classifier on it
(:func:`condnet.demo.colour_cue_check`), trains the recipes of
:mod:`condnet.demo.stages`, evaluates both final models on the validation scenes
(mIoU, mAcc, aAcc and CondNet's guidance accuracy) and saves into
``<work_dir>/<recipe>-seed<seed>/``:

- ``predictions.png``: image | ground truth | plain | CondNet, titled, with a
  class-colour legend, one row per validation image;
- ``guidance.png``: CondNet's guidance maps (the soft class masks its
  conditional classifier pools with), each titled with its class's IoU;
- ``results.json``: every metric, the budgets, the thread count and times.

With ``seeds`` it runs both recipes for every seed and writes the paired comparison.
Training resumes where an interrupted demo stopped (``fresh`` starts over). Torch's
thread count is fixed and recorded: same-seed runs with different thread counts
diverge. The data and work folders are relative to the current folder by default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

import condnet
from condnet.checkpoint_files import write_text_atomic
from condnet.engine.builders import build_dataset, build_model
from condnet.engine.config import load_config
from condnet.engine.logger import format_duration
from condnet.engine.weights import load_weights

from .colour_check import colour_cue_check
from .figures import save_figures
from .scenes import write_scenes
from .stages import ARM_ITERS, MODELS, RECIPES, STAGE_ITERS, TrainingStopped, plan, train_stage
from .stats import print_run, print_summary, score, summarize

__all__ = [
    "SCENES",
    "DemoSettings",
    "TrainingStopped",
    "default_configs",
    "ensure_scenes",
    "missing_configs",
    "run_demo",
    "run_recipe",
]

#: The scene set the demo trains on.
SCENES = dict(num_train=200, num_val=50, size=192)
# Seconds per training iteration on the quiet 2-core machine at 2 threads, for the
# ETA of the first stage (later stages use the measured rate).
PRIOR_SECONDS_PER_ITER = 0.6


def default_configs() -> Path:
    """The demo configs shipped inside the package (``condnet/configs/demo``)."""
    return Path(condnet.__file__).resolve().parent / "configs" / "demo"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """What one ``condnet-demo`` does (its command line options, checked).

    ``seeds``: run both recipes for each (None: one run of ``from_scratch`` or the
    warm start at ``seed``); ``json``: where the multi-seed report goes (None:
    ``<work_dir>/demo_scenes.json``); ``configs``: the folder of the two demo
    configs (:data:`~condnet.demo.stages.MODELS`)."""

    data: Path = Path("data/scenes")
    work_dir: Path = Path("work_dirs/demo")
    configs: Path = dataclasses.field(default_factory=default_configs)
    from_scratch: bool = False
    stage_iters: int = STAGE_ITERS
    iters: int = ARM_ITERS
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    json: Path | None = None
    scene_seed: int = 0
    threads: int = 2
    device: str = "cpu"
    num_images: int = 4
    fresh: bool = False


def missing_configs(configs: Path) -> list[str]:
    """The demo config files ``configs`` lacks."""
    return [name for name in MODELS.values() if not (configs / name).is_file()]


def _write_json(obj: dict, path: str | os.PathLike) -> None:
    write_text_atomic(json.dumps(obj, indent=2) + "\n", path)


def ensure_scenes(root: Path, seed: int) -> None:
    """Writes the scene set unless ``root`` already holds it with these settings."""
    meta_path = root / "scenes.json"
    wanted = dict(SCENES, seed=seed)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in wanted.items()):
            print(f"using the scene set in {root}")
            return
    start = time.perf_counter()
    write_scenes(
        root,
        seed=seed,
        num_train=SCENES["num_train"],
        num_val=SCENES["num_val"],
        size=SCENES["size"],
        overwrite=True,
    )
    print(
        f"wrote {SCENES['num_train']} training and {SCENES['num_val']} validation scenes to "
        f"{root} in {time.perf_counter() - start:.0f} s"
    )


def _twin_at_start(config: Path, options: list[str], weights: Path):
    model = build_model(load_config(config, options))
    load_weights(model, weights)
    return model.eval()


def run_recipe(settings: DemoSettings, recipe: str, seed: int, rate: float) -> tuple[dict, float]:
    """One run: trains ``recipe`` at ``seed``, scores both models, saves the figures.
    ``rate``: the seconds per iteration the ETAs assume. Returns the run's record and
    the rate measured."""
    run_dir = settings.work_dir / f"{recipe}-seed{seed}"
    configs = settings.configs
    options = [f"data.root={str(settings.data)!r}", f"runner.seed={seed}"]
    stages = plan(recipe, settings.stage_iters, settings.iters, run_dir)
    print(f"\n== {recipe.replace('_', ' ')}, seed {seed} -> {run_dir} ==", flush=True)
    start = time.perf_counter()
    models, seconds, metrics = {}, {}, {}
    val_set = build_dataset(load_config(configs / MODELS["plain"], options), "val")
    for index, stage in enumerate(stages, 1):
        left = sum(s.iters for s in stages[index - 1 :])
        print(
            f"[{index}/{len(stages)}] {stage.label}: {stage.iters} iterations "
            f"(ETA {format_duration(rate * stage.iters)}, run ETA {format_duration(rate * left)})",
            flush=True,
        )
        model, seconds[stage.label] = train_stage(
            stage, configs / MODELS[stage.model], options, settings.fresh, settings.device
        )
        if seconds[stage.label] > 5 and stage.iters:  # a resumed stage measures nothing
            rate = seconds[stage.label] / stage.iters
        if stage.convert_from is not None and stage.load_from is not None:
            # The twin before fine-tuning: the plain stage's predictions, and its
            # guidance is the plain classifier.
            start_model = _twin_at_start(configs / MODELS["condnet"], options, stage.load_from)
            metrics["condnet_start"] = score(start_model, val_set, settings.device)
        if stage.final:
            models[stage.model] = model
            metrics[stage.model] = score(model, val_set, settings.device)
    figures = save_figures(
        models, metrics["condnet"]["IoU"], val_set, run_dir, settings.num_images, settings.device
    )
    warm = recipe == "warm_start"
    record = {
        "seed": seed,
        "recipe": recipe,
        "iterations": stages[-1].iters + (settings.stage_iters if warm else 0),
        "stage_iterations": settings.stage_iters if warm else 0,
        "arm_iterations": stages[-1].iters,
        "plain_miou": metrics["plain"]["mIoU"],
        "condnet_miou": metrics["condnet"]["mIoU"],
        "condnet_acc_guidance": metrics["condnet"]["acc_guidance"],
        "chance_acc_guidance": 100 / len(metrics["condnet"]["IoU"]),
        "wall_s": time.perf_counter() - start,
        "metrics": metrics,
        "train_seconds": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "figures": [str(p) for p in figures],
    }
    _write_json(record, run_dir / "results.json")
    print_run(record)
    return record, rate


def run_demo(settings: DemoSettings) -> None:
    """The whole demo (see the module docstring). Raises ``FileNotFoundError``,
    ``ValueError`` or :class:`~condnet.engine.config.ConfigError` for bad data or
    configs, and :class:`TrainingStopped` when a signal stopped a training (run it
    again to continue)."""
    torch.set_num_threads(settings.threads)
    rate = PRIOR_SECONDS_PER_ITER * 2 / min(settings.threads, 2)
    start = time.perf_counter()
    ensure_scenes(settings.data, settings.scene_seed)
    colour = colour_cue_check(settings.data)
    print(
        "colour alone labels {:.0f}% of the validation pixels right with one global "
        "colour table, {:.0f}% with each image's own class colours: the per-image "
        "variation a global classifier cannot follow".format(
            100 * colour["global_accuracy"], 100 * colour["per_image_accuracy"]
        )
    )
    if settings.seeds:
        jobs = [(recipe, seed) for seed in settings.seeds for recipe in RECIPES]
    else:
        jobs = [("from_scratch" if settings.from_scratch else "warm_start", settings.seed)]
    runs = []
    for recipe, seed in jobs:
        record, rate = run_recipe(settings, recipe, seed, rate)
        runs.append(record)
    total = time.perf_counter() - start
    if settings.seeds:
        summary = summarize(runs)
        out = settings.json or settings.work_dir / "demo_scenes.json"
        report = {
            "runs": runs,
            "summary": summary,
            "colour_cue_check": colour,
            "threads": settings.threads,
            "torch": torch.__version__,
            "condnet": condnet.__version__,
            "total_seconds": total,
        }
        _write_json(report, out)
        print_summary(summary, list(settings.seeds))
        print(f"wrote {out}")
    print(f"total time: {format_duration(total)} ({settings.threads} threads)")
