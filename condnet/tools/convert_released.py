"""``tools/convert_released.py IN.pth OUT.pth``: a released CondNet (mmseg) checkpoint
as a condnet state dict, checked by a strict load into the model.

Example::

    python tools/convert_released.py condnet_r101-d8_512x512_160k_ade20k.pth out.pth \\
        --model condnet_r101-d8_ade20k

Without ``--model`` the model is inferred from the checkpoint's keys and shapes
(:func:`condnet.models.infer_model_name`). The output's folder is checked before
anything is read; the file is written atomically (:mod:`condnet.checkpoint_files`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..checkpoint_files import save_atomic
from ..models import MODEL_CONFIGS, infer_model_name, load_released, read_released
from .cli_common import check_output_path, command_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("convert_released"),
        description="Convert a released CondNet (mmseg) checkpoint to a condnet state dict, "
        "checked by a strict load into the model.",
    )
    parser.add_argument("input", help="released checkpoint (.pth)")
    parser.add_argument("output", help="where to write the condnet state dict")
    parser.add_argument(
        "--model", default=None, help="model name (default: inferred from the checkpoint)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is not None and args.model not in MODEL_CONFIGS:
        parser.error(f"unknown model {args.model!r}; valid names: {', '.join(MODEL_CONFIGS)}")
    check_output_path(parser, args.output, "output")
    try:
        tensors = read_released(args.input)
        name = args.model or infer_model_name(tensors)
        model = load_released(tensors, name=name)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = model.state_dict()
    save_atomic(state, args.output)
    count = sum(t.numel() for t in state.values())
    print(f"{name}: wrote {len(state)} tensors ({count} values) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
