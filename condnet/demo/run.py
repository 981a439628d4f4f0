"""The demo from start to end: a plain classifier, CondNet and CAC on the same network,
trained on generated scenes on the CPU (``condnet-demo`` parses its arguments into
:class:`DemoSettings` and calls :func:`run_demo`).

For each scene set it runs (``cue``, the set with the per-image colour cue, by
default; ``control``, the set without it, too in the multi-seed run) it writes the
set (:mod:`condnet.demo.scenes`) unless it is already there, and measures what
colour alone gives a global and a per-image classifier on it
(:func:`condnet.demo.colour_cue_check`). For each seed it trains the shared plain
stage and the arms of :mod:`condnet.demo.stages` and saves into
``<work_dir>/<scenes>-seed<seed>/``:

- ``predictions.png``: image | ground truth | one column per arm, titled, with a
  class-colour legend, one row per validation image;
- ``masks.png``: the conditional classifiers' class masks (CondNet's guidance,
  CAC's static logits), each tile titled with the arm's IoU for the class;
- ``curves.png``: validation mIoU against iteration for each arm;
- ``results.json``: every metric, the learning curves, the thread count, times;
- ``plan.json``: the budgets and scene set the run is made with (:func:`check_plan`).

It prints a table per run (mIoU, mAcc, aAcc, guidance accuracy, wall time per
arm) with each conditional arm's difference to plain next to the committed
multi-seed interval (:data:`COMMITTED`) when that file is found. With several
seeds it also writes the paired comparison (:func:`condnet.demo.stats.summarize`)
and the learning curves over seeds.

Training resumes where an interrupted demo stopped (``fresh`` starts over).
Torch's thread count is fixed and recorded: same-seed runs with different thread
counts diverge. The data and work folders are relative to the current folder by
default.
"""

from __future__ import annotations

import dataclasses
import json
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
from .figures import save_figures, save_learning_curves
from .scenes import write_scenes
from .stages import (
    ARM_EVAL_INTERVAL,
    ARM_ITERS,
    ARM_LR_FACTOR,
    MODELS,
    STAGE_ITERS,
    TrainingStopped,
    learning_curve,
    train,
    write_twin,
)
from .stats import ARMS, LABELS, SCENE_SETS, curves, print_run, print_summary, score, summarize

__all__ = [
    "COMMITTED",
    "SCENES",
    "DemoSettings",
    "TrainingStopped",
    "check_plan",
    "default_configs",
    "ensure_scenes",
    "load_committed",
    "missing_configs",
    "run_demo",
    "run_seed",
]

#: The scene sets' size (both sets alike).
SCENES = dict(num_train=200, num_val=50, size=128)
#: How each set draws a class's colours: per image (the per-image cue) or per region
#: (none); see :func:`condnet.demo.scenes.generate_scene`.
COLOURS = {"cue": "image", "control": "region"}
#: The committed multi-seed results (``make demo-seeds``), relative to the current
#: folder: a one-seed run prints its differences next to their intervals.
COMMITTED = Path("benchmarks/results/demo_scenes.json")
# Seconds per training iteration on the quiet 2-core machine at 2 threads, for the
# ETA of the first training (later ones use the measured rate).
PRIOR_SECONDS_PER_ITER = 0.55


def default_configs() -> Path:
    """The demo configs shipped inside the package (``condnet/configs/demo``)."""
    return Path(condnet.__file__).resolve().parent / "configs" / "demo"


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """What one ``condnet-demo`` does (its command line options, checked).

    ``data``: the folder holding one folder per scene set (``<data>/cue``,
    ``<data>/control``); ``scenes``: the sets to run; ``arms``: the classifiers
    (plain first); ``seeds``: one run per seed and set, paired; ``stage_iters``,
    ``iters``: the shared plain stage's and each arm's iterations; ``json``: where a
    run over several seeds writes its report (None: ``<work_dir>/demo_scenes.json``);
    ``committed``: the committed report to compare with (None: none)."""

    data: Path = Path("data/scenes")
    work_dir: Path = Path("work_dirs/demo")
    configs: Path = dataclasses.field(default_factory=default_configs)
    scenes: tuple[str, ...] = ("cue",)
    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = (0,)
    stage_iters: int = STAGE_ITERS
    iters: int = ARM_ITERS
    json: Path | None = None
    committed: Path | None = COMMITTED
    scene_seed: int = 0
    threads: int = 2
    device: str = "cpu"
    num_images: int = 4
    fresh: bool = False

    def __post_init__(self) -> None:
        checked = (("scenes", self.scenes, SCENE_SETS), ("arms", self.arms, ARMS))
        for name, values, allowed in checked:
            unknown = [v for v in values if v not in allowed]
            if not values or unknown or len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct values from {allowed}; got {values}")
        if "plain" not in self.arms:
            raise ValueError(f"arms must include 'plain' (the baseline); got {self.arms}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one; got {self.seeds}")


def missing_configs(configs: Path) -> list[str]:
    """The demo config files ``configs`` lacks."""
    return [name for name in MODELS.values() if not (configs / name).is_file()]


def _write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(obj, indent=2) + "\n", path)


def ensure_scenes(root: Path, seed: int, colours: str) -> None:
    """Writes a scene set unless ``root`` already holds it with these settings."""
    meta_path = root / "scenes.json"
    wanted = dict(SCENES, seed=seed, colours=colours)
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
        colours=colours,
    )
    print(
        f"wrote {SCENES['num_train']} training and {SCENES['num_val']} validation scenes "
        f"(colours per {colours}) to {root} in {time.perf_counter() - start:.0f} s"
    )


def load_committed(path: Path | None) -> dict | None:
    """The summary of the committed multi-seed report at ``path``, or None (with a
    note) where there is none to compare with."""
    if path is None:
        return None
    if not path.is_file():
        print(f"(no committed multi-seed results at {path}: the run is shown alone)")
        return None
    summary = json.loads(path.read_text()).get("summary")
    if not isinstance(summary, dict) or not summary or not set(summary) <= set(SCENE_SETS):
        print(f"({path} is not a report of this demo's multi-seed run: the run is shown alone)")
        return None
    return summary


def _score_twin(config, weights: Path, device, val_set) -> dict:
    """The scores of the model of ``config`` with the weights ``weights`` (a twin
    before fine-tuning)."""
    model = build_model(config)
    load_weights(model, weights)
    return score(model.eval(), val_set, device)


def check_plan(run_dir: Path, plan: dict, fresh: bool) -> None:
    """Records in ``<run_dir>/plan.json`` what a run is made with (``plan``: the
    budgets, the arms' learning rate, the scene set's metadata), so that a resumed
    run cannot mix trainings made with other settings: raises ValueError naming what
    changed unless ``fresh`` (which retrains everything)."""
    path = run_dir / "plan.json"
    if path.is_file() and not fresh:
        made = json.loads(path.read_text())
        changed = {k: (made.get(k), v) for k, v in plan.items() if made.get(k) != v}
        if changed:
            listed = "; ".join(
                f"{k}: {old!r} then, {new!r} now" for k, (old, new) in changed.items()
            )
            raise ValueError(
                f"{run_dir} holds a run made with other settings ({listed}); pass --fresh "
                "to retrain it, or another --work-dir"
            )
    _write_json(plan, path)


def run_seed(
    settings: DemoSettings, scenes: str, seed: int, rate: float, committed: dict | None
) -> tuple[dict, float]:
    """Trains the shared plain stage and every arm at ``seed`` on the ``scenes`` set,
    scores them, saves the figures. ``rate``: the seconds per iteration the ETAs
    assume. Returns the run's record and the rate measured."""
    run_dir = settings.work_dir / f"{scenes}-seed{seed}"
    options = [f"data.root={str(settings.data / scenes)!r}", f"runner.seed={seed}"]
    configs = {arm: load_config(settings.configs / MODELS[arm], options) for arm in settings.arms}
    rates = {arm: cfg.optimizer.lr for arm, cfg in configs.items()}
    if len(set(rates.values())) != 1:
        raise ValueError(f"the arms' configs must train alike; optimizer.lr: {rates}")
    lr = rates["plain"] * ARM_LR_FACTOR
    stage_iters, arm_iters = settings.stage_iters, settings.iters
    scene_set = json.loads((settings.data / scenes / "scenes.json").read_text())
    plan = {"stage_iterations": stage_iters, "arm_iterations": arm_iters, "arm_lr": lr}
    check_plan(run_dir, {**plan, "scene_set": scene_set}, settings.fresh)
    print(f"\n== {scenes} scenes, seed {seed} -> {run_dir} ==", flush=True)
    start = time.perf_counter()
    val_set = build_dataset(configs["plain"], "val")
    steps = len(settings.arms) + 1
    total = stage_iters + arm_iters * len(settings.arms)
    print(
        f"[1/{steps}] shared plain stage: {stage_iters} iterations (ETA "
        f"{format_duration(rate * stage_iters)}, run ETA {format_duration(rate * total)})",
        flush=True,
    )
    stage_dir = run_dir / "plain_stage"
    _, stage_seconds = train(
        settings.configs / MODELS["plain"],
        [*options, f"runner.max_iters={stage_iters}"],
        stage_dir,
        settings.fresh,
        settings.device,
    )
    if stage_seconds > 5:  # a finished stage that was only reloaded measures nothing
        rate = stage_seconds / stage_iters
    stage_curve = learning_curve(stage_dir)
    stage_weights = stage_dir / "latest.pth"
    models, arms = {}, {}
    for index, arm in enumerate(settings.arms, 2):
        left = arm_iters * (len(settings.arms) - index + 2)
        print(
            f"[{index}/{steps}] {LABELS[arm]} arm: {arm_iters} iterations from the stage "
            f"(ETA {format_duration(rate * arm_iters)}, run ETA {format_duration(rate * left)})",
            flush=True,
        )
        config = settings.configs / MODELS[arm]
        begin = stage_weights
        curve = [list(p) for p in stage_curve]
        if arm != "plain":
            begin = run_dir / f"{arm}_twin.pth"
            if settings.fresh or not begin.is_file():
                write_twin(arm, stage_weights, begin, config)
            if arm == "cac":  # CAC does not start from the plain model's predictions
                at_start = _score_twin(configs[arm], begin, settings.device, val_set)
                curve.append([stage_iters, at_start["mIoU"]])
        work_dir = run_dir / arm
        model, seconds = train(
            config,
            [
                *options,
                f"runner.max_iters={arm_iters}",
                f"optimizer.lr={lr!r}",
                f"evaluation.interval={ARM_EVAL_INTERVAL}",
            ],
            work_dir,
            settings.fresh,
            settings.device,
            load_from=begin,
        )
        if seconds > 5:
            rate = seconds / arm_iters
        models[arm] = model
        arms[arm] = {
            **score(model, val_set, settings.device),
            "wall_s": stage_seconds + seconds,
            "curve": curve + learning_curve(work_dir, offset=stage_iters),
        }
    figures = save_figures(
        models,
        {arm: metrics["IoU"] for arm, metrics in arms.items()},
        val_set,
        run_dir,
        settings.num_images,
        settings.device,
    )
    panels = {f"{scenes} scenes": {arm: [arms[arm]["curve"]] for arm in arms}}
    figures.append(
        save_learning_curves(panels, f"validation mIoU, seed {seed}", run_dir / "curves.png")
    )
    record = {
        "seed": seed,
        "scenes": scenes,
        "iterations": stage_iters + arm_iters,
        "stage_iterations": stage_iters,
        "arm_iterations": arm_iters,
        "arm_lr": lr,
        "arms": arms,
        "chance_acc_guidance": 100 / len(next(iter(arms.values()))["IoU"]),
        "wall_s": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "figures": [str(p) for p in figures],
    }
    _write_json(record, run_dir / "results.json")
    print_run(record, committed)
    return record, rate


def run_demo(settings: DemoSettings) -> None:
    """The whole demo (see the module docstring). Raises ``FileNotFoundError``,
    ``ValueError`` or :class:`~condnet.engine.config.ConfigError` for bad data or
    configs, and :class:`TrainingStopped` when a signal stopped a training (run it
    again to continue)."""
    torch.set_num_threads(settings.threads)
    rate = PRIOR_SECONDS_PER_ITER * 2 / min(settings.threads, 2)
    start = time.perf_counter()
    colour = {}
    for scenes in settings.scenes:
        ensure_scenes(settings.data / scenes, settings.scene_seed, COLOURS[scenes])
        colour[scenes] = colour_cue_check(settings.data / scenes)
        print(
            "{} scenes: colour alone labels {:.0f}% of the validation pixels right with one "
            "global colour table, {:.0f}% with each image's own class colours".format(
                scenes,
                100 * colour[scenes]["global_accuracy"],
                100 * colour[scenes]["per_image_accuracy"],
            )
        )
    committed = load_committed(settings.committed)
    runs = []
    for seed in settings.seeds:
        for scenes in settings.scenes:
            record, rate = run_seed(settings, scenes, seed, rate, committed)
            runs.append(record)
    total = time.perf_counter() - start
    if len(settings.seeds) > 1:
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
        panels = {f"{s} scenes": curves(runs, s) for s in settings.scenes}
        seeds = ",".join(map(str, settings.seeds))
        figure = save_learning_curves(
            panels,
            f"validation mIoU over seeds {seeds} (mean, min-max band)",
            out.with_name(out.stem + "_curves.png"),
        )
        print_summary(summary)
        print(f"wrote {out} and {figure}")
    print(f"total time: {format_duration(total)} ({settings.threads} threads)")
