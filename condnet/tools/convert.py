"""``tools/convert.py PLAIN.pth OUT.pth (--config CFG | --model NAME)``: a trained
plain model as its warm-started CondNet twin, to fine-tune with ``tools/train.py
--load-from``.

Example (the demo's networks)::

    python tools/convert.py work_dirs/plain/latest.pth work_dirs/twin.pth \\
        --config condnet_r18-d8_scenes
    python tools/train.py condnet_r18-d8_scenes --load-from work_dirs/twin.pth

The input is a checkpoint of this package (``iter_N.pth``, ``latest.pth`` or
``best.pth`` of ``tools/train.py``) or a bare state dict, of a model with the
plain 1x1 classifier: a ``-plain`` zoo model or any config with
``model.classifier="plain"``. ``--config`` (a config's name or file, of either twin) or
``--model`` (a zoo name, either twin) says which network it is. Its classifier
becomes the conditional classifier, warm-started
(:func:`condnet.models.conditional_twin_state_dict`): the guidance takes the
plain classifier, and the projection is set so that every generated per-image
classifier is the plain one. Before writing, the tool loads both networks
(strictly) and compares their logits on a random input in float64; they are
equal, so fine-tuning starts from the plain model's predictions. The output's
folder is checked before anything is read; the file is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from ..checkpoint_files import load_tensors, read_state_dict, save_atomic
from ..models import (
    MODEL_CONFIGS,
    ModelConfig,
    build_model,
    check_warm_start,
    conditional_twin_state_dict,
)
from ..nn import LAYOUTS
from .cli_common import (
    CONFIG_HELP,
    add_cfg_options_argument,
    check_output_path,
    command_name,
    config_file,
    load_config_or_exit,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("convert"),
        description="Turn a trained plain-classifier model into its warm-started CondNet "
        "twin (same predictions before fine-tuning), for tools/train.py --load-from.",
    )
    parser.add_argument("input", help="plain model checkpoint or state dict (.pth)")
    parser.add_argument("output", help="where to write the CondNet checkpoint")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--config",
        type=config_file,
        help="config of the plain model or of its CondNet twin: " + CONFIG_HELP,
    )
    which.add_argument("--model", help="zoo name of the plain model or of its CondNet twin")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="the conditional classifier's projection layout (default: the config's)",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        default=(64, 64),
        metavar=("H", "W"),
        help="size of the random input the two models are compared on (default: 64 64)",
    )
    add_cfg_options_argument(parser, "model.channels=256")
    return parser


def twin_configs(parser, args) -> tuple[ModelConfig, ModelConfig]:
    """(plain, conditional) model configs from --config or --model and --layout."""
    if args.model is not None:
        if args.model not in MODEL_CONFIGS:
            parser.error(
                f"--model: unknown {args.model!r}; valid names: {', '.join(MODEL_CONFIGS)}"
            )
        if args.cfg_options:
            parser.error("--cfg-options: only with --config")
        config = MODEL_CONFIGS[args.model]
    else:
        options = [*args.cfg_options, "model.pretrained_backbone=False"]
        config = load_config_or_exit(parser, args.config, options).model.config
    if config.classifier == "cac":
        parser.error(
            "a CAC model has no warm-started twin: its cosine classifier cannot reproduce the "
            "plain model's logits; this tool makes CondNet twins (name a condnet_* model or "
            "its -plain twin). Released CAC checkpoints convert with condnet-convert-released"
        )
    conditional = dataclasses.replace(
        config, classifier="conditional", layout=args.layout or config.layout
    )
    return dataclasses.replace(config, classifier="plain"), conditional


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if min(args.shape) < 1:
        parser.error(f"--shape: expected positive sizes; got {args.shape}")
    check_output_path(parser, args.output, "output")
    plain_config, twin_config = twin_configs(parser, args)
    plain, twin = build_model(plain_config), build_model(twin_config)
    try:
        state = read_state_dict(args.input)
        load_tensors(plain, state, target="the plain model")
        converted = conditional_twin_state_dict(state, layout=twin_config.layout)
        load_tensors(twin, converted, target="the CondNet twin")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        diff = check_warm_start(plain, twin, tuple(args.shape))
    except ValueError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 1
    meta = {
        "converted_from": os.path.abspath(args.input),
        "layout": twin_config.layout,
        "warm_start_max_logit_difference": diff,
    }
    save_atomic({"state_dict": converted, "meta": meta}, args.output)
    print(
        f"wrote the warm-started CondNet twin ({len(converted)} tensors, layout "
        f"{twin_config.layout!r}) to {args.output}; its logits equal the plain model's "
        f"(largest difference {diff:.2g} in float64 on a random {args.shape[0]}x{args.shape[1]} "
        "image); fine-tune it with tools/train.py CONFIG --load-from " + str(args.output)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
