"""``tools/demo.py``: CondNet against its plain twin on the generated scenes, on the CPU.

Two recipes, each a matched comparison (same network, data, seed, data order
and training budget; only the classifier differs):

- ``warm_start`` (default): a shared plain stage trains the plain network
  (``configs/demo/plain_r18-d8_scenes.py``); then two arms get the same
  additional budget from its weights: the plain model continues, and the
  CondNet arm is the same network converted by ``tools/convert.py`` (guidance
  = the trained classifier, every generated classifier = the plain one, so it
  starts from the plain model's predictions) and fine-tuned with the released
  losses (``configs/demo/condnet_r18-d8_scenes.py``);
- ``from_scratch`` (``--from-scratch``, the paper's recipe): both models
  trained from random initialisation for the stage + arm budget.

It writes the scene set (``condnet.data.scenes``) unless it is already there,
measures what colour alone gives a global and a per-image classifier on it
(:func:`condnet.data.colour_cue_check`), trains, evaluates both final models
on the validation scenes (mIoU, mAcc, aAcc and CondNet's guidance accuracy)
and saves into ``<work-dir>/<recipe>-seed<seed>/``:

- ``predictions.png``: image | ground truth | plain | CondNet, titled, with a
  class-colour legend, one row per validation image;
- ``guidance.png``: CondNet's guidance maps (the soft class masks its
  conditional classifier pools with), each titled with its class's IoU;
- ``results.json``: every metric, the budgets, the thread count and times.

``--seeds 0,1,2`` runs both recipes for every seed and writes the paired
comparison (``--json``, ``benchmarks/results/demo_scenes.json`` by
``make demo-seeds``). Training resumes where an interrupted demo stopped
(``--fresh`` starts over). Torch's thread count is fixed (``--threads``, 2)
and recorded: same-seed runs with different thread counts diverge.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import condnet

from ..data import colour_cue_check
from ..engine import dist
from ..engine.builders import build_dataset, dataset_meta
from ..engine.config import ConfigError, load_config, with_options
from ..engine.evaluate import evaluate
from ..engine.logger import format_duration
from ..engine.visualize import (
    denormalize,
    guidance_grid,
    overlay,
    predictions_figure,
    present_classes,
    save_image,
)
from . import convert
from .cli_common import add_device_argument, command_name, write_json

MODELS = (("plain", "plain_r18-d8_scenes.py"), ("condnet", "condnet_r18-d8_scenes.py"))
SCENES = dict(num_train=200, num_val=50, size=192)
RECIPES = ("warm_start", "from_scratch")
LABELS = {"plain": "plain 1x1 classifier", "condnet": "CondNet (conditional)"}
TITLES = {"plain": "plain classifier", "condnet": "CondNet"}
# The arms of the warm start fine-tune at this fraction of the config's learning rate
# (both arms alike). Measured at seed 0 (200 iterations from the same plain stage,
# guidance weight 1.0): 0.2 gave plain 23.91 / CondNet 24.00 mIoU, 1.0 gave 22.90 /
# 23.88; restarting at the stage's full rate undoes part of what it learnt.
ARM_LR_FACTOR = 0.2
# Seconds per training iteration on the quiet 2-core machine at 2 threads, for the
# ETA of the first stage (later stages use the measured rate).
PRIOR_SECONDS_PER_ITER = 0.6
# The budget: about 6 minutes for the warm start on the quiet 2-core machine.
STAGE_ITERS, ARM_ITERS = 250, 150


def _default_configs() -> Path:
    return Path(condnet.__file__).resolve().parent / "configs" / "demo"


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers; got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct seeds; got {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("demo"),
        description="Train CondNet and its plain twin on the generated scenes; compare them.",
    )
    parser.add_argument("--data", default="data/scenes", help="scene set root (data/scenes)")
    parser.add_argument("--work-dir", default="work_dirs/demo", help="outputs (work_dirs/demo)")
    parser.add_argument("--configs", default=None, help="folder of the two demo configs")
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train both models from random initialisation (the paper's recipe) "
        "instead of the warm start",
    )
    parser.add_argument(
        "--stage-iters",
        type=int,
        default=STAGE_ITERS,
        help=f"iterations of the shared plain stage ({STAGE_ITERS})",
    )
    parser.add_argument(
        "--iters",
        type=int,
        default=ARM_ITERS,
        help=f"iterations of each arm after the stage ({ARM_ITERS}); from scratch, each "
        "model trains for the stage + arm iterations",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (0)")
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        help="run both recipes for each of these seeds (e.g. 0,1,2) and write the paired "
        "comparison to --json",
    )
    parser.add_argument(
        "--json", help="where --seeds writes its runs (default: <work-dir>/demo_scenes.json)"
    )
    parser.add_argument("--scene-seed", type=int, default=0, help="seed of the scene set (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--num-images", type=int, default=4, help="images in the figures")
    parser.add_argument("--fresh", action="store_true", help="retrain instead of resuming")
    return parser


def ensure_scenes(root: Path, seed: int) -> None:
    """Writes the scene set unless ``root`` already holds it with these settings."""
    from condnet.data import write_scenes

    meta_path = root / "scenes.json"
    wanted = dict(SCENES, seed=seed)
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in wanted.items()):
            print(f"using the scene set in {root}")
            return
    start = time.perf_counter()
    write_scenes(root, seed=seed, overwrite=True, **SCENES)
    print(
        f"wrote {SCENES['num_train']} training and {SCENES['num_val']} validation scenes to "
        f"{root} in {time.perf_counter() - start:.0f} s"
    )


# -- figures -------------------------------------------------------------------------


def _image_uint8(sample: dict, size: tuple[int, int]) -> np.ndarray:
    """The sample's image as uint8 RGB at ``size`` (the label's, ``ori_shape``)."""
    image = Image.fromarray(denormalize(sample["img"], sample["img_norm_cfg"]))
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR))


def _stack(rows: list[np.ndarray], gap: int = 4) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
    ]
    return np.concatenate(padded)[:-gap]


def save_figures(
    models: dict, condnet_iou: dict, val_set, work_dir: Path, count: int, device
) -> list[Path]:
    """The predictions and guidance figures for the first ``count`` validation images.

    ``condnet_iou``: CondNet's validation IoU per class name, in percent (the
    guidance tiles' titles)."""
    names, palette = dataset_meta(val_set)
    ious = [condnet_iou[name] / 100 for name in names]
    pred_rows, maps, guide_rows = [], [], []
    for index in range(min(count, len(val_set))):
        sample = val_set[index]
        label = sample["gt_semantic_seg"].numpy()
        size = label.shape
        image = _image_uint8(sample, size)
        img = sample["img"][None].to(device)
        preds = [
            model.predict(img, out_size=size).argmax(1)[0].cpu().numpy()
            for model in models.values()
        ]
        maps += [label, *preds]
        pred_rows.append(
            [image, *(overlay(image, m, palette, opacity=1.0) for m in (label, *preds))]
        )
        with torch.no_grad():
            _, guide = models["condnet"].decode(img)
        probs = (
            torch.nn.functional.interpolate(
                guide.float().softmax(1), size=size, mode="bilinear", align_corners=False
            )[0]
            .cpu()
            .numpy()
        )
        present = sorted(int(k) for k in np.unique(label) if k < len(names))
        title = f"validation image {index}"
        guide_rows.append(
            guidance_grid(image, probs, present, names, palette, ious=ious, image_title=title)
        )
    titles = ["image", "ground truth", *(TITLES[name] for name in models)]
    legend = present_classes(maps, len(names))
    paths = [work_dir / "predictions.png", work_dir / "guidance.png"]
    save_image(
        predictions_figure(pred_rows, titles, names, palette, legend_classes=legend), paths[0]
    )
    save_image(_stack(guide_rows), paths[1])
    return paths


# -- training ------------------------------------------------------------------------


class _Stopped(Exception):
    """Training stopped by SIGTERM/SIGINT after saving; the demo stops too."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training of a run: ``iters`` iterations of ``model`` ("plain" or
    "condnet") into ``work_dir``, starting from the weights ``load_from``
    (None: random initialisation); ``convert_from``: first write ``load_from``
    as the warm-started twin of this plain checkpoint (``tools/convert.py``)."""

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


def train(stage: Stage, config: Path, options: list[str], fresh: bool, device):
    """Runs ``stage``; returns the trained model (eval mode) and the training seconds."""
    from ..engine.trainer import Trainer

    cfg = load_config(config, [*options, f"runner.max_iters={stage.iters}"])
    if stage.lr_factor != 1.0:
        cfg = with_options(cfg, {"optimizer.lr": cfg.optimizer.lr * stage.lr_factor})
    if stage.convert_from is not None and (fresh or not stage.load_from.is_file()):
        code = convert.main(
            [str(stage.convert_from), str(stage.load_from), "--config", str(config)]
        )
        if code != 0:
            raise ValueError(f"converting {stage.convert_from} to the CondNet twin failed")
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
        raise _Stopped(summary["stopped_by_signal"])
    return trainer.model.eval(), seconds


def score(model, val_set, device) -> dict:
    """mIoU, mAcc, aAcc and per-class IoU in percent; ``acc_guidance`` for CondNet."""
    names, palette = dataset_meta(val_set)
    guided = bool(getattr(model, "has_guidance", False))
    results = evaluate(
        model,
        val_set,
        num_classes=model.num_classes,
        class_names=names,
        palette=palette,
        device=device,
        guidance_accuracy=guided,
        progress=False,
    )
    out = {k: 100 * float(results[k]) for k in ("mIoU", "mAcc", "aAcc")}
    out["IoU"] = {name: 100 * float(v) for name, v in zip(names, results["IoU"], strict=True)}
    if guided:
        out["acc_guidance"] = 100 * results["acc_guidance"]
    return out


def run_recipe(args, recipe: str, seed: int, configs: Path) -> dict:
    """One run: trains ``recipe`` at ``seed``, scores both models, saves the figures."""
    run_dir = Path(args.work_dir) / f"{recipe}-seed{seed}"
    options = [f"data.root={str(Path(args.data))!r}", f"runner.seed={seed}"]
    files = dict(MODELS)
    stages = plan(recipe, args.stage_iters, args.iters, run_dir)
    print(f"\n== {recipe.replace('_', ' ')}, seed {seed} -> {run_dir} ==", flush=True)
    start = time.perf_counter()
    rate = args.rate
    models, seconds, metrics = {}, {}, {}
    val_set = build_dataset(load_config(configs / files["plain"], options), "val")
    for index, stage in enumerate(stages, 1):
        left = sum(s.iters for s in stages[index - 1 :])
        print(
            f"[{index}/{len(stages)}] {stage.label}: {stage.iters} iterations "
            f"(ETA {format_duration(rate * stage.iters)}, run ETA {format_duration(rate * left)})",
            flush=True,
        )
        model, seconds[stage.label] = train(
            stage, configs / files[stage.model], options, args.fresh, args.device
        )
        if seconds[stage.label] > 5 and stage.iters:  # a resumed stage measures nothing
            rate = args.rate = seconds[stage.label] / stage.iters
        if stage.convert_from is not None:
            # The twin before fine-tuning: the plain stage's predictions, and its
            # guidance is the plain classifier.
            start_model = _twin_at_start(configs / files["condnet"], options, stage.load_from)
            metrics["condnet_start"] = score(start_model, val_set, args.device)
        if stage.final:
            models[stage.model] = model
            metrics[stage.model] = score(model, val_set, args.device)
    figures = save_figures(
        models, metrics["condnet"]["IoU"], val_set, run_dir, args.num_images, args.device
    )
    wall = time.perf_counter() - start
    record = {
        "seed": seed,
        "recipe": recipe,
        "iterations": stages[-1].iters + (args.stage_iters if recipe == "warm_start" else 0),
        "stage_iterations": args.stage_iters if recipe == "warm_start" else 0,
        "arm_iterations": stages[-1].iters,
        "plain_miou": metrics["plain"]["mIoU"],
        "condnet_miou": metrics["condnet"]["mIoU"],
        "condnet_acc_guidance": metrics["condnet"]["acc_guidance"],
        "chance_acc_guidance": 100 / len(metrics["condnet"]["IoU"]),
        "wall_s": wall,
        "metrics": metrics,
        "train_seconds": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "figures": [str(p) for p in figures],
    }
    write_json(record, run_dir / "results.json")
    _print_run(record)
    return record


def _twin_at_start(config: Path, options: list[str], weights: Path):
    from ..engine.builders import build_model
    from ..engine.weights import load_weights

    model = build_model(load_config(config, options))
    load_weights(model, weights)
    return model.eval()


def _print_run(record: dict) -> None:
    metrics = record["metrics"]
    print(f"\nvalidation scenes, {record['recipe'].replace('_', ' ')}, seed {record['seed']}:")
    print(f"{'model':<40}{'mIoU':>8}{'mAcc':>8}{'aAcc':>8}{'guide acc':>11}")
    rows = [("plain", LABELS["plain"]), ("condnet", LABELS["condnet"])]
    if "condnet_start" in metrics:
        rows.insert(0, ("condnet_start", "shared plain stage (CondNet at start)"))
    for key, label in rows:
        m = metrics[key]
        guide = f"{m['acc_guidance']:>11.2f}" if "acc_guidance" in m else f"{'-':>11}"
        print(f"{label:<40}" + "".join(f"{m[k]:>8.2f}" for k in ("mIoU", "mAcc", "aAcc")) + guide)
    gain = record["condnet_miou"] - record["plain_miou"]
    chance = record["chance_acc_guidance"]
    print(f"CondNet - plain: {gain:+.2f} mIoU (chance guidance accuracy: {chance:.1f}%)")


def summarize(runs: list[dict]) -> dict:
    """Per recipe: the paired CondNet - plain mIoU differences, their mean and spread."""
    summary = {}
    for recipe in RECIPES:
        diffs = [r["condnet_miou"] - r["plain_miou"] for r in runs if r["recipe"] == recipe]
        if not diffs:
            continue
        summary[recipe] = {
            "seeds": len(diffs),
            "mean_difference": statistics.fmean(diffs),
            "std_difference": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "min_difference": min(diffs),
            "max_difference": max(diffs),
            "condnet_wins": sum(d > 0 for d in diffs),
            "mean_plain_miou": statistics.fmean(
                r["plain_miou"] for r in runs if r["recipe"] == recipe
            ),
            "mean_condnet_miou": statistics.fmean(
                r["condnet_miou"] for r in runs if r["recipe"] == recipe
            ),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--iters", args.iters), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{flag} must be >= 1; got {value}")
    if args.stage_iters < 1:
        parser.error(f"--stage-iters must be >= 1; got {args.stage_iters}")
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1; got {args.num_images}")
    if args.seeds is not None and args.from_scratch:
        parser.error("--seeds runs both recipes; leave out --from-scratch")
    configs = Path(args.configs) if args.configs else _default_configs()
    missing = [name for _, name in MODELS if not (configs / name).is_file()]
    if missing:
        parser.error(f"--configs: {configs} lacks {', '.join(missing)}")
    if dist.launched_by_torchrun():
        parser.error("the demo runs as one process; start it without torchrun")
    torch.set_num_threads(args.threads)
    args.rate = PRIOR_SECONDS_PER_ITER * 2 / min(args.threads, 2)

    start = time.perf_counter()
    data = Path(args.data)
    try:
        ensure_scenes(data, args.scene_seed)
        colour = colour_cue_check(data)
        print(
            "colour alone labels {:.0f}% of the validation pixels right with one global "
            "colour table, {:.0f}% with each image's own class colours: the per-image "
            "variation a global classifier cannot follow".format(
                100 * colour["global_accuracy"], 100 * colour["per_image_accuracy"]
            )
        )
        jobs = (
            [(r, s) for s in args.seeds for r in RECIPES]
            if args.seeds
            else [("from_scratch" if args.from_scratch else "warm_start", args.seed)]
        )
        runs = [run_recipe(args, recipe, seed, configs) for recipe, seed in jobs]
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except _Stopped as stop:
        print("stopped; run the demo again to continue where it stopped", file=sys.stderr)
        return 128 + stop.args[0]
    total = time.perf_counter() - start
    if args.seeds:
        summary = summarize(runs)
        out = Path(args.json) if args.json else Path(args.work_dir) / "demo_scenes.json"
        report = {
            "runs": runs,
            "summary": summary,
            "colour_cue_check": colour,
            "threads": args.threads,
            "torch": torch.__version__,
            "condnet": condnet.__version__,
            "total_seconds": total,
        }
        write_json(report, out)
        print("\npaired CondNet - plain mIoU over seeds " + ",".join(map(str, args.seeds)) + ":")
        for recipe, s in summary.items():
            print(
                f"  {recipe:<13} mean {s['mean_difference']:+.2f}  std {s['std_difference']:.2f}  "
                f"range [{s['min_difference']:+.2f}, {s['max_difference']:+.2f}]  "
                f"CondNet ahead in {s['condnet_wins']} of {s['seeds']}"
            )
        print(f"wrote {out}")
    print(f"total time: {format_duration(total)} ({args.threads} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
