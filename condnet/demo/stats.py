"""The demo's numbers: each arm's validation scores, the table of one run, and the
paired comparison of each conditional classifier with the plain one over seeds.

The demo trains three arms (classifiers on the same network, :data:`ARMS`) on two
generated scene sets (:data:`SCENE_SETS`). One run is one seed on one scene set; its
record (``results.json``) holds every arm's scores under ``"arms"``. Over several
paired seeds, :func:`summarize` gives, per scene set and conditional arm, the
per-seed differences ``arm - plain`` in mIoU and a paired t interval for their
mean (:func:`paired_interval`, with the Student t quantile of :func:`t_quantile`,
computed here without scipy).
"""

from __future__ import annotations

import math
import numbers
import statistics
import sys
from typing import Any, TextIO

from condnet.engine.builders import dataset_meta
from condnet.engine.evaluate import evaluate
from condnet.engine.logger import format_duration

__all__ = [
    "ARMS",
    "CONDITIONAL",
    "LABELS",
    "SCENE_SETS",
    "curves",
    "paired_interval",
    "per_seed_table",
    "print_run",
    "print_summary",
    "score",
    "summarize",
    "summary_table",
    "t_quantile",
]

#: The classifiers the demo compares, in table order: the plain 1x1 convolution,
#: CondNet's conditional classifier and CAC's context-aware classifier.
ARMS = ("plain", "condnet", "cac")
#: The arms compared with ``plain``.
CONDITIONAL = ("condnet", "cac")
#: The generated scene sets: ``cue`` (a class's colour is the same within each
#: image, a per-image cue) and ``control`` (a class's colour drawn per region).
SCENE_SETS = ("cue", "control")
#: Each arm's label in the printed and markdown tables.
LABELS = {"plain": "plain 1x1 classifier", "condnet": "CondNet", "cac": "CAC"}

# Modified Lentz continued fraction: the smallest magnitude kept, the relative
# change that ends it and the most terms it takes.
_TINY = 1e-300
_CF_EPS = 1e-16
_CF_MAX_TERMS = 100_000
# Newton/bisection steps of the quantile search.
_MAX_STEPS = 500


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


# ---------------------------------------------------------------------------
# The Student t quantile


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function I_x(a, b)
    (without its prefactor); converges fast for ``x < (a + 1) / (a + b + 2)``."""
    # I_x(a, b) = prefactor / (1 + d1 / (1 + d2 / (1 + ...))), with
    # d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1)) and
    # d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m)); evaluated front to back.
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    value = d
    for m in range(1, _CF_MAX_TERMS):
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0)),
        ):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + coefficient / c
            c = c if abs(c) > _TINY else _TINY
            value *= c * d
        if abs(c * d - 1.0) < _CF_EPS:
            return value
    raise RuntimeError(f"incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def _regularized_beta(a: float, b: float, log_x: float, log_y: float) -> float:
    """I_x(a, b) for x = exp(log_x), given also log(1 - x) = log_y (both passed as
    logarithms so that neither x nor 1 - x loses digits near 0 or 1)."""
    # x or 1 - x may underflow to 0; the prefactor, taken from the logarithms, stays right.
    x, y = math.exp(log_x), math.exp(log_y)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(a * log_x + b * log_y - log_beta) / a * _beta_fraction(a, b, x)
    # The symmetry I_x(a, b) = 1 - I_{1-x}(b, a), where that fraction converges.
    return 1.0 - math.exp(a * log_x + b * log_y - log_beta) / b * _beta_fraction(b, a, y)


def _log1p_square(u: float) -> float:
    """log(1 + u^2) for u >= 0, without forming u^2 where it could overflow."""
    if u > 1.0:
        return 2.0 * math.log(u) + math.log1p(1.0 / (u * u))
    return math.log1p(u * u)


def _tail_or_centre(t: float, df: int, centre: bool) -> float:
    """For t >= 0 and T Student t with ``df`` degrees of freedom: P(T > t) (the tail,
    half the regularized incomplete beta I_x(df/2, 1/2), x = df / (df + t^2)) or,
    with ``centre``, P(0 < T <= t) (half of I_{1-x}(1/2, df/2)). Each is computed
    from its own side, so that a tiny one keeps its digits."""
    u = t / math.sqrt(df)
    if u == 0.0:
        return 0.0 if centre else 0.5
    if math.isinf(u):
        return 0.5 if centre else 0.0
    # x = 1 / (1 + u^2) and 1 - x = u^2 / (1 + u^2), as logarithms.
    log_x = -_log1p_square(u)
    log_y = log_x + 2.0 * math.log(u)
    if centre:
        return 0.5 * _regularized_beta(0.5, df / 2.0, log_y, log_x)
    return 0.5 * _regularized_beta(df / 2.0, 0.5, log_x, log_y)


def _density(t: float, df: int) -> float:
    """The Student t probability density at ``t``."""
    log_norm = math.lgamma((df + 1) / 2.0) - math.lgamma(df / 2.0) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2.0 * _log1p_square(abs(t) / math.sqrt(df)))


def t_quantile(probability: float, df: int) -> float:
    """The Student t quantile: the ``t`` with P(T <= t) = ``probability`` for T with
    ``df`` degrees of freedom (``t_quantile(0.975, 4) = 2.7764...``).

    The distribution function (via the regularized incomplete beta function) is
    inverted by Newton steps kept inside a shrinking bracket: about 11 correct
    digits for df up to 1000, slowly fewer beyond (about 9 at df = 10^7, where the
    log-gamma terms cancel).
    ``probability`` must lie strictly between 0 and 1 and ``df`` be an integer >= 1.
    """
    if isinstance(df, bool) or not isinstance(df, numbers.Integral) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    if (
        isinstance(probability, bool)
        or not isinstance(probability, numbers.Real)
        or not 0.0 < probability < 1.0
    ):
        raise ValueError(f"probability must be strictly between 0 and 1, got {probability!r}")
    df = int(df)
    probability = float(probability)
    if probability == 0.5:
        return 0.0
    # Solve for t >= 0 and take minus it for p < 0.5 (the distribution is symmetric).
    # Near the middle solve P(0 < T <= t) = |p - 0.5|, else P(T > t) = min(p, 1 - p):
    # both right-hand sides are exact in floating point, and neither side's
    # probability is formed by subtracting from 1 where it is small.
    sign = -1.0 if probability < 0.5 else 1.0
    centre = 0.25 < probability < 0.75
    if centre:
        target = abs(probability - 0.5)
    else:
        target = probability if probability < 0.5 else 1.0 - probability
    # ``rising(t)`` increases with t: the centre mass, or minus the tail.
    if centre:
        target_rising = target
    else:
        target_rising = -target

    def rising(t: float) -> float:
        value = _tail_or_centre(t, df, centre)
        return value if centre else -value

    low, high = 0.0, 1.0
    while rising(high) < target_rising:
        low, high = high, 2.0 * high
        if math.isinf(high):
            return sign * math.inf
    t = 0.5 * (low + high)
    for _ in range(_MAX_STEPS):
        shortfall = target_rising - rising(t)  # > 0: t is below the solution
        if shortfall == 0.0:
            break
        if shortfall > 0.0:
            low = t
        else:
            high = t
        density = _density(t, df)
        candidate = t + shortfall / density if density > 0.0 else math.inf
        if not low < candidate < high:
            candidate = 0.5 * (low + high)  # Newton left the bracket: bisect
        converged = abs(candidate - t) <= 4 * sys.float_info.epsilon * abs(t)
        t = candidate
        if converged or high - low <= 4 * sys.float_info.epsilon * high:
            break
    return sign * t


# ---------------------------------------------------------------------------
# The paired interval and the summary over seeds


def _check_confidence(confidence: float) -> float:
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, numbers.Real)
        or not 0.0 < confidence < 1.0
    ):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    return float(confidence)


def paired_interval(differences, confidence: float = 0.95) -> dict:
    """The paired t interval for the mean of per-seed differences.

    ``differences``: at least 2 finite numbers (one per paired seed). Returns
    ``n``, ``mean``, ``std`` (the sample standard deviation, over n - 1), ``low``,
    ``high``, ``half_width`` = t_{(1+confidence)/2, n-1} * std / sqrt(n) and
    ``method`` ("paired t"); the interval is mean +- half_width.
    """
    confidence = _check_confidence(confidence)
    try:
        values = [float(v) for v in differences]
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"differences must be a sequence of numbers, got {differences!r}"
        ) from error
    if len(values) < 2:
        raise ValueError(f"differences needs at least 2 values for an interval, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"differences must all be finite, got {values}")
    n = len(values)
    mean = statistics.fmean(values)
    std = statistics.stdev(values)
    half_width = t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "low": mean - half_width,
        "high": mean + half_width,
        "half_width": half_width,
        "method": "paired t",
    }


def _check_run(index: int, record: Any) -> None:
    """That ``runs[index]`` is a run record: seed, a known scene set and known arms
    with a finite mIoU."""
    where = f"runs[{index}]"
    if not isinstance(record, dict):
        raise ValueError(f"{where} must be a run record (a dict), got {type(record).__name__}")
    for key in ("seed", "scenes", "arms"):
        if key not in record:
            raise ValueError(f"{where} has no {key!r} (a run record needs seed, scenes, arms)")
    if record["scenes"] not in SCENE_SETS:
        raise ValueError(f"{where}['scenes'] must be one of {SCENE_SETS}, got {record['scenes']!r}")
    arms = record["arms"]
    if not isinstance(arms, dict):
        raise ValueError(f"{where}['arms'] must be a dict of arm -> scores")
    for arm, scores in arms.items():
        if arm not in ARMS:
            raise ValueError(f"{where}['arms'] has unknown arm {arm!r}; expected some of {ARMS}")
        miou = scores.get("mIoU") if isinstance(scores, dict) else None
        if isinstance(miou, bool) or not isinstance(miou, numbers.Real) or not math.isfinite(miou):
            raise ValueError(f"{where}['arms'][{arm!r}] needs a finite 'mIoU', got {miou!r}")


def _runs_by_set(runs: list[dict]) -> dict[str, dict[Any, dict]]:
    """The checked runs as {scene set: {seed: record}}, scene sets in
    :data:`SCENE_SETS` order and seeds sorted; ValueError on a repeated
    (scene set, seed)."""
    by_set: dict[str, dict[Any, dict]] = {}
    for index, record in enumerate(runs):
        _check_run(index, record)
        seeds = by_set.setdefault(record["scenes"], {})
        if record["seed"] in seeds:
            raise ValueError(
                f"runs has two records of scene set {record['scenes']!r} at seed "
                f"{record['seed']!r}; each (scenes, seed) pair must appear once"
            )
        seeds[record["seed"]] = record
    return {
        scenes: dict(sorted(by_set[scenes].items())) for scenes in SCENE_SETS if scenes in by_set
    }


def summarize(runs: list[dict], confidence: float = 0.95) -> dict:
    """The paired comparison over seeds: ``summary[scenes][arm]`` for each scene set
    in ``runs`` and each conditional arm (:data:`CONDITIONAL`) that shares a seed
    with ``plain`` there.

    Each entry: ``seeds`` (sorted; the seeds where both the arm and plain ran),
    ``differences`` (arm - plain mIoU, per seed), ``n``, ``mean_difference``,
    ``std_difference``, ``ci_low``/``ci_high`` (the paired t interval at
    ``confidence``), ``confidence``, ``method``, ``wins`` (how many seeds have a
    difference > 0), ``mean_plain_miou`` and ``mean_arm_miou`` (over those seeds).
    With a single seed ``std_difference``, ``ci_low`` and ``ci_high`` are None.
    The order of ``runs`` does not matter; a (scenes, seed) pair twice is a
    ValueError.
    """
    confidence = _check_confidence(confidence)
    summary: dict[str, dict[str, dict]] = {}
    for scenes, by_seed in _runs_by_set(runs).items():
        for arm in CONDITIONAL:
            paired = [
                (seed, r["arms"]["plain"]["mIoU"], r["arms"][arm]["mIoU"])
                for seed, r in by_seed.items()
                if "plain" in r["arms"] and arm in r["arms"]
            ]
            if not paired:
                continue
            plain = [float(p) for _, p, _ in paired]
            ours = [float(a) for _, _, a in paired]
            diffs = [a - p for p, a in zip(plain, ours, strict=True)]
            entry: dict[str, Any] = {
                "seeds": [seed for seed, _, _ in paired],
                "differences": diffs,
                "n": len(diffs),
                "mean_difference": statistics.fmean(diffs),
                "std_difference": None,
                "ci_low": None,
                "ci_high": None,
                "confidence": confidence,
                "method": "paired t",
                "wins": sum(d > 0 for d in diffs),
                "mean_plain_miou": statistics.fmean(plain),
                "mean_arm_miou": statistics.fmean(ours),
            }
            if len(diffs) > 1:
                interval = paired_interval(diffs, confidence)
                entry["std_difference"] = interval["std"]
                entry["ci_low"] = interval["low"]
                entry["ci_high"] = interval["high"]
            summary.setdefault(scenes, {})[arm] = entry
    return summary


# ---------------------------------------------------------------------------
# Printed tables


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _committed_text(entry: dict) -> str:
    """``committed over N seeds: mean +m.mm, 95% interval [lo, hi]`` for a summary entry."""
    n = entry["n"]
    text = f"committed over {n} seed{'s' if n != 1 else ''}: mean {entry['mean_difference']:+.2f}"
    if entry.get("ci_low") is None:
        return text + " (no interval from one seed)"
    return (
        f"{text}, {_percent(entry['confidence'])} interval "
        f"[{entry['ci_low']:+.2f}, {entry['ci_high']:+.2f}]"
    )


def print_run(record: dict, committed: dict | None = None, stream: TextIO | None = None) -> None:
    """The validation table of one run (its ``results.json`` record): a row per arm
    (mIoU, mAcc, aAcc, guidance accuracy, training time), then each conditional
    arm's mIoU gain over plain.

    ``committed``: a summary (:func:`summarize`) of the committed multi-seed run;
    each gain line then says where the committed interval for this scene set lies
    and whether this run's gain is inside it, and the committed lines of the other
    scene set follow. ``stream``: where to print (None: ``sys.stdout`` at the call).
    """
    stream = sys.stdout if stream is None else stream
    _check_run(0, record)
    arms = record["arms"]
    scenes = record["scenes"]
    header = f"\nvalidation scenes ({scenes!r} set), seed {record['seed']}"
    if "iterations" in record:
        header += f", {record['iterations']} iterations"
    print(header + ":", file=stream)
    print(f"{'arm':<24}{'mIoU':>8}{'mAcc':>8}{'aAcc':>8}{'guide acc':>11}{'time':>12}", file=stream)
    for arm in ARMS:
        if arm not in arms:
            continue
        m = arms[arm]
        row = f"{LABELS[arm]:<24}" + "".join(
            f"{m[k]:>8.2f}" if k in m else f"{'-':>8}" for k in ("mIoU", "mAcc", "aAcc")
        )
        row += f"{m['acc_guidance']:>11.2f}" if "acc_guidance" in m else f"{'-':>11}"
        row += f"{format_duration(m['wall_s']):>12}" if "wall_s" in m else f"{'-':>12}"
        print(row, file=stream)
    if "chance_acc_guidance" in record:
        print(f"(chance guidance accuracy: {record['chance_acc_guidance']:.1f}%)", file=stream)
    committed = committed or {}
    if "plain" in arms:
        for arm in CONDITIONAL:
            if arm not in arms:
                continue
            gain = arms[arm]["mIoU"] - arms["plain"]["mIoU"]
            line = f"{LABELS[arm]} - plain: {gain:+.2f} mIoU"
            entry = committed.get(scenes, {}).get(arm)
            if entry is not None:
                line += "; " + _committed_text(entry)
                if entry.get("ci_low") is not None:
                    inside = entry["ci_low"] <= gain <= entry["ci_high"]
                    line += f"; this run is {'inside' if inside else 'outside'} it"
            print(line, file=stream)
    for other in SCENE_SETS:
        if other == scenes or other not in committed:
            continue
        for arm in CONDITIONAL:
            if arm in committed[other]:
                text = _committed_text(committed[other][arm])
                print(f"{other!r} set, {LABELS[arm]} - plain: {text}", file=stream)


def print_summary(summary: dict, stream: TextIO | None = None) -> None:
    """The paired comparison of :func:`summarize`: per scene set and conditional arm,
    the mean mIoU difference from plain, its interval, how often the arm was ahead
    and the mean mIoUs (to ``stream``; None: ``sys.stdout`` at the call)."""
    stream = sys.stdout if stream is None else stream
    print("\npaired mIoU differences from the plain classifier over seeds:", file=stream)
    for scenes in SCENE_SETS:
        for arm in CONDITIONAL:
            s = summary.get(scenes, {}).get(arm)
            if s is None:
                continue
            if s["ci_low"] is None:
                interval = "no interval from one seed"
            else:
                interval = (
                    f"{_percent(s['confidence'])} interval "
                    f"[{s['ci_low']:+.2f}, {s['ci_high']:+.2f}]"
                )
            print(
                f"  {scenes:<8} {LABELS[arm] + ' - plain':<16} mean {s['mean_difference']:+.2f}  "
                f"{interval}  ahead in {s['wins']} of {s['n']}  "
                f"(mIoU: plain {s['mean_plain_miou']:.2f}, {LABELS[arm]} {s['mean_arm_miou']:.2f})",
                file=stream,
            )


# ---------------------------------------------------------------------------
# Markdown tables and curves


def per_seed_table(runs: list[dict]) -> list[str]:
    """Markdown lines of every run's mIoUs and differences, by scene set then seed:
    | scenes | seed | plain | CondNet | CAC | CondNet - plain | CAC - plain |
    ("-" where an arm did not run)."""
    header = ["scenes", "seed", *(LABELS[a] if a != "plain" else "plain" for a in ARMS)]
    header += [f"{LABELS[a]} - plain" for a in CONDITIONAL]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for scenes, by_seed in _runs_by_set(runs).items():
        for seed, record in by_seed.items():
            arms = record["arms"]
            cells = [scenes, str(seed)]
            cells += [f"{arms[a]['mIoU']:.2f}" if a in arms else "-" for a in ARMS]
            cells += [
                f"{arms[a]['mIoU'] - arms['plain']['mIoU']:+.2f}"
                if a in arms and "plain" in arms
                else "-"
                for a in CONDITIONAL
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_table(summary: dict) -> list[str]:
    """Markdown lines of :func:`summarize`'s comparison:
    | scenes | arm | n | mean diff | 95% interval | wins |
    (the interval's percentage is the summary's confidence; "-" with one seed)."""
    entries = [
        (scenes, arm, summary[scenes][arm])
        for scenes in SCENE_SETS
        for arm in CONDITIONAL
        if arm in summary.get(scenes, {})
    ]
    levels = {e["confidence"] for _, _, e in entries}
    if len(levels) > 1:
        raise ValueError(f"summary mixes confidence levels {sorted(levels)}; expected one")
    percent = _percent(levels.pop() if levels else 0.95)
    lines = [
        f"| scenes | arm | n | mean diff | {percent} interval | wins |",
        "|---|---|---|---|---|---|",
    ]
    for scenes, arm, e in entries:
        interval = "-" if e["ci_low"] is None else f"[{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]"
        lines.append(
            f"| {scenes} | {LABELS[arm]} | {e['n']} | {e['mean_difference']:+.2f} | "
            f"{interval} | {e['wins']} of {e['n']} |"
        )
    return lines


def curves(runs: list[dict], scenes: str) -> dict[str, list[list[list[float]]]]:
    """Each arm's validation curves on scene set ``scenes``, one per seed in seed
    order: ``{arm: [[[iteration, mIoU], ...], ...]}`` (arms in :data:`ARMS` order;
    an arm without any curve is left out)."""
    if scenes not in SCENE_SETS:
        raise ValueError(f"scenes must be one of {SCENE_SETS}, got {scenes!r}")
    grouped: dict[str, list[list[list[float]]]] = {}
    by_seed = _runs_by_set(runs).get(scenes, {})
    for arm in ARMS:
        found = [
            [list(point) for point in record["arms"][arm]["curve"]]
            for record in by_seed.values()
            if arm in record["arms"] and "curve" in record["arms"][arm]
        ]
        if found:
            grouped[arm] = found
    return grouped
