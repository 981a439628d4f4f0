"""The demo's numbers: each model's validation scores, the table of one run, and the
paired CondNet - plain comparison over seeds."""

from __future__ import annotations

import statistics
from typing import Any

from condnet.engine.builders import dataset_meta
from condnet.engine.evaluate import evaluate

from .stages import RECIPES

__all__ = ["LABELS", "print_run", "print_summary", "score", "summarize"]

#: Each model's row label in the printed tables.
LABELS = {"plain": "plain 1x1 classifier", "condnet": "CondNet (conditional)"}


def score(model, val_set, device) -> dict:
    """mIoU, mAcc, aAcc and per-class IoU in percent; ``acc_guidance`` for CondNet."""
    names, palette = dataset_meta(val_set)
    guided = bool(getattr(model, "has_guidance", False))
    results = evaluate(
        model,
        val_set,
        num_classes=model.num_classes,
        class_names=names,
        palette=palette,
        device=device,
        guidance_accuracy=guided,
        progress=False,
    )
    out: dict[str, Any] = {k: 100 * float(results[k]) for k in ("mIoU", "mAcc", "aAcc")}
    out["IoU"] = {name: 100 * float(v) for name, v in zip(names, results["IoU"], strict=True)}
    if guided:
        out["acc_guidance"] = 100 * results["acc_guidance"]
    return out


def print_run(record: dict) -> None:
    """The validation table of one run (its ``results.json`` record)."""
    metrics = record["metrics"]
    print(f"\nvalidation scenes, {record['recipe'].replace('_', ' ')}, seed {record['seed']}:")
    print(f"{'model':<40}{'mIoU':>8}{'mAcc':>8}{'aAcc':>8}{'guide acc':>11}")
    rows = [("plain", LABELS["plain"]), ("condnet", LABELS["condnet"])]
    if "condnet_start" in metrics:
        rows.insert(0, ("condnet_start", "shared plain stage (CondNet at start)"))
    for key, label in rows:
        m = metrics[key]
        guide = f"{m['acc_guidance']:>11.2f}" if "acc_guidance" in m else f"{'-':>11}"
        print(f"{label:<40}" + "".join(f"{m[k]:>8.2f}" for k in ("mIoU", "mAcc", "aAcc")) + guide)
    gain = record["condnet_miou"] - record["plain_miou"]
    chance = record["chance_acc_guidance"]
    print(f"CondNet - plain: {gain:+.2f} mIoU (chance guidance accuracy: {chance:.1f}%)")


def summarize(runs: list[dict]) -> dict:
    """Per recipe: the paired CondNet - plain mIoU differences, their mean and spread."""
    summary = {}
    for recipe in RECIPES:
        diffs = [r["condnet_miou"] - r["plain_miou"] for r in runs if r["recipe"] == recipe]
        if not diffs:
            continue
        summary[recipe] = {
            "seeds": len(diffs),
            "mean_difference": statistics.fmean(diffs),
            "std_difference": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "min_difference": min(diffs),
            "max_difference": max(diffs),
            "condnet_wins": sum(d > 0 for d in diffs),
            "mean_plain_miou": statistics.fmean(
                r["plain_miou"] for r in runs if r["recipe"] == recipe
            ),
            "mean_condnet_miou": statistics.fmean(
                r["condnet_miou"] for r in runs if r["recipe"] == recipe
            ),
        }
    return summary


def print_summary(summary: dict, seeds: list[int]) -> None:
    """The paired comparison of :func:`summarize`, one line per recipe."""
    print("\npaired CondNet - plain mIoU over seeds " + ",".join(map(str, seeds)) + ":")
    for recipe, s in summary.items():
        print(
            f"  {recipe:<13} mean {s['mean_difference']:+.2f}  std {s['std_difference']:.2f}  "
            f"range [{s['min_difference']:+.2f}, {s['max_difference']:+.2f}]  "
            f"CondNet ahead in {s['condnet_wins']} of {s['seeds']}"
        )
