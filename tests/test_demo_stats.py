"""The demo's statistics (condnet.demo.stats): the Student t quantile, the paired t
interval, the summary over seeds by scene set and arm, the printed and markdown
tables and the grouped curves. Fast: crafted records, no training."""

import io
import json
import math
import random

import numpy as np
import pytest
from scipy import stats as scipy_stats

from condnet.demo import stats
from condnet.demo.stats import (
    curves,
    paired_interval,
    per_seed_table,
    print_run,
    print_summary,
    summarize,
    summary_table,
    t_quantile,
)

# ---------------------------------------------------------------------------
# t_quantile

PROBABILITIES = [
    1e-10,
    1e-6,
    1e-4,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.25,
    0.3,
    0.4,
    0.49,
    0.5001,
    0.6,
    0.75,
    0.8,
    0.9,
    0.95,
    0.975,
    0.99,
    0.995,
    0.999,
    0.9999,
    1 - 1e-7,
]
DFS = [*range(1, 61), 75, 99, 100, 127, 150, 200, 250, 333, 400, 500, 640, 750, 877, 999, 1000]


def test_t_quantile_matches_scipy():
    for df in DFS:
        for p in PROBABILITIES:
            expected = float(scipy_stats.t.ppf(p, df))
            got = t_quantile(p, df)
            assert abs(got - expected) <= 1e-9 * max(1.0, abs(expected)), (p, df, got, expected)


def test_t_quantile_textbook_values():
    # Two-sided 95% critical values from a printed t table.
    assert t_quantile(0.975, 4) == pytest.approx(2.776, abs=5e-4)
    assert t_quantile(0.975, 9) == pytest.approx(2.262, abs=5e-4)
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=5e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764451052, abs=1e-9)
    # One-sided 95% and two-sided 99% rows.
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=5e-4)
    assert t_quantile(0.995, 30) == pytest.approx(2.750, abs=5e-4)


def test_t_quantile_closed_forms():
    # df = 1 is the Cauchy distribution, t = tan(pi (p - 1/2)), written as a cotangent of
    # the smaller tail so that it keeps its digits; df = 2 has t = (2p - 1) / sqrt(2 p (1 - p)).
    for p in (1e-12, 0.01, 0.3, 0.7, 0.975, 0.999999):
        cauchy = -1 / math.tan(math.pi * p) if p < 0.5 else 1 / math.tan(math.pi * (1 - p))
        assert t_quantile(p, 1) == pytest.approx(cauchy, rel=1e-11, abs=0)
        assert t_quantile(p, 2) == pytest.approx(
            (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-11, abs=0
        )
    # Far tails keep their digits: 1 / (pi q) for the Cauchy tail q.
    assert t_quantile(1e-300, 1) == pytest.approx(-1 / (math.pi * 1e-300), rel=1e-11)


def test_t_quantile_symmetry_and_order():
    for df in (1, 3, 17, 500):
        assert t_quantile(0.5, df) == 0.0
        for p in (0.01, 0.2, 0.4):
            assert t_quantile(p, df) == pytest.approx(-t_quantile(1 - p, df), rel=1e-12)
        values = [t_quantile(p, df) for p in PROBABILITIES]
        assert values == sorted(values)
    # It approaches the normal quantile as df grows, from above.
    normal = 1.959963984540054
    gaps = [t_quantile(0.975, df) - normal for df in (10, 100, 1000)]
    assert gaps[0] > gaps[1] > gaps[2] > 0


@pytest.mark.parametrize("probability", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_t_quantile_bad_probability(probability):
    with pytest.raises(ValueError, match="probability"):
        t_quantile(probability, 4)


@pytest.mark.parametrize("df", [0, -3, 2.5, 4.0, None, True])
def test_t_quantile_bad_df(df):
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.975, df)


def test_t_quantile_accepts_numpy_integers():
    assert t_quantile(np.float64(0.975), np.int64(4)) == pytest.approx(2.7764451052, abs=1e-9)


# ---------------------------------------------------------------------------
# paired_interval


def test_paired_interval_by_hand():
    got = paired_interval([1, 2, 3, 4, 5])
    # mean 3; squared deviations 4 + 1 + 0 + 1 + 4 = 10 over n - 1 = 4: std sqrt(2.5);
    # half width t_{0.975, 4} * sqrt(2.5) / sqrt(5) = 2.7764451052 * 0.7071067812.
    half = 2.7764451051977934 * math.sqrt(2.5) / math.sqrt(5)
    assert half == pytest.approx(1.96324316, abs=1e-8)
    assert got["n"] == 5
    assert got["mean"] == 3.0
    assert got["std"] == pytest.approx(math.sqrt(2.5), rel=1e-15)
    assert got["half_width"] == pytest.approx(half, rel=1e-12)
    assert got["low"] == pytest.approx(3 - half, rel=1e-12)
    assert got["high"] == pytest.approx(3 + half, rel=1e-12)
    assert got["method"] == "paired t"
    assert set(got) == {"n", "mean", "std", "low", "high", "half_width", "method"}


def test_paired_interval_other_confidence_by_hand():
    # Differences [-1, 3]: mean 1, std sqrt(8); at 90% t_{0.95, 1} = tan(0.45 pi) = 6.3137515;
    # half width 6.3137515 * sqrt(8) / sqrt(2) = 2 * 6.3137515.
    got = paired_interval((-1.0, 3.0), confidence=0.9)
    assert got["half_width"] == pytest.approx(2 * math.tan(0.45 * math.pi), rel=1e-11)
    assert (got["low"], got["high"]) == pytest.approx((1 - 12.627503, 1 + 12.627503), abs=1e-6)


def test_paired_interval_matches_scipy():
    rng = np.random.default_rng(20)
    for n in (2, 3, 5, 8, 20, 200):
        for confidence in (0.8, 0.95, 0.99):
            arm = rng.normal(60, 3, n)
            plain = arm - rng.normal(1.5, 2, n)
            got = paired_interval((arm - plain).tolist(), confidence)
            expected = scipy_stats.ttest_rel(arm, plain).confidence_interval(confidence)
            assert got["low"] == pytest.approx(float(expected.low), rel=1e-9, abs=1e-12)
            assert got["high"] == pytest.approx(float(expected.high), rel=1e-9, abs=1e-12)
            sem = float(scipy_stats.sem(arm - plain))
            low, high = scipy_stats.t.interval(
                confidence, n - 1, loc=float(np.mean(arm - plain)), scale=sem
            )
            assert (got["low"], got["high"]) == pytest.approx((low, high), rel=1e-9)


def test_paired_interval_constant_differences():
    got = paired_interval([2.5, 2.5, 2.5])
    assert (got["std"], got["half_width"], got["low"], got["high"]) == (0.0, 0.0, 2.5, 2.5)


@pytest.mark.parametrize(
    "differences",
    [[], [1.0], [1.0, float("nan")], [1.0, float("inf")], ["a", "b"], None],
)
def test_paired_interval_bad_differences(differences):
    with pytest.raises(ValueError, match="differences"):
        paired_interval(differences)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95, -0.5, float("nan"), "0.95"])
def test_paired_interval_bad_confidence(confidence):
    with pytest.raises(ValueError, match="confidence"):
        paired_interval([1.0, 2.0, 3.0], confidence)


# ---------------------------------------------------------------------------
# summarize


def arm(miou, **extra):
    """An arm's scores with the given mIoU (the other scores derived from it)."""
    return {"mIoU": miou, "mAcc": miou + 10, "aAcc": miou + 20, "IoU": {"a": miou}, **extra}


def run(scenes, seed, **mious):
    """A run record with the given arms' mIoUs."""
    return {
        "seed": seed,
        "scenes": scenes,
        "iterations": 400,
        "chance_acc_guidance": 12.5,
        "wall_s": 300.0,
        "threads": 2,
        "arms": {name: arm(m) for name, m in mious.items()},
    }


def crafted_runs():
    """cue seeds 0-2 (CAC missing at seed 2), control seed 5 only."""
    return [
        run("cue", 0, plain=50.0, condnet=53.0, cac=49.0),
        run("cue", 1, plain=52.0, condnet=54.0, cac=55.0),
        run("cue", 2, plain=48.0, condnet=52.0),
        run("control", 5, plain=40.0, condnet=41.0, cac=39.5),
    ]


def test_summarize_pairs_by_seed_in_any_order():
    runs = crafted_runs()
    random.Random(3).shuffle(runs)
    summary = summarize(runs)
    assert list(summary) == ["cue", "control"]
    assert list(summary["cue"]) == ["condnet", "cac"]

    condnet = summary["cue"]["condnet"]
    # Differences 3, 2, 4: mean 3, std 1; half width t_{0.975, 2} / sqrt(3) = 4.3026527 / 1.7320508.
    half = 4.302652729749464 / math.sqrt(3)
    assert condnet["seeds"] == [0, 1, 2]
    assert condnet["differences"] == [3.0, 2.0, 4.0]
    assert condnet["n"] == 3
    assert condnet["mean_difference"] == 3.0
    assert condnet["std_difference"] == pytest.approx(1.0, rel=1e-15)
    assert condnet["ci_low"] == pytest.approx(3 - half, rel=1e-12)
    assert condnet["ci_high"] == pytest.approx(3 + half, rel=1e-12)
    assert condnet["wins"] == 3
    assert (condnet["mean_plain_miou"], condnet["mean_arm_miou"]) == (50.0, 53.0)
    assert (condnet["confidence"], condnet["method"]) == (0.95, "paired t")

    # CAC ran at seeds 0 and 1 only: -1 and +3, mean 1, std sqrt(8), half width
    # t_{0.975, 1} * sqrt(8) / sqrt(2) = 2 * 12.7062047.
    cac = summary["cue"]["cac"]
    assert (cac["seeds"], cac["differences"], cac["n"], cac["wins"]) == ([0, 1], [-1.0, 3.0], 2, 1)
    assert cac["mean_difference"] == 1.0
    assert cac["std_difference"] == pytest.approx(math.sqrt(8), rel=1e-15)
    assert cac["ci_low"] == pytest.approx(1 - 2 * 12.706204736174707, rel=1e-11)
    assert cac["ci_high"] == pytest.approx(1 + 2 * 12.706204736174707, rel=1e-11)
    assert (cac["mean_plain_miou"], cac["mean_arm_miou"]) == (51.0, 52.0)

    # One seed: no spread, no interval.
    control = summary["control"]
    assert control["condnet"]["differences"] == [1.0]
    assert control["cac"]["differences"] == [-0.5]
    for entry in control.values():
        assert entry["n"] == 1
        assert entry["std_difference"] is None
        assert entry["ci_low"] is None and entry["ci_high"] is None
    assert control["cac"]["wins"] == 0 and control["condnet"]["wins"] == 1

    # Same answer for every order, and it survives JSON (it is committed as JSON).
    assert summarize(list(reversed(runs))) == summary
    assert json.loads(json.dumps(summary)) == summary


def test_summarize_confidence_and_missing_arms():
    runs = [run("cue", s, plain=50.0 + s, condnet=51.0 + 2 * s) for s in range(4)]
    summary = summarize(runs, confidence=0.8)
    assert list(summary["cue"]) == ["condnet"]  # CAC never ran
    entry = summary["cue"]["condnet"]
    interval = paired_interval(entry["differences"], 0.8)
    assert (entry["ci_low"], entry["ci_high"], entry["confidence"]) == (
        interval["low"],
        interval["high"],
        0.8,
    )
    # A run without plain pairs nothing; a set without any pair is left out.
    assert summarize([run("control", 0, condnet=40.0, cac=41.0)]) == {}
    assert summarize([]) == {}


def test_summarize_duplicate_seed():
    runs = crafted_runs() + [run("cue", 1, plain=1.0, condnet=2.0)]
    with pytest.raises(ValueError, match=r"'cue' at seed 1"):
        summarize(runs)
    # The same seed on the other scene set is a different run.
    assert summarize(crafted_runs() + [run("control", 0, plain=1.0, condnet=2.0)])


@pytest.mark.parametrize(
    "record, message",
    [
        ({"seed": 0, "scenes": "cue"}, "'arms'"),
        ({"scenes": "cue", "arms": {}}, "'seed'"),
        ({"seed": 0, "scenes": "night", "arms": {}}, "scenes"),
        ({"seed": 0, "scenes": "cue", "arms": {"twin": arm(50.0)}}, "unknown arm 'twin'"),
        ({"seed": 0, "scenes": "cue", "arms": {"plain": {"mAcc": 3.0}}}, "mIoU"),
        ({"seed": 0, "scenes": "cue", "arms": {"plain": arm(float("nan"))}}, "mIoU"),
        ("results.json", "run record"),
    ],
)
def test_summarize_bad_records(record, message):
    with pytest.raises(ValueError, match=message):
        summarize([run("cue", 9, plain=1.0, condnet=2.0), record])


def test_summarize_bad_confidence():
    with pytest.raises(ValueError, match="confidence"):
        summarize(crafted_runs(), confidence=1.5)


# ---------------------------------------------------------------------------
# print_run and print_summary


def committed_summary():
    """A crafted committed summary: on cue, CondNet's interval [+1, +4] and CAC's
    [-1, +2]; on control, CondNet only."""

    def entry(n, mean, low, high):
        return {
            "seeds": list(range(n)),
            "differences": [mean] * n,
            "n": n,
            "mean_difference": mean,
            "std_difference": None if low is None else 1.0,
            "ci_low": low,
            "ci_high": high,
            "confidence": 0.95,
            "method": "paired t",
            "wins": n,
            "mean_plain_miou": 50.0,
            "mean_arm_miou": 50.0 + mean,
        }

    return {
        "cue": {"condnet": entry(5, 2.5, 1.0, 4.0), "cac": entry(5, 0.5, -1.0, 2.0)},
        "control": {"condnet": entry(4, 0.25, -0.75, 1.25)},
    }


def printed(record, committed=None):
    stream = io.StringIO()
    print_run(record, committed, stream=stream)
    return stream.getvalue()


def test_print_run_table():
    record = run("cue", 7, plain=50.0, condnet=55.0, cac=50.5)
    record["arms"]["plain"]["wall_s"] = 95.0
    record["arms"]["condnet"].update(acc_guidance=61.25, wall_s=3725.0)
    out = printed(record)
    lines = out.splitlines()
    assert "'cue'" in out and "seed 7" in out and "400 iterations" in out
    plain_row = next(line for line in lines if line.startswith("plain 1x1 classifier"))
    assert plain_row.split()[3:] == ["50.00", "60.00", "70.00", "-", "0:01:35"]
    condnet_row = next(line for line in lines if line.startswith("CondNet "))
    assert condnet_row.split()[1:] == ["55.00", "65.00", "75.00", "61.25", "1:02:05"]
    cac_row = next(line for line in lines if line.startswith("CAC "))
    assert cac_row.split()[1:] == ["50.50", "60.50", "70.50", "-", "-"]
    assert "CondNet - plain: +5.00 mIoU" in lines
    assert "CAC - plain: +0.50 mIoU" in lines
    assert "committed" not in out
    assert "12.5%" in out


def test_print_run_against_committed():
    record = run("cue", 7, plain=50.0, condnet=55.0, cac=50.5)
    out = printed(record, committed_summary())
    lines = out.splitlines()
    condnet = next(line for line in lines if line.startswith("CondNet - plain: +5.00"))
    assert condnet == (
        "CondNet - plain: +5.00 mIoU; committed over 5 seeds: mean +2.50, "
        "95% interval [+1.00, +4.00]; this run is outside it"
    )
    cac = next(line for line in lines if line.startswith("CAC - plain: +0.50"))
    assert cac.endswith("95% interval [-1.00, +2.00]; this run is inside it")
    # The other scene set's committed line follows, so both sets are shown.
    other = [line for line in lines if line.startswith("'control'")]
    assert other == [
        "'control' set, CondNet - plain: committed over 4 seeds: mean +0.25, "
        "95% interval [-0.75, +1.25]"
    ]

    # On control: CondNet +1.00 is inside [-0.75, +1.25]; CAC has no committed entry there.
    record = run("control", 7, plain=50.0, condnet=51.0, cac=47.0)
    lines = printed(record, committed_summary()).splitlines()
    assert next(line for line in lines if line.startswith("CondNet - plain")).endswith(
        "this run is inside it"
    )
    assert "CAC - plain: -3.00 mIoU" in lines
    assert sum(line.startswith("'cue' set") for line in lines) == 2
    # The interval's edges count as inside.
    record = run("cue", 7, plain=50.0, condnet=54.0, cac=49.0)
    out = printed(record, committed_summary())
    assert out.count("this run is inside it") == 2 and "outside" not in out


def test_print_run_single_seed_committed_and_missing_arms():
    summary = summarize([run("cue", 0, plain=50.0, condnet=52.0)])
    out = printed(run("cue", 3, plain=50.0, condnet=51.0), summary)
    assert "CondNet - plain: +1.00 mIoU; committed over 1 seed: mean +2.00" in out
    assert "no interval from one seed" in out
    assert "inside" not in out and "outside" not in out
    # Only CAC ran: its row, and no difference line without plain.
    out = printed(run("cue", 3, cac=44.0))
    assert "CAC " in out and "44.00" in out
    assert "- plain" not in out and "plain 1x1" not in out


def test_print_summary():
    summary = summarize(crafted_runs())
    stream = io.StringIO()
    print_summary(summary, stream=stream)
    lines = stream.getvalue().splitlines()
    rows = [line.split() for line in lines if line.startswith("  ")]
    assert [row[:2] for row in rows] == [["cue", "CondNet"], ["cue", "CAC"]] + [
        ["control", "CondNet"],
        ["control", "CAC"],
    ]
    half = 4.302652729749464 / math.sqrt(3)
    condnet_cue = lines[[i for i, line in enumerate(lines) if "cue" in line][0]]
    assert "mean +3.00" in condnet_cue
    assert f"95% interval [{3 - half:+.2f}, {3 + half:+.2f}]" in condnet_cue
    assert "ahead in 3 of 3" in condnet_cue
    assert "plain 50.00, CondNet 53.00" in condnet_cue
    cac_cue = next(line for line in lines if "cue" in line and "CAC - plain" in line)
    assert "ahead in 1 of 2" in cac_cue and "[-24.41, +26.41]" in cac_cue
    control = [line for line in lines if "control" in line]
    assert all("no interval from one seed" in line for line in control)
    assert "ahead in 0 of 1" in control[1]


# ---------------------------------------------------------------------------
# Markdown tables and curves


def test_per_seed_table():
    runs = crafted_runs()
    random.Random(1).shuffle(runs)
    assert per_seed_table(runs) == [
        "| scenes | seed | plain | CondNet | CAC | CondNet - plain | CAC - plain |",
        "|---|---|---|---|---|---|---|",
        "| cue | 0 | 50.00 | 53.00 | 49.00 | +3.00 | -1.00 |",
        "| cue | 1 | 52.00 | 54.00 | 55.00 | +2.00 | +3.00 |",
        "| cue | 2 | 48.00 | 52.00 | - | +4.00 | - |",
        "| control | 5 | 40.00 | 41.00 | 39.50 | +1.00 | -0.50 |",
    ]


def test_summary_table():
    half = 4.302652729749464 / math.sqrt(3)
    assert summary_table(summarize(crafted_runs())) == [
        "| scenes | arm | n | mean diff | 95% interval | wins |",
        "|---|---|---|---|---|---|",
        f"| cue | CondNet | 3 | +3.00 | [{3 - half:+.2f}, {3 + half:+.2f}] | 3 of 3 |",
        "| cue | CAC | 2 | +1.00 | [-24.41, +26.41] | 1 of 2 |",
        "| control | CondNet | 1 | +1.00 | - | 1 of 1 |",
        "| control | CAC | 1 | -0.50 | - | 0 of 1 |",
    ]
    assert summary_table(summarize(crafted_runs(), confidence=0.9))[0].startswith(
        "| scenes | arm | n | mean diff | 90% interval |"
    )
    mixed = summarize(crafted_runs())
    mixed["control"]["cac"]["confidence"] = 0.9
    with pytest.raises(ValueError, match="confidence"):
        summary_table(mixed)


def test_curves():
    runs = crafted_runs()
    for record in runs:
        for scores in record["arms"].values():
            scores["curve"] = [[100, record["seed"]], [200, scores["mIoU"]]]
    del runs[1]["arms"]["condnet"]["curve"]  # cue seed 1: no CondNet curve
    random.Random(5).shuffle(runs)
    got = curves(runs, "cue")
    assert list(got) == ["plain", "condnet", "cac"]
    assert got["plain"] == [
        [[100, 0], [200, 50.0]],
        [[100, 1], [200, 52.0]],
        [[100, 2], [200, 48.0]],
    ]
    assert got["condnet"] == [[[100, 0], [200, 53.0]], [[100, 2], [200, 52.0]]]
    assert got["cac"] == [[[100, 0], [200, 49.0]], [[100, 1], [200, 55.0]]]
    assert curves(runs, "control")["cac"] == [[[100, 5], [200, 39.5]]]
    assert curves([run("cue", 0, plain=1.0)], "control") == {}
    with pytest.raises(ValueError, match="scenes"):
        curves(runs, "night")


def test_constants():
    assert stats.ARMS == ("plain", "condnet", "cac")
    assert stats.CONDITIONAL == ("condnet", "cac")
    assert stats.SCENE_SETS == ("cue", "control")
    assert stats.LABELS == {"plain": "plain 1x1 classifier", "condnet": "CondNet", "cac": "CAC"}
