"""``tools/complexity.py CONFIG``: parameters and FLOPs of a config's model (mmseg's get_flops).

Examples::

    python tools/complexity.py configs/condnet/condnet_r50-d8_512x512_160k_ade20k.py
    python tools/complexity.py CONFIG --shape 512 1024 --depth 2 --json complexity.json

The model is built on the ``meta`` device: shapes only, no memory and no
weight initialisation, so the largest configs take a second. FLOPs are counted
by :mod:`condnet.models.complexity` (2 per multiply-accumulate, elementwise ops
not counted) for one forward pass of one image, as ``model(img)`` runs at test
time; the auxiliary head is not run then, so its parameters are listed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from ..engine import dist
from ..engine.config import ConfigError, load_config


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def device_argument(text: str) -> str:
    """argparse type for ``--device``: cuda only where CUDA is available (other
    names are left to the argument's choices)."""
    if text != "cuda":
        return text
    try:
        return dist.choose_device(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--device cpu|cuda``, checked while parsing; with no default,
    ``dist.choose_device(args.device)`` picks cuda when available."""
    parser.add_argument(
        "--device",
        type=device_argument,
        choices=("cpu", "cuda"),
        default=default,
        help=f"default: {default}" if default else "default: cuda when available, else cpu",
    )


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shape H W`` and ``--cfg-options``, as every model tool takes them."""
    parser.add_argument(
        "--shape",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="input height and width (default: the config's data.crop_size)",
    )
    parser.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. model.channels=256 data.crop_size=(512,1024)",
    )


def load_model_config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The config of ``args.config`` with ``args.cfg_options``; a bad file or
    option is an argument error. The backbone's pretrained weights are never
    loaded: these tools time, count or export the network, or load a checkpoint."""
    options = [*args.cfg_options, "model.pretrained_backbone=False"]
    try:
        return load_config(args.config, options)
    except (ConfigError, FileNotFoundError) as err:
        parser.error(str(err))


def input_shape(cfg, args: argparse.Namespace) -> tuple[int, int]:
    """``--shape`` or else the config's training crop (h, w)."""
    return tuple(args.shape) if args.shape else tuple(cfg.data.crop_size)


def check_output_path(parser: argparse.ArgumentParser, path: str | None, flag: str) -> None:
    """An argument error unless ``path`` (if given) can be created: its directory exists."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        parser.error(f"{flag}: the directory of {path} does not exist")


def write_json(obj: dict, path: str | os.PathLike) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically (temp file + os.replace)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/complexity.py",
        description="Parameters and forward FLOPs of a config's model, per module.",
    )
    parser.add_argument("config", help="config file (configs/...)")
    add_config_arguments(parser)
    parser.add_argument(
        "--depth", type=int, default=2, help="module nesting depth of the table (0: totals only)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the totals to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.depth < 0:
        parser.error(f"--depth must be >= 0; got {args.depth}")
    check_output_path(parser, args.json, "--json")
    cfg = load_model_config(parser, args)
    h, w = input_shape(cfg, args)

    # Imports the model stack: after the argument checks, so that --help and
    # argument errors stay fast.
    from ..engine.builders import build_model
    from ..models.complexity import complexity_report, format_report

    try:
        with torch.device("meta"):
            model = build_model(cfg)
        rows = complexity_report(model, (1, 3, h, w), device="meta")
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
