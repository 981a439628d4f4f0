"""``tools/complexity.py TARGET``: parameters and FLOPs per module (mmseg's get_flops).

TARGET is a config (a file, or a packaged config's name as ``condnet-configs`` lists
them), a model name of :func:`condnet.models.list_models` or a backbone name
(:data:`condnet.models.BACKBONES`). Examples::

    condnet-complexity condnet_r50-d8_512x512_160k_ade20k
    python tools/complexity.py CONFIG --shape 512 1024 --depth 2 --json complexity.json
    python tools/complexity.py condnet_r50-d8_ade20k --depth 1
    python tools/complexity.py resnet50_v1c --shape 64 64

The model is built on the ``meta`` device by default: shapes only, no memory and
no weight initialisation, so the largest configs take a second. FLOPs are
counted by :mod:`condnet.models.complexity` (2 per multiply-accumulate,
elementwise ops not counted) for one forward pass of one image, as
``model(img)`` runs at test time; the auxiliary head is not run then, so its
parameters are listed apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .cli_common import (
    add_config_arguments,
    check_output_path,
    command_name,
    input_shape,
    load_model_config,
    write_json,
)

DEVICES = ("meta", "cpu", "cuda")
DEFAULT_SHAPE = (512, 512)  # for a model or backbone name, which has no crop size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("complexity"),
        description="Parameters and forward FLOPs of a config's model (or of a model or "
        "backbone by name), per module.",
    )
    parser.add_argument(
        "config",
        metavar="TARGET",
        help="a config (packaged config's name or file), model name or backbone name",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--depth", type=int, default=2, help="module nesting depth of the table (0: totals only)"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="meta",
        help="where to build and run it (default meta: shapes only, no compute)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the totals to this JSON file")
    return parser


def _build(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[torch.nn.Module, tuple[int, int]]:
    """The network TARGET names and the input (h, w) to count it at."""
    # The model stack loads after the arguments are parsed, so that --help stays fast.
    from .. import models
    from ..engine.config import close_config_names, packaged_configs

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    target = args.config
    if Path(target).suffix == ".py" or Path(target).exists() or target in packaged_configs():
        cfg = load_model_config(parser, args)
        from ..engine.builders import build_model

        with torch.device(args.device):
            return build_model(cfg), input_shape(cfg, args)
    if args.cfg_options:
        parser.error("--cfg-options applies to a config file; TARGET is a name")
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPE
    if target in models.BACKBONES:
        return models.build_backbone(target, device=args.device), shape  # no init on "meta"
    if target in models.list_models():
        with torch.device(args.device):
            return models.build_model(target), shape
    close = close_config_names(target)
    configs = f"; configs like it: {', '.join(close)}" if close else ""
    parser.error(
        f"{target!r} is not a config (condnet-configs lists them{configs}), a model name "
        f"({', '.join(models.list_models())}) or a backbone name ({', '.join(models.BACKBONES)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.depth < 0:
        parser.error(f"--depth must be >= 0; got {args.depth}")
    check_output_path(parser, args.json, "--json")
    model, (h, w) = _build(parser, args)
    from ..models.complexity import complexity_report, format_report

    try:
        rows = complexity_report(model, (1, 3, h, w), device=args.device)
    except (ValueError, RuntimeError) as err:  # e.g. an input too small for the network
        print(f"error: {err}", file=sys.stderr)
        return 1
    total = rows[0]
    aux = sum(r.params for r in rows if r.name == "auxiliary_head")
    result = {
        "config": str(args.config),
        "shape": [h, w],
        "params": total.params,
        "params_without_auxiliary": total.params - aux,
        "flops": total.flops,
    }
    print(f"{args.config} at input 1x3x{h}x{w}")
    print(format_report(rows, args.depth))
    print(f"params: {total.params} ({total.params / 1e6:.2f} M)")
    if aux:
        inference = total.params - aux
        print(f"params without the auxiliary head: {inference} ({inference / 1e6:.2f} M)")
    print(f"FLOPs: {total.flops} ({total.flops / 1e9:.2f} G)")
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
