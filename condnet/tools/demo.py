"""``tools/demo.py``: CondNet against its plain twin on the generated scenes, on the CPU.

It writes the scene set (``condnet.data.scenes``) unless it is already there,
trains the small demo CondNet (``configs/demo/condnet_r18-d8_scenes.py``) and
its plain-classifier twin (``configs/demo/plain_r18-d8_scenes.py``) with the
same seed, data order and budget, evaluates both on the validation scenes,
prints their mIoUs side by side and saves:

- ``<work-dir>/predictions.png``: image | ground truth | plain | CondNet, one
  row per validation image;
- ``<work-dir>/guidance.png``: CondNet's guidance maps (the soft class masks
  its conditional classifier pools with) for the same images;
- ``<work-dir>/results.json``: both models' metrics and run times.

Training resumes where a previous, interrupted demo stopped (``--fresh``
starts over). ``make demo`` runs it from a fresh clone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import condnet

from ..engine import dist
from ..engine.builders import build_dataset, dataset_meta
from ..engine.config import ConfigError, load_config
from ..engine.evaluate import evaluate
from ..engine.visualize import denormalize, guidance_grid, overlay, save_image
from .cli_common import add_device_argument, write_json

MODELS = (("plain", "plain_r18-d8_scenes.py"), ("condnet", "condnet_r18-d8_scenes.py"))
SCENES = dict(num_train=200, num_val=50, size=192)


def _default_configs() -> Path:
    return Path(condnet.__file__).resolve().parents[1] / "configs" / "demo"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/demo.py",
        description="Train CondNet and its plain twin on the generated scenes; compare them.",
    )
    parser.add_argument("--data", default="data/scenes", help="scene set root (data/scenes)")
    parser.add_argument("--work-dir", default="work_dirs/demo", help="outputs (work_dirs/demo)")
    parser.add_argument("--configs", default=None, help="folder of the two demo configs")
    parser.add_argument("--iters", type=int, help="training iterations (default: the configs')")
    parser.add_argument("--seed", type=int, default=0)
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


def save_figures(models: dict, val_set, work_dir: Path, count: int, device) -> list[Path]:
    """The predictions and guidance figures for the first ``count`` validation images."""
    names, palette = dataset_meta(val_set)
    pred_rows, guide_rows = [], []
    for index in range(min(count, len(val_set))):
        sample = val_set[index]
        label = sample["gt_semantic_seg"].numpy()
        size = label.shape
        image = _image_uint8(sample, size)
        img = sample["img"][None].to(device)
        row = [image, overlay(image, label, palette, opacity=1.0)]
        for model in models.values():
            pred = model.predict(img, out_size=size).argmax(1)[0].cpu().numpy()
            row.append(overlay(image, pred, palette, opacity=1.0))
        gap = np.full((size[0], 4, 3), 255, np.uint8)
        pred_rows.append(np.concatenate([part for cell in row for part in (cell, gap)][:-1], 1))
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
        guide_rows.append(guidance_grid(image, probs, present, names, palette))
    paths = [work_dir / "predictions.png", work_dir / "guidance.png"]
    save_image(_stack(pred_rows), paths[0])
    save_image(_stack(guide_rows), paths[1])
    return paths


class _Stopped(Exception):
    """Training stopped by SIGTERM/SIGINT after saving; the demo stops too."""


def train_and_evaluate(config: Path, work_dir: Path, options: list[str], fresh: bool, device):
    from ..engine.trainer import Trainer

    cfg = load_config(config, options)
    trainer = Trainer(cfg, work_dir, device=device, validate=False)
    latest = None if fresh else trainer.checkpoints.latest()
    if latest is not None:
        trainer.resume(latest)
    start = time.perf_counter()
    summary = trainer.run()
    train_s = time.perf_counter() - start
    if summary["stopped_by_signal"] is not None:
        raise _Stopped(summary["stopped_by_signal"])
    model = trainer.model.eval()
    names, palette = dataset_meta(trainer.train_set)
    val_set = build_dataset(cfg, "val")
    results = evaluate(
        model,
        val_set,
        num_classes=model.num_classes,
        class_names=names,
        palette=palette,
        device=trainer.device,
        progress=False,
    )
    return model, val_set, results, train_s


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        parser.error(f"--iters must be >= 1; got {args.iters}")
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1; got {args.num_images}")
    configs = Path(args.configs) if args.configs else _default_configs()
    missing = [name for _, name in MODELS if not (configs / name).is_file()]
    if missing:
        parser.error(f"--configs: {configs} lacks {', '.join(missing)}")
    if dist.launched_by_torchrun():
        parser.error("the demo runs as one process; start it without torchrun")

    start = time.perf_counter()
    data, work_dir = Path(args.data), Path(args.work_dir)
    ensure_scenes(data, args.seed)
    options = [f"data.root={str(data)!r}", f"runner.seed={args.seed}"]
    if args.iters is not None:
        options.append(f"runner.max_iters={args.iters}")
    models, results, times = {}, {}, {}
    try:
        for name, file in MODELS:
            print(f"\n== training {name} ({file}) ==", flush=True)
            model, val_set, results[name], times[name] = train_and_evaluate(
                configs / file, work_dir / name, options, args.fresh, args.device
            )
            models[name] = model
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except _Stopped as stop:
        print("stopped; run the demo again to continue where it stopped", file=sys.stderr)
        return 128 + stop.args[0]
    figures = save_figures(models, val_set, work_dir, args.num_images, args.device)
    total = time.perf_counter() - start

    print(f"\nvalidation ({len(val_set)} scenes), same seed, data order and budget:")
    print(f"{'model':<28}{'mIoU':>8}{'mAcc':>8}{'aAcc':>8}{'train s':>10}")
    labels = {"plain": "plain 1x1 classifier", "condnet": "CondNet (conditional)"}
    for name, metrics in results.items():
        print(
            f"{labels[name]:<28}"
            + "".join(f"{100 * metrics[k]:>8.2f}" for k in ("mIoU", "mAcc", "aAcc"))
            + f"{times[name]:>10.0f}"
        )
    gain = 100 * (results["condnet"]["mIoU"] - results["plain"]["mIoU"])
    print(f"CondNet - plain: {gain:+.2f} mIoU")
    summary = {
        name: {
            **{k: float(results[name][k]) for k in ("aAcc", "mIoU", "mAcc")},
            "train_seconds": times[name],
        }
        for name in results
    }
    summary["total_seconds"] = total
    summary["torch"] = torch.__version__
    write_json(summary, work_dir / "results.json")
    print(f"figures: {', '.join(str(p) for p in figures)}")
    print(f"total time: {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
