"""benchmarks/targets.py: the whole-classifier rows against issue 24's
targets, on made-up records (no timing), and on the committed results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import targets  # noqa: E402


def _rec(provider, mode, ms, pct, peak, op="classifier", unsteady=False):
    return {
        "op": op,
        "shape": "ade",
        "B": 2,
        "C": 512,
        "K": 150,
        "H": 128,
        "W": 128,
        "dtype": "float32",
        "mode": mode,
        "provider": provider,
        "median_ms": ms,
        "pct_roofline": pct,
        "peak_mem_bytes": peak,
        "unsteady": unsteady,
        "speedup_vs_eager": None,
        "speedup_vs_compile": None,
    }


def _group(mode, eager, compile_, ext, peaks=(100, 100, 50), op="classifier"):
    """Rows whose floor is 10 ms, so pct = 1000 / ms."""
    out = []
    providers = ("eager", "compile", "extension")
    for provider, ms, peak in zip(providers, (eager, compile_, ext), peaks, strict=True):
        rec = _rec(provider, mode, ms, 1000.0 / ms, peak, op=op)
        rec["speedup_vs_eager"], rec["speedup_vs_compile"] = eager / ms, compile_ / ms
        out.append(rec)
    return out


def test_a_row_meeting_every_target():
    [entry] = targets.verdicts(_group("fwd_bwd", eager=100, compile_=75, ext=50))
    assert entry["missed"] == [] and entry["needed"] == []
    assert entry["vs_eager"] == pytest.approx(2.0) and entry["peak"] == pytest.approx(0.5)


def test_misses_give_the_roofline_share_each_target_needs():
    """eager at 10% of the roofline, compile at 12.5%: 2x eager needs 20%,
    1.5x compile 18.75%; the extension's 14.3% meets neither."""
    [entry] = targets.verdicts(_group("fwd_bwd", eager=100, compile_=80, ext=70))
    assert entry["missed"] == ["2x eager", "1.5x compile"]
    assert entry["needed"] == ["20% (2x eager)", "19% (1.5x compile)"]


def test_forward_targets_and_peak():
    [entry] = targets.verdicts(_group("fwd", eager=100, compile_=90, ext=95, peaks=(100, 90, 61)))
    assert entry["missed"] == ["1x compile", "peak"]
    assert entry["needed"] == ["11% (1x compile)"]


def test_only_whole_classifiers_with_an_extension_row():
    records = _group("fwd", 100, 90, 80, op="class_pool") + _group("fwd", 100, 90, 80, op="cac")
    records += [r for r in _group("fwd_bwd", 100, 90, 80) if r["provider"] != "extension"]
    assert [e["op"] for e in targets.verdicts(records)] == ["cac"]


def test_sweep_points_are_rows_of_their_own():
    records = []
    for K in (19, 59):
        for rec in _group("fwd", 100, 90, 80):
            records.append({**rec, "shape": "sweep-k", "K": K})
    assert [e["shape"] for e in targets.verdicts(records)] == ["sweep-k (K=19)", "sweep-k (K=59)"]


def test_unsteady_providers_are_named():
    records = _group("fwd", 100, 90, 80)
    records[1]["unsteady"] = True
    assert targets.verdicts(records)[0]["unsteady"] == ["compile"]


def test_markdown_and_the_command_line(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_group("fwd_bwd", 100, 80, 70)))
    targets.main([str(path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| op | shape |") and len(out) == 3
    assert "missed: 2x eager, 1.5x compile" in out[2] and "| 70 |" in out[2]
    with pytest.raises(SystemExit):
        targets.main([str(tmp_path / "missing.json")])
    assert "no results file" in capsys.readouterr().err


def test_the_committed_results_have_every_whole_classifier_row():
    entries = targets.verdicts(targets.load([targets.RESULTS / n for n in targets.DEFAULT_FILES]))
    seen = {(e["op"], e["shape"], e["precision"], e["mode"]) for e in entries}
    assert len(entries) == len(seen)
    for op in ("classifier", "cac"):
        for shape in ("ade", "ade-b8"):
            for precision in ("float32", "amp-bfloat16"):
                for mode in ("fwd", "fwd_bwd"):
                    assert (op, shape, precision, mode) in seen
