"""``tools/export.py CONFIG CHECKPOINT --format torchscript|onnx --out FILE``: a trained
model as a TorchScript or ONNX file (mmseg's pytorch2torchscript / pytorch2onnx).

Examples::

    python tools/export.py CONFIG work_dirs/run1/latest.pth --format onnx --out model.onnx --verify
    python tools/export.py CONFIG ckpt.pth --format torchscript --out model.pt --shape 512 1024

The exported graph is ``model(img)``: (B, 3, H, W) normalised images to logits
(B, K, H, W) at the input size; ``argmax(1)`` is the prediction. It is traced
with the condnet ops on their pure-PyTorch ``reference`` backend, so it holds
only standard PyTorch (TorchScript) or standard ONNX operators: no condnet
custom op, which a runtime without condnet could not run. Batch, height and
width are dynamic unless ``--static-shape``; ``--shape`` is the example input.

ONNX: the default ``--onnx-exporter legacy`` is torch.onnx's TorchScript-based
exporter (needs ``onnx``; seconds). It cannot export UPerNet behind Swin (its
pyramid pooling needs sizes that it loses track of); ``dynamo``, the
torch.export-based exporter (also needs ``onnxscript``), exports every model,
slowly: Swin-B takes about a minute on a CPU with ``--static-shape`` and ten
times that with dynamic shapes.

``--verify`` runs the file (TorchScript with torch.jit.load, ONNX with
onnxruntime) on a new random input and compares it with the PyTorch model:
max |exported - PyTorch| <= atol + rtol * max |PyTorch|. The file is written
(atomically) only when every check passes.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from ..checkpoint_files import atomic_output
from ..ops import use_backend
from .cli_common import (
    CONFIG_HELP,
    add_config_arguments,
    check_output_path,
    command_name,
    config_file,
    input_shape,
    load_model_config,
    positive_int,
)

FORMATS = ("torchscript", "onnx")
ONNX_EXPORTERS = ("legacy", "dynamo")
# Namespaces (TorchScript) and domains (ONNX) of standard operators.
STANDARD_NAMESPACES = ("aten", "prim")
STANDARD_DOMAINS = ("", "ai.onnx")
LEGACY_OPSET = 17
# The torch.export-based exporter has no lower implementations (it would convert
# the model down, and fail on Resize/Reduce* axes).
DYNAMO_MIN_OPSET = 18


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("export"),
        description="Export a model to TorchScript or ONNX (standard operators only).",
    )
    parser.add_argument("config", type=config_file, help=CONFIG_HELP)
    parser.add_argument("checkpoint", help="weights to export (a training checkpoint)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    add_config_arguments(parser)
    parser.add_argument(
        "--opset",
        type=positive_int,
        help=f"ONNX opset (default: {LEGACY_OPSET} legacy, {DYNAMO_MIN_OPSET} dynamo)",
    )
    parser.add_argument(
        "--onnx-exporter",
        choices=ONNX_EXPORTERS,
        default="legacy",
        help="legacy: TorchScript-based (default); dynamo: torch.export-based (needs onnxscript)",
    )
    parser.add_argument(
        "--static-shape",
        action="store_true",
        help="ONNX: fix batch 1 and --shape in the graph (default: dynamic batch, height and "
        "width; a traced TorchScript graph follows its input's size either way)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="run the exported file and compare with PyTorch"
    )
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="--verify: absolute tolerance (default 1e-4)"
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=1e-3,
        help="--verify: tolerance relative to the largest |logit| (default 1e-3)",
    )
    return parser


def _missing_modules(args: argparse.Namespace) -> list[str]:
    """Python packages the requested export needs that are not installed."""
    needed = []
    if args.format == "onnx":
        needed.append("onnx")
        if args.onnx_exporter == "dynamo":
            needed.append("onnxscript")
        if args.verify:
            needed.append("onnxruntime")
    return [name for name in needed if importlib.util.find_spec(name) is None]


@contextlib.contextmanager
def _quiet_torchscript():
    """Hides the tracer's notes about Python-side shape checks (they hold for
    every input the model accepts) and torch.jit's and the exporters' deprecation
    notices (TorchScript is still what many deployment runtimes load)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet_torchscript():
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))


@contextlib.contextmanager
def _stdout_discarded():
    """Sends the process's stdout (the file descriptor, not only ``sys.stdout``)
    to the null device. torch.onnx's legacy exporter logs its whole TorchScript
    graph there when it fails (its log switch reads as always on); the exception
    already names the cause."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        yield
    finally:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).fflush(None)  # C++ stream output still in the C buffer
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


def _first_line(err: BaseException, limit: int = 400) -> str:
    """The exporters' messages carry graph dumps and Python stacks: their first line."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    text = text.split(" [Caused by", 1)[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def _export_onnx(
    model: torch.nn.Module, example: torch.Tensor, path: Path, args: argparse.Namespace
) -> None:
    if args.onnx_exporter == "legacy":
        axes = {0: "batch", 2: "height", 3: "width"}
        try:
            with _quiet_torchscript(), _stdout_discarded():
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=args.opset,
                    dynamic_axes=None if args.static_shape else {"img": axes, "logits": axes},
                    do_constant_folding=True,
                    input_names=["img"],
                    output_names=["logits"],
                )
        except Exception as exc:  # the exporter raises many types (symbolic, shape, ...)
            raise RuntimeError(
                f"the legacy ONNX exporter failed: {_first_line(exc)} -- it cannot export "
                "every network (e.g. UPerNet's pyramid pooling behind Swin); try "
                "--onnx-exporter dynamo"
            ) from exc
        return
    dynamic = None
    if not args.static_shape:
        dim = torch.export.Dim
        dynamic = {"img": {0: dim("batch"), 2: dim("height"), 3: dim("width")}}
    try:
        with _quiet_torchscript():
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=args.opset,
                dynamic_shapes=dynamic,
                verbose=False,
                input_names=["img"],
                output_names=["logits"],
            )
    except Exception as exc:  # torch.export's errors have many types
        raise RuntimeError(f"the dynamo ONNX exporter failed: {_first_line(exc)}") from exc
    if program is None:  # torch.onnx.export returns the program only with dynamo=True
        raise RuntimeError("the dynamo ONNX exporter returned no program")
    program.save(str(path))


def nonstandard_ops(path: Path, fmt: str) -> list[str]:
    """The operators of the exported file outside the standard namespaces or
    domains (e.g. ``condnet::class_pool``), sorted; empty when the graph is clean."""
    if fmt == "torchscript":
        with _quiet_torchscript():
            graph = torch.jit.load(str(path), map_location="cpu").inlined_graph
        kinds = {node.kind() for node in graph.nodes()}
        return sorted(k for k in kinds if k.split("::", 1)[0] not in STANDARD_NAMESPACES)
    import onnx

    proto = onnx.load(str(path))
    nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
    return sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in STANDARD_DOMAINS})


def run_exported(path: Path, fmt: str, img: torch.Tensor) -> np.ndarray:
    """The exported model's output for ``img``, as TorchScript or onnxruntime runs it."""
    if fmt == "torchscript":
        with _quiet_torchscript():
            module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(img).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: img.numpy()})[0]


def verify(model: torch.nn.Module, path: Path, args: argparse.Namespace, shape) -> str | None:
    """Compares the exported file with ``model`` on a random input; a message
    when they disagree, else None. With dynamic axes the input has batch 2, so
    that the batch dimension is checked too."""
    batch = 1 if args.static_shape else 2
    img = torch.randn(batch, 3, *shape)
    with torch.no_grad(), use_backend("reference"):
        expected = model(img).numpy()
    got = run_exported(path, args.format, img)
    if got.shape != expected.shape:
        return f"output shape {got.shape} differs from PyTorch's {expected.shape}"
    diff = float(np.abs(got - expected).max())
    bound = args.atol + args.rtol * float(np.abs(expected).max())
    print(
        f"verify: {args.format} vs PyTorch on {batch}x3x{shape[0]}x{shape[1]}: "
        f"max abs diff {diff:.3g} (tolerance {bound:.3g})"
    )
    if not diff <= bound:
        return f"the exported model differs from PyTorch: max abs diff {diff:.3g} > {bound:.3g}"
    return None


class _Rejected(Exception):
    """A check of the exported file failed: it is not moved to ``--out``."""


def export(args: argparse.Namespace, cfg) -> str | None:
    """Builds, loads, exports to a temporary file, checks it and moves it to
    ``--out``; returns an error message instead when a check fails."""
    from ..engine.builders import build_model
    from ..engine.weights import load_weights

    model = build_model(cfg)
    load_weights(model, args.checkpoint)
    model.eval()
    shape = input_shape(cfg, args)
    # torch.export specialises dimensions of size 1: a dynamic batch needs an example of 2.
    dynamo = args.format == "onnx" and args.onnx_exporter == "dynamo"
    example = torch.randn(2 if dynamo and not args.static_shape else 1, 3, *shape)
    out = Path(args.out)
    try:
        with atomic_output(out) as tmp:
            with torch.no_grad(), use_backend("reference"):
                if args.format == "torchscript":
                    _export_torchscript(model, example, tmp)
                else:
                    _export_onnx(model, example, tmp, args)
            custom = nonstandard_ops(tmp, args.format)
            if custom:
                raise _Rejected(
                    f"the exported graph holds non-standard operators: {', '.join(custom)}"
                )
            if args.verify:
                problem = verify(model, tmp, args, shape)
                if problem:
                    raise _Rejected(problem)
    except _Rejected as rejected:  # nothing was written
        return str(rejected)
    axes = "static shape" if args.static_shape else "dynamic batch, height and width"
    print(f"wrote {out} ({args.format}, {axes}, example input 3x{shape[0]}x{shape[1]})")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    dynamo = args.onnx_exporter == "dynamo"
    if args.opset is None:
        args.opset = DYNAMO_MIN_OPSET if dynamo else LEGACY_OPSET
    if dynamo and args.opset < DYNAMO_MIN_OPSET:
        parser.error(
            f"--onnx-exporter dynamo needs --opset >= {DYNAMO_MIN_OPSET}; got {args.opset}"
        )
    for name in ("atol", "rtol"):
        if not getattr(args, name) >= 0:  # also NaN
            parser.error(f"--{name} must be >= 0; got {getattr(args, name)}")
    missing = _missing_modules(args)
    if missing:
        parser.error(
            f"--format {args.format} with these options needs the Python packages "
            f"{', '.join(missing)}; not installed here (pip install {' '.join(missing)})"
        )
    if not Path(args.checkpoint).is_file():
        parser.error(f"checkpoint: no such file {args.checkpoint}")
    check_output_path(parser, args.out, "--out")
    cfg = load_model_config(parser, args)
    try:
        problem = export(args, cfg)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # weights that do not fit the config, or an exporter that cannot trace the model
        problem = str(err)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
