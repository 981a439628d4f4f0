"""``tools/benchmark.py CONFIG [CHECKPOINT]``: inference speed of a config's model
(mmseg's tools/benchmark.py, on random input).

Examples::

    condnet-benchmark condnet_r50-d8_512x512_160k_ade20k
    python tools/benchmark.py CONFIG --device cuda --amp bf16 --channels-last --json bench.json
    python tools/benchmark.py CONFIG --backend reference --mode predict --shape 512 2048

Each iteration runs one batch of random images through the model in eval mode
without gradients: ``model(img)`` (``--mode whole``) or ``model.predict(img)``
with the config's test setting (``--mode predict``, e.g. sliding windows). The
time per batch is taken with ``perf_counter`` around the call, after a CUDA
synchronize on either side on a GPU; the report gives its median and 20%/80%
quantiles over ``--iters`` iterations that follow ``--warmup`` untimed ones.

``--backend`` sets the backend of the model's conditional classifiers
(:func:`condnet.nn.set_backend`), which wins over ``CONDNET_BACKEND``; a model
without one (a plain classifier) is an error. The backend reported is the one
the condnet ops were seen to run on in an untimed first call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

import condnet

from ..engine import dist
from ..engine.amp import AMP_DTYPES, autocast
from ..nn import ConditionalClassifier, set_backend
from ..ops import BACKENDS
from ..ops.registry import requested_backend
from .cli_common import (
    CONFIG_HELP,
    add_config_arguments,
    add_device_argument,
    check_output_path,
    command_name,
    config_file,
    input_shape,
    load_model_config,
    positive_int,
    write_json,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_name("benchmark"),
        description="Inference speed (images/s) of a config's model on random input.",
    )
    parser.add_argument("config", type=config_file, help=CONFIG_HELP)
    parser.add_argument(
        "checkpoint", nargs="?", help="weights to load (default: random initialisation)"
    )
    add_device_argument(parser)
    add_config_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images per batch")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed iterations first (default 5)"
    )
    parser.add_argument("--iters", type=positive_int, default=50, help="timed iterations")
    parser.add_argument(
        "--mode",
        choices=("whole", "predict"),
        default="whole",
        help="whole: model(img); predict: model.predict(img) with the config's test setting",
    )
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), help="autocast to this dtype")
    parser.add_argument(
        "--channels-last", action="store_true", help="model and input in channels-last layout"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="backend of the model's condnet ops (default: CONDNET_BACKEND, else auto); "
        "it wins over CONDNET_BACKEND",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results to this JSON file")
    return parser


# The op namespaces of the compiled and the Triton kernels; the reference runs plain torch.
_NAMESPACE_BACKENDS = {"condnet": "extension", "condnet_triton": "triton"}


class _OpRecorder(TorchFunctionMode):
    """Notes the namespaces of the ``torch.ops`` calls made inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.namespaces: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.namespaces.add(str(func).split(".", 1)[0])  # "condnet.class_pool.default"
        return func(*args, **(kwargs or {}))


def observed_backend(model: torch.nn.Module, call) -> str:
    """Runs ``call()`` once and says which implementation the condnet ops of ``model``
    ran on: "extension", "triton" (both joined by "+" if they mixed), "reference", or
    "none" for a model without a conditional classifier."""
    with _OpRecorder() as recorder:
        call()
    seen = sorted(_NAMESPACE_BACKENDS[n] for n in recorder.namespaces & set(_NAMESPACE_BACKENDS))
    if seen:
        return "+".join(seen)
    has_ops = any(isinstance(m, ConditionalClassifier) for m in model.modules())
    return "reference" if has_ops else "none"


def time_iterations(fn, device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` calls after ``warmup`` untimed ones."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda device=None: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def run(args: argparse.Namespace, cfg, device: torch.device) -> dict:
    """Builds the model, times it and returns the results (see ``--json``)."""
    from ..engine.builders import build_model
    from ..engine.weights import load_weights

    model = build_model(cfg)
    if args.checkpoint is not None:
        load_weights(model, args.checkpoint)
    model = model.to(device).eval()
    if args.backend is not None:
        set_backend(model, args.backend)  # a plain model has no op to set it for: an error
    h, w = input_shape(cfg, args)
    img = torch.randn(args.batch_size, 3, h, w, device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        img = img.contiguous(memory_format=torch.channels_last)
    forward = model if args.mode == "whole" else model.predict
    requested = args.backend or requested_backend()
    with torch.no_grad(), autocast(device.type, args.amp):
        backend = observed_backend(model, lambda: forward(img))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = time_iterations(lambda: forward(img), device, args.warmup, args.iters)
    median, q20, q80 = (float(q) for q in np.quantile(times, [0.5, 0.2, 0.8]))
    return {
        "config": str(args.config),
        "checkpoint": args.checkpoint,
        "device": device.type,
        "device_name": dist.device_name(device),
        "torch_version": torch.__version__,
        "condnet_version": condnet.__version__,
        "threads": torch.get_num_threads(),
        "backend_requested": requested,
        "backend": backend,
        "mode": args.mode,
        "shape": [h, w],
        "batch_size": args.batch_size,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "warmup": args.warmup,
        "iters": args.iters,
        "time_per_batch_s": {"median": median, "q20": q20, "q80": q80},
        "images_per_s": args.batch_size / median,
        "peak_memory_bytes": (
            torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        ),
        "times_s": times,
    }


def format_result(r: dict) -> str:
    t = r["time_per_batch_s"]
    h, w = r["shape"]
    lines = [
        f"config: {r['config']}",
        f"device: {r['device']} ({r['device_name']}), torch {r['torch_version']}, "
        f"condnet {r['condnet_version']}, {r['threads']} CPU threads",
        f"condnet backend: {r['backend']} (requested {r['backend_requested']})",
        f"input: {r['batch_size']}x3x{h}x{w}, mode {r['mode']}, amp {r['amp'] or 'off'}, "
        f"channels_last {r['channels_last']}",
        f"time per batch: median {t['median'] * 1e3:.2f} ms "
        f"(20%: {t['q20'] * 1e3:.2f} ms, 80%: {t['q80'] * 1e3:.2f} ms) over {r['iters']} iters",
        f"throughput: {r['images_per_s']:.2f} images/s",
    ]
    if r["peak_memory_bytes"] is not None:
        lines.append(f"peak GPU memory: {r['peak_memory_bytes'] / 2**20:.1f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0; got {args.warmup}")
    device = torch.device(dist.choose_device(args.device))
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        parser.error(f"checkpoint: no such file {args.checkpoint}")
    check_output_path(parser, args.json, "--json")
    cfg = load_model_config(parser, args)
    try:
        result = run(args, cfg, device)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        # weights that do not fit, a backend that cannot run here, an input too small
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_result(result))
    if args.json:
        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
