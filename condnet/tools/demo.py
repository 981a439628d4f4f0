"""``condnet-demo``: a plain classifier, CondNet and CAC on the same network, trained on
generated scenes on the CPU.

The command line of :func:`condnet.demo.run.run_demo` (what it trains, measures and
writes is described there and in :mod:`condnet.demo.stages`). By default the scene
sets go under ``./data/scenes`` and the runs to ``./work_dirs/demo``, under the folder
the command is run from; the three configs are the ones shipped in the package.
``--seeds 0,1,2,3,4 --scenes cue,control`` runs every arm at every seed on both sets
and writes the paired comparison (``--json``; ``make demo-seeds`` writes
``benchmarks/results/demo_scenes.json``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..demo.run import COMMITTED, DemoSettings, default_configs, missing_configs, run_demo
from ..demo.stages import ARM_ITERS, STAGE_ITERS, TrainingStopped
from ..demo.stats import ARMS, SCENE_SETS
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


def _name_list(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [n for n in names if n not in allowed]
        if not names or unknown or len(set(names)) != len(names):
            raise argparse.ArgumentTypeError(
                f"expected distinct comma-separated names from {', '.join(allowed)}; got {text!r}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("demo"),
        description="Train a plain classifier, CondNet and CAC on the same network on "
        "generated scenes and compare them.",
    )
    parser.add_argument(
        "--data",
        default="data/scenes",
        help="folder of the scene sets, one subfolder per set (data/scenes, in the current folder)",
    )
    parser.add_argument(
        "--work-dir",
        default="work_dirs/demo",
        help="outputs (work_dirs/demo, in the current folder)",
    )
    parser.add_argument(
        "--configs", default=None, help="folder of the three demo configs (default: the package's)"
    )
    parser.add_argument(
        "--scenes",
        type=_name_list(SCENE_SETS),
        default=["cue"],
        help="scene sets: cue (a class's colour consistent within each image), control "
        "(drawn per region: no per-image cue); default cue",
    )
    parser.add_argument(
        "--arms",
        type=_name_list(ARMS),
        default=list(ARMS),
        help="classifiers to train, plain included (default plain,condnet,cac)",
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
        help=f"iterations of each arm after the stage ({ARM_ITERS})",
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (0)")
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        help="run every arm for each of these seeds (e.g. 0,1,2,3,4) and write the paired "
        "comparison to --json",
    )
    parser.add_argument(
        "--json", help="where --seeds writes its runs (default: <work-dir>/demo_scenes.json)"
    )
    parser.add_argument(
        "--committed",
        default=str(COMMITTED),
        help=f"committed multi-seed results to compare a run with ({COMMITTED}); 'none' for none",
    )
    parser.add_argument("--scene-seed", type=int, default=0, help="seed of the scene sets (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    add_device_argument(parser, default="cpu")
    parser.add_argument("--num-images", type=int, default=4, help="images in the figures")
    parser.add_argument("--fresh", action="store_true", help="retrain instead of resuming")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--threads", args.threads), ("--num-images", args.num_images)):
        if value < 1:
            parser.error(f"{flag} must be >= 1; got {value}")
    for flag, value in (("--stage-iters", args.stage_iters), ("--iters", args.iters)):
        if value < 1:
            parser.error(f"{flag} must be >= 1; got {value}")
    if "plain" not in args.arms:
        parser.error("--arms must include plain (the baseline the others are compared with)")
    if args.seeds is not None and len(args.seeds) < 2:
        parser.error("--seeds needs at least two seeds; use --seed for one")
    if args.seeds is not None and args.seed is not None:
        parser.error("--seed and --seeds: give one of them")
    if args.json is not None and args.seeds is None:
        parser.error("--json is where --seeds writes its report; it needs --seeds")
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
        scenes=tuple(args.scenes),
        arms=tuple(args.arms),
        seeds=tuple(args.seeds) if args.seeds else (args.seed or 0,),
        stage_iters=args.stage_iters,
        iters=args.iters,
        json=Path(args.json) if args.json else None,
        committed=None if args.committed.lower() == "none" else Path(args.committed),
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
