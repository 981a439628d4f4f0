"""``condnet-demo``: CondNet against its plain twin on the generated scenes, on the CPU.

The command line of :func:`condnet.demo.run.run_demo` (what it trains, measures and
writes is described there and in :mod:`condnet.demo.stages`). By default the scene
set goes to ``./data/scenes`` and the runs to ``./work_dirs/demo``, under the folder
the command is run from; the two configs are the ones shipped in the package.
``--seeds 0,1,2`` runs both recipes for every seed and writes the paired comparison
(``--json``, ``benchmarks/results/demo_scenes.json`` by ``make demo-seeds``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..demo.run import DemoSettings, default_configs, missing_configs, run_demo
from ..demo.stages import ARM_ITERS, STAGE_ITERS, TrainingStopped
from ..engine import dist
from ..engine.config import ConfigError
from .cli_common import add_device_argument, command_name


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
    parser.add_argument(
        "--data", default="data/scenes", help="scene set root (data/scenes, in the current folder)"
    )
    parser.add_argument(
        "--work-dir",
        default="work_dirs/demo",
        help="outputs (work_dirs/demo, in the current folder)",
    )
    parser.add_argument(
        "--configs", default=None, help="folder of the two demo configs (default: the package's)"
    )
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


def main(argv: Sequence[str] | None = None) -> int:
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
    configs = Path(args.configs) if args.configs else default_configs()
    missing = missing_configs(configs)
    if missing:
        parser.error(f"--configs: {configs} lacks {', '.join(missing)}")
    if dist.launched_by_torchrun():
        parser.error("the demo runs as one process; start it without torchrun")
    settings = DemoSettings(
        data=Path(args.data),
        work_dir=Path(args.work_dir),
        configs=configs,
        from_scratch=args.from_scratch,
        stage_iters=args.stage_iters,
        iters=args.iters,
        seed=args.seed,
        seeds=tuple(args.seeds) if args.seeds else None,
        json=Path(args.json) if args.json else None,
        scene_seed=args.scene_seed,
        threads=args.threads,
        device=args.device,
        num_images=args.num_images,
        fresh=args.fresh,
    )
    try:
        run_demo(settings)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except TrainingStopped as stop:
        print("stopped; run the demo again to continue where it stopped", file=sys.stderr)
        return 128 + stop.args[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
