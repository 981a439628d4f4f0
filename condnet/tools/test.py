"""``tools/test.py CONFIG CHECKPOINT``: evaluate a checkpoint on the config's validation set.

Prints the per-class IoU/Acc table and aAcc/mIoU/mAcc (mmseg's ``tools/test.py``).

Examples::

    python tools/test.py CONFIG work_dirs/run1/best.pth
    python tools/test.py CONFIG CKPT --aug-test              # evaluation.aug_scales + flip
    python tools/test.py CONFIG CKPT --mode slide --crop-size 512 512 --stride 341 341
    python tools/test.py CONFIG CKPT --show-dir vis --guidance-dir guide --out results.json
    PORT=29501 tools/dist_test.sh CONFIG CKPT 4 --aug-test   # 4 GPUs (torchrun)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from ..engine import dist
from ..engine.amp import AMP_DTYPES
from ..engine.metrics import format_table
from .cli_common import (
    CONFIG_HELP,
    add_cfg_options_argument,
    add_device_argument,
    command_name,
    config_file,
    load_config_or_exit,
    write_json,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("test"),
        description="Evaluate a checkpoint on the validation split of a config (mmseg-style).",
    )
    parser.add_argument("config", type=config_file, help=CONFIG_HELP)
    parser.add_argument("checkpoint", help="checkpoint file (.pth): ours or a released mmseg one")
    parser.add_argument(
        "--eval",
        nargs="+",
        choices=("mIoU",),
        default=["mIoU"],
        help="metric: mIoU reports aAcc, mIoU, mAcc and per-class IoU/Acc (the default)",
    )
    parser.add_argument(
        "--aug-test",
        action="store_true",
        help="multi-scale + flip test with the config's evaluation.aug_scales and .flip",
    )
    parser.add_argument(
        "--mode",
        metavar="whole|slide",
        help="whole image or sliding windows (default: the config's evaluation.mode, else the "
        "model's test setting)",
    )
    parser.add_argument("--crop-size", nargs=2, type=int, metavar=("H", "W"), help="slide window")
    parser.add_argument("--stride", nargs=2, type=int, metavar=("H", "W"), help="slide stride")
    parser.add_argument("--show-dir", help="write <image>.png: the prediction over the image")
    parser.add_argument(
        "--opacity", type=float, default=0.5, help="class colour weight in --show-dir (0.5)"
    )
    parser.add_argument(
        "--guidance-dir",
        help="write <image>.png: CondNet's guidance map per class present (CondNet models only)",
    )
    parser.add_argument("--out", help="write the results as JSON to this file")
    add_cfg_options_argument(parser, "data.root=data/ade evaluation.workers_per_gpu=4")
    add_device_argument(parser)
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), help="mixed precision inference")
    parser.add_argument(
        "--launcher",
        choices=("none", "torchrun"),
        help="torchrun: join its process group (default when torchrun's RANK/WORLD_SIZE are set)",
    )
    # torch.distributed.launch (deprecated) passes this; torchrun uses LOCAL_RANK.
    parser.add_argument("--local-rank", "--local_rank", type=int, help=argparse.SUPPRESS)
    return parser


# The command line's names of the inference settings it takes.
_CLI_KEYS = {"mode": "--mode", "crop_size": "--crop-size", "stride": "--stride"}


def _settings(args, cfg, model, parser: argparse.ArgumentParser):
    """The inference settings: the model's ``test_cfg``, under the config's
    ``evaluation`` section, under the command line, field by field
    (:func:`condnet.models.resolve_inference`, as the Trainer's evaluation)."""
    from ..models import check_inference_fields, resolve_inference

    cli = {"mode": args.mode, "crop_size": args.crop_size, "stride": args.stride}
    try:
        cli = check_inference_fields(cli, _CLI_KEYS)
        layer = cfg.evaluation.inference_layer(aug_test=args.aug_test)
        return resolve_inference(model.test_cfg, layer, cli)
    except ValueError as err:
        parser.error(
            f"{err} (give --mode, --crop-size H W and --stride H W, or set "
            "evaluation.mode, .crop_size and .stride in the config)"
        )


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _write_out(path: Path, args, results: dict, class_names, settings) -> None:
    per_class = [
        {"class": name, "IoU": _json_number(iou), "Acc": _json_number(acc)}
        for name, iou, acc in zip(class_names, results["IoU"], results["Acc"], strict=True)
    ]
    record = {
        "config": str(args.config),
        "checkpoint": str(args.checkpoint),
        "metrics": {k: _json_number(results[k]) for k in ("aAcc", "mIoU", "mAcc")},
        "per_class": per_class,
        "settings": {**dataclasses.asdict(settings), "amp": args.amp},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, path)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = dist.choose_device(args.device)
    launcher = args.launcher or ("torchrun" if dist.launched_by_torchrun() else "none")
    if launcher == "torchrun" and not dist.launched_by_torchrun():
        parser.error(
            "--launcher torchrun: RANK/WORLD_SIZE are not set; start it with torchrun "
            "(tools/dist_test.sh CONFIG CHECKPOINT GPUS)"
        )
    if not 0.0 <= args.opacity <= 1.0:
        parser.error(f"--opacity must be in [0, 1]; got {args.opacity}")
    if not Path(args.checkpoint).is_file():
        parser.error(f"checkpoint: no such file {args.checkpoint}")
    if args.out is not None and Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a directory; give a file name (results.json)")
    # The checkpoint replaces every weight: never fetch pretrained backbone weights.
    options = [*args.cfg_options, "model.pretrained_backbone=False"]
    cfg = load_config_or_exit(parser, args.config, options)

    # The model stack loads after the argument checks, so `--help` and typos stay fast.
    from ..engine.builders import build_model
    from ..engine.evaluate import has_guidance

    try:
        model = build_model(cfg)
    except (ValueError, TypeError) as err:
        print(f"error: building the model: {err}", file=sys.stderr)
        return 1
    if args.guidance_dir is not None and not has_guidance(model):
        parser.error(
            "--guidance-dir needs a CondNet model (conditional classifier); this config "
            "builds a plain classifier, which has no guidance maps"
        )
    settings = _settings(args, cfg, model, parser)

    if launcher == "torchrun":
        dist.init_distributed(device)
    try:
        _run(args, cfg, model, settings, device)
    except (OSError, ValueError) as err:  # data, weights, unreadable files
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if launcher == "torchrun":
            dist.cleanup()
    return 0


def _run(args, cfg, model, settings, device: str) -> None:
    """Load the weights and the data, evaluate, report (rank 0)."""
    from ..engine.builders import build_dataset, dataset_meta
    from ..engine.evaluate import evaluate
    from ..engine.weights import load_weights

    load_weights(model, args.checkpoint)
    dataset = build_dataset(cfg, "val")
    class_names, palette = dataset_meta(dataset)
    main_rank, world = dist.is_main(), dist.get_world_size()
    if main_rank:
        processes = f"{world} processes" if world > 1 else "1 process"
        print(f"evaluating {args.checkpoint} on {len(dataset)} images ({processes}, {device})")
        shown = dataclasses.asdict(settings).items()
        print("test settings: " + ", ".join(f"{k}={v}" for k, v in shown))
        if args.aug_test:
            print(
                f"multi-scale test (--aug-test): scales {settings.scales}, "
                f"flip {settings.flip} (evaluation.aug_scales / evaluation.flip)"
            )
    results = evaluate(
        model,
        dataset,
        num_classes=len(class_names),
        class_names=class_names,
        palette=palette,
        device=dist.local_device(device),
        amp=args.amp,
        show_dir=args.show_dir,
        opacity=args.opacity,
        guidance_dir=args.guidance_dir,
        batch_size=cfg.evaluation.samples_per_gpu,
        num_workers=cfg.evaluation.workers_per_gpu,
        progress=True,
        inference=settings,
    )
    if main_rank:
        print(format_table(results, class_names))
        if args.out is not None:
            _write_out(Path(args.out), args, results, class_names, settings)
            print(f"results written to {args.out}", file=sys.stderr)
    dist.barrier()


if __name__ == "__main__":
    sys.exit(main())
