"""Throughput of the training data pipeline: samples per second per worker at 512x512.

Writes ``--num-images`` generated scenes of ``--height`` x ``--width`` (default
512x683, JPEG, ADE20K layout) to a temporary folder, then runs the ADE20K
training recipe (:func:`condnet.data.train_pipeline`: random 0.5-2x resize of
(2048, 512), 512x512 crop with cat_max_ratio 0.75, flip, photometric distortion,
normalise, pad, to tensor) on them:

* **per worker**: ``--samples`` samples decoded and augmented one after another in
  this process with one torch thread, which is what one DataLoader worker does;
  the time per stage is reported too;
* **loader** (with ``--workers N``): a seeded DataLoader with N worker processes,
  batches of ``--batch-size``, as samples/s in total and per worker.

Usage::

    python benchmarks/run_pipeline.py [--samples 300] [--workers 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from condnet.data import SceneDataset, build_dataloader, train_pipeline
from condnet.demo.scenes import generate_scene


def write_images(root: Path, count: int, height: int, width: int, seed: int) -> None:
    for sub in ("images/training", "annotations/training"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        img, label = generate_scene(np.random.default_rng([seed, index]), height, width)
        Image.fromarray(img).save(root / "images/training" / f"scene_{index:06d}.jpg", quality=90)
        Image.fromarray(label).save(root / "annotations/training" / f"scene_{index:06d}.png")


class Timed:
    """Wraps a stage and accumulates its wall time."""

    def __init__(self, name: str, fn, totals: dict):
        self.name, self.fn, self.totals = name, fn, totals

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.fn(*args)
        self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - start
        return out


def per_worker(root: Path, args) -> dict:
    pipeline = train_pipeline(scale=tuple(args.scale), crop_size=(args.crop, args.crop))
    dataset = SceneDataset(root, "train", pipeline=pipeline)
    totals: dict[str, float] = {}
    dataset.load = Timed("load (decode + checks)", dataset.load, totals)
    pipeline.transforms = [Timed(type(t).__name__, t, totals) for t in pipeline.transforms]
    seeds = np.random.default_rng(args.seed).integers(0, 2**63 - 1, size=args.samples + 10)
    for i in range(10):  # warm-up
        dataset[(i % len(dataset), int(seeds[i]))]
    totals.clear()
    start = time.perf_counter()
    for i in range(args.samples):
        sample = dataset[(i % len(dataset), int(seeds[10 + i]))]
        assert sample["img"].shape == (3, args.crop, args.crop)
    elapsed = time.perf_counter() - start
    return {
        "samples": args.samples,
        "seconds": elapsed,
        "samples_per_second": args.samples / elapsed,
        "ms_per_sample": 1000 * elapsed / args.samples,
        "stage_ms_per_sample": {k: 1000 * v / args.samples for k, v in totals.items()},
    }


def loader_rate(root: Path, args) -> dict:
    pipeline = train_pipeline(scale=tuple(args.scale), crop_size=(args.crop, args.crop))
    dataset = SceneDataset(root, "train", pipeline=pipeline)
    loader = build_dataloader(
        dataset,
        args.batch_size,
        seed=args.seed,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=True,
    )
    batches = max(1, args.samples // args.batch_size)
    done, started = 0, None
    while done < batches + 2:
        for _ in loader:
            done += 1
            if done == 2:  # the workers are up and the first batches are out
                started = time.perf_counter()
            if done >= batches + 2:
                break
    elapsed = time.perf_counter() - started
    rate = batches * args.batch_size / elapsed
    return {
        "workers": args.workers,
        "batch_size": args.batch_size,
        "batches": batches,
        "samples_per_second": rate,
        "samples_per_second_per_worker": rate / args.workers,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--num-images", type=int, default=24)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=683)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--scale", type=int, nargs=2, default=[2048, 512])
    parser.add_argument(
        "--workers", type=int, default=0, help="also time a DataLoader with this many workers"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # as in a DataLoader worker
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root, args.num_images, args.height, args.width, args.seed)
        result = {
            "benchmark": "condnet.data train_pipeline throughput",
            "config": {
                "images": f"{args.num_images} generated {args.width}x{args.height} JPEG",
                "scale": args.scale,
                "ratio_range": [0.5, 2.0],
                "crop": [args.crop, args.crop],
                "cat_max_ratio": 0.75,
            },
            "per_worker": per_worker(root, args),
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
            },
        }
        if args.workers > 0:
            result["loader"] = loader_rate(root, args)

    worker = result["per_worker"]
    print(
        f"per worker: {worker['samples_per_second']:.1f} samples/s "
        f"({worker['ms_per_sample']:.1f} ms/sample, {args.crop}x{args.crop} crops, "
        f"{args.width}x{args.height} JPEG sources)"
    )
    for stage, ms in worker["stage_ms_per_sample"].items():
        print(f"  {stage:<24} {ms:6.2f} ms")
    if "loader" in result:
        loader = result["loader"]
        print(
            f"DataLoader, {loader['workers']} workers: {loader['samples_per_second']:.1f} "
            f"samples/s ({loader['samples_per_second_per_worker']:.1f} per worker)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
