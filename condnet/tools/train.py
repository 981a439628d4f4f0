"""``tools/train.py CONFIG``: train a model (one process, or one per GPU under torchrun).

Examples::

    condnet-train condnet_r50-d8_512x512_160k_ade20k      # a packaged config, by name
    python tools/train.py path/to/my_config.py              # or a config file
    python tools/train.py CONFIG --work-dir work_dirs/run1 --auto-resume --amp bf16
    python tools/train.py CONFIG --cfg-options runner.max_iters=1000 data.samples_per_gpu=2
    PORT=29501 tools/dist_train.sh CONFIG 4          # 4 GPUs (torchrun, DDP, SyncBN)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import dist
from ..engine.amp import AMP_DTYPES
from .cli_common import (
    CONFIG_HELP,
    add_cfg_options_argument,
    add_device_argument,
    command_name,
    config_file,
    load_config_or_exit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("train"),
        description="Train a segmentation model from a config (mmseg-style).",
    )
    parser.add_argument("config", type=config_file, help=CONFIG_HELP)
    parser.add_argument(
        "--work-dir",
        help="logs and checkpoints (default: config's work_dir, else work_dirs/<config name>)",
    )
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume-from", help="continue training from this checkpoint")
    resume.add_argument(
        "--auto-resume",
        action="store_true",
        help="continue from the newest intact checkpoint in the work dir, if any",
    )
    parser.add_argument("--load-from", help="start from these weights (iteration 0)")
    parser.add_argument("--no-validate", action="store_true", help="skip periodic evaluation")
    parser.add_argument("--seed", type=int, help="random seed (default: runner.seed)")
    parser.add_argument(
        "--deterministic", action="store_true", help="deterministic kernels (slower)"
    )
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), help="mixed precision")
    add_device_argument(parser)
    add_cfg_options_argument(parser, "optimizer.lr=0.02 data.samples_per_gpu=2")
    return parser


def _options(args: argparse.Namespace) -> list[str]:
    options = list(args.cfg_options)
    if args.seed is not None:
        options.append(f"runner.seed={args.seed}")
    if args.deterministic:
        options.append("runner.deterministic=True")
    if args.amp is not None:
        options.append(f"runner.amp={args.amp!r}")
    return options


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    device = dist.choose_device(args.device)
    cfg = load_config_or_exit(parser, args.config, _options(args))
    for flag in ("resume_from", "load_from"):
        path = getattr(args, flag) or getattr(cfg, flag)
        if path is not None and not Path(path).is_file():
            parser.error(f"--{flag.replace('_', '-')}: no such file {path}")
    work_dir = Path(args.work_dir or cfg.work_dir or Path("work_dirs") / Path(args.config).stem)

    # The model stack loads after the argument checks, so `--help` and typos stay fast.
    from ..engine.config import dump_config
    from ..engine.trainer import Trainer

    dist.init_distributed(device)
    try:
        trainer = Trainer(cfg, work_dir, device=device, validate=not args.no_validate)
        if dist.is_main():
            dump_config(cfg, work_dir / Path(args.config).name)
        resume_from = args.resume_from or cfg.resume_from
        if resume_from is None and (args.auto_resume or cfg.auto_resume):
            if dist.is_main():
                trainer.checkpoints.remove_temporaries()
            dist.barrier()
            resume_from = trainer.checkpoints.latest()
            if resume_from is None:
                trainer.log.info(f"--auto-resume: no checkpoint in {work_dir}; starting afresh")
        if resume_from is not None:
            trainer.resume(resume_from)
        elif args.load_from or cfg.load_from:
            trainer.load_from(args.load_from or cfg.load_from)
    except (FileNotFoundError, ValueError) as err:  # setup problems: data, weights, config
        print(f"error: {err}", file=sys.stderr)
        dist.cleanup()
        return 1
    try:
        summary = trainer.run()
    finally:
        dist.cleanup()
    signum = summary["stopped_by_signal"]
    return 0 if signum is None else 128 + signum


if __name__ == "__main__":
    sys.exit(main())
