"""condnet-demo (condnet.tools.demo over condnet.demo) end to end with tiny models: the
shared plain stage and the three arms (plain, CondNet twin, CAC twin) on the cue and
control scene sets, the files of a run, the multi-seed report, the comparison with a
committed report, the defaults and the argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from condnet.checkpoint_files import read_state_dict
from condnet.data.scenes import SCENE_CLASSES
from condnet.demo import run as demo_run
from condnet.demo import stats
from condnet.demo.stages import ARM_LR_FACTOR, MODELS, learning_curve, write_twin
from condnet.engine.builders import build_dataset, build_model
from condnet.engine.config import load_config
from condnet.engine.weights import load_weights
from condnet.tools import demo

REPO = Path(__file__).resolve().parents[1]
TINY = """_base_ = {base!r}
model = dict(channels=16, c1_channels=8, aux_channels=8)
data = dict(samples_per_gpu=2, crop_size=(48, 48))
"""
TINY_SCENES = dict(num_train=6, num_val=3, size=48)
STAGE_ITERS, ARM_ITERS = 2, 2
METRICS = ("mIoU", "mAcc", "aAcc")


@pytest.fixture(autouse=True)
def one_thread():
    """Every test scores on one thread and restores torch's thread count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny_configs(tmp_path) -> Path:
    """The three demo configs, each overridden to a tiny network on 48-pixel crops."""
    folder = tmp_path / "configs"
    folder.mkdir()
    for name in MODELS.values():
        base = REPO / "condnet" / "configs" / "demo" / name
        (folder / name).write_text(TINY.format(base=str(base)))
    return folder


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Tiny scene sets, and the current folder in ``tmp_path`` (so that the default
    ``--committed`` path does not exist and nothing is written into the checkout)."""
    monkeypatch.setattr(demo_run, "SCENES", dict(TINY_SCENES))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _argv(data: Path, work_dir: Path, configs: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--work-dir",
        str(work_dir),
        "--configs",
        str(configs),
        "--stage-iters",
        str(STAGE_ITERS),
        "--iters",
        str(ARM_ITERS),
        "--num-images",
        "2",
        "--threads",
        "1",
        *extra,
    ]


def _config(configs: Path, arm: str, data_root: Path):
    return load_config(configs / MODELS[arm], [f"data.root={str(data_root)!r}"])


def _model(configs: Path, arm: str, data_root: Path, weights: Path):
    """The ``arm`` model of the tiny configs with ``weights``, in eval mode."""
    model = build_model(_config(configs, arm, data_root))
    load_weights(model, weights)
    return model.eval()


def _score(configs: Path, arm: str, data_root: Path, weights: Path) -> dict:
    """The scores of ``weights`` in the ``arm`` model, computed here, not by the demo."""
    cfg = _config(configs, arm, data_root)
    val_set = build_dataset(cfg, "val")
    return stats.score(_model(configs, arm, data_root, weights), val_set, "cpu")


def _metrics(results: dict) -> str:
    """The scores and curves of every arm of a results.json (no times), as JSON text
    (a class absent from the validation scenes has a NaN IoU, which is not equal to
    itself as a float)."""
    arms = {
        arm: {k: v for k, v in scores.items() if k != "wall_s"}
        for arm, scores in results["arms"].items()
    }
    return json.dumps(arms, sort_keys=True)


def test_one_seed_trains_the_stage_and_three_arms(tiny_configs, in_tmp, capsys):
    data, work = in_tmp / "scenes", in_tmp / "work"
    argv = _argv(data, work, tiny_configs)
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    run = work / "cue-seed0"
    results = json.loads((run / "results.json").read_text())

    # What it prints.
    assert "cue scenes: colour alone labels" in out
    assert "(no committed multi-seed results at benchmarks/results/demo_scenes.json" in out
    assert f"[1/4] shared plain stage: {STAGE_ITERS} iterations (ETA " in out
    assert "run ETA" in out
    for index, label in ((2, "plain 1x1 classifier"), (3, "CondNet"), (4, "CAC")):
        assert f"[{index}/4] {label} arm: {ARM_ITERS} iterations from the stage (ETA " in out
    assert "validation scenes ('cue' set), seed 0, 4 iterations:" in out
    for label in ("plain 1x1 classifier", "CondNet", "CAC"):
        row = next(line for line in out.splitlines() if line.startswith(f"{label:<24}"))
        assert f"{results['arms'][_arm(label)]['mIoU']:>8.2f}" in row
    assert "(chance guidance accuracy: 12.5%)" in out  # 8 scene classes
    arms = results["arms"]
    for arm, label in (("condnet", "CondNet"), ("cac", "CAC")):
        gain = arms[arm]["mIoU"] - arms["plain"]["mIoU"]
        assert f"{label} - plain: {gain:+.2f} mIoU\n" in out
    assert "total time:" in out and "(1 threads)" in out

    # What it writes.
    for name in ("predictions.png", "masks.png", "curves.png", "results.json"):
        assert (run / name).is_file(), name
    for name in ("condnet_twin.pth", "cac_twin.pth"):
        assert (run / name).is_file(), name
    assert (run / "plain_stage" / f"iter_{STAGE_ITERS}.pth").is_file()
    for arm in ("plain", "condnet", "cac"):
        assert (run / arm / f"iter_{ARM_ITERS}.pth").is_file(), arm

    # results.json
    lr = _config(tiny_configs, "plain", data / "cue").optimizer.lr
    assert (results["seed"], results["scenes"], results["threads"]) == (0, "cue", 1)
    assert results["stage_iterations"] == STAGE_ITERS and results["arm_iterations"] == ARM_ITERS
    assert results["iterations"] == STAGE_ITERS + ARM_ITERS
    assert results["arm_lr"] == pytest.approx(lr * ARM_LR_FACTOR) and results["arm_lr"] == 0.001
    assert results["chance_acc_guidance"] == pytest.approx(12.5)
    assert sorted(results["figures"]) == sorted(
        str(run / n) for n in ("predictions.png", "masks.png", "curves.png")
    )
    assert list(arms) == ["plain", "condnet", "cac"]
    for arm, scores in arms.items():
        assert set(scores) == {*METRICS, "IoU", "wall_s", "curve"} | (
            {"acc_guidance"} if arm == "condnet" else set()
        ), arm
        assert list(scores["IoU"]) == list(SCENE_CLASSES)
        assert scores["wall_s"] > 0
        # The demo's scores are the trained model's, recomputed here from its checkpoint.
        again = _score(tiny_configs, arm, data / "cue", run / arm / "latest.pth")
        for key in (*METRICS, "IoU"):
            assert scores[key] == pytest.approx(again[key], abs=1e-9, nan_ok=True), (arm, key)
    assert 0.0 <= arms["condnet"]["acc_guidance"] <= 100.0

    # The learning curves: the stage's points, then the arm's offset by the stage.
    stage = _score(tiny_configs, "plain", data / "cue", run / "plain_stage" / "latest.pth")
    end = STAGE_ITERS + ARM_ITERS
    plain_curve = arms["plain"]["curve"]
    assert [p[0] for p in plain_curve] == [STAGE_ITERS, end]
    assert plain_curve[0][1] == pytest.approx(stage["mIoU"], abs=1e-9)
    assert plain_curve[1][1] == pytest.approx(arms["plain"]["mIoU"], abs=1e-9)
    condnet_curve = arms["condnet"]["curve"]
    assert condnet_curve[0] == plain_curve[0]  # the same stage, the same point
    assert [p[0] for p in condnet_curve] == [STAGE_ITERS, end]
    assert condnet_curve[1][1] == pytest.approx(arms["condnet"]["mIoU"], abs=1e-9)
    cac_curve = arms["cac"]["curve"]
    assert cac_curve[0] == plain_curve[0]
    assert [p[0] for p in cac_curve] == [STAGE_ITERS, STAGE_ITERS, end]
    cac_start = _score(tiny_configs, "cac", data / "cue", run / "cac_twin.pth")
    assert cac_curve[1][1] == pytest.approx(cac_start["mIoU"], abs=1e-9)
    assert cac_curve[2][1] == pytest.approx(arms["cac"]["mIoU"], abs=1e-9)

    # The CondNet twin predicts what the plain stage predicts.
    val_set = build_dataset(_config(tiny_configs, "plain", data / "cue"), "val")
    img = val_set[0]["img"][None]
    plain_model = _model(tiny_configs, "plain", data / "cue", run / "plain_stage" / "latest.pth")
    twin = _model(tiny_configs, "condnet", data / "cue", run / "condnet_twin.pth")
    with torch.no_grad():
        plain_logits, twin_logits = plain_model(img), twin(img)
    assert plain_logits.shape == twin_logits.shape == (1, 8, *img.shape[-2:])
    torch.testing.assert_close(twin_logits, plain_logits, rtol=1e-5, atol=1e-5)
    trained = _model(tiny_configs, "condnet", data / "cue", run / "condnet" / "latest.pth")
    with torch.no_grad():  # and the twin is not the trained CondNet arm
        assert not torch.equal(trained(img), twin_logits)

    # The CAC twin: the stage's tensors, all of them, and fresh projections.
    stage_state = read_state_dict(run / "plain_stage" / "latest.pth")
    cac_state = read_state_dict(run / "cac_twin.pth")
    fresh = sorted(k for k in cac_state if ".proj." in k or ".apd_proj." in k)
    assert fresh and sorted(torch.load(run / "cac_twin.pth")["meta"]["fresh"]) == fresh
    assert set(cac_state) - set(fresh) == set(stage_state)
    for key, tensor in stage_state.items():
        assert torch.equal(cac_state[key], tensor), key

    # A second identical run reuses the scenes and the finished trainings.
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert f"using the scene set in {data / 'cue'}" in out and "wrote 6 training" not in out
    assert out.count("nothing to do") == 4  # the stage and the three arms
    assert "wrote the" not in out  # the twins are kept
    again = json.loads((run / "results.json").read_text())
    assert _metrics(again) == _metrics(results)
    assert json.loads((run / "plan.json").read_text())["stage_iterations"] == 2

    # Other budgets over the finished run: refused (its twins and arms were made from
    # the 2-iteration stage), nothing retrained; --fresh retrains.
    changed = _argv(data, work, tiny_configs)
    changed[changed.index("--stage-iters") + 1] = "3"
    assert demo.main(changed) == 1
    err = capsys.readouterr().err
    assert "holds a run made with other settings (stage_iterations: 2 then, 3 now)" in err
    assert "--fresh" in err
    assert json.loads((run / "results.json").read_text())["stage_iterations"] == 2
    assert demo.main([*changed, "--fresh"]) == 0
    capsys.readouterr()
    redone = json.loads((run / "results.json").read_text())
    assert (redone["stage_iterations"], redone["iterations"]) == (3, 5)
    assert redone["arms"]["cac"]["curve"][1][0] == 3  # CAC's start, after the new stage


def _arm(label: str) -> str:
    return {label: arm for arm, label in stats.LABELS.items()}[label]


def test_seeds_on_both_scene_sets_write_the_paired_report(tiny_configs, in_tmp, capsys):
    data, work, out = in_tmp / "scenes", in_tmp / "work", in_tmp / "out" / "x.json"
    argv = _argv(data, work, tiny_configs, "--seeds", "0,1", "--scenes", "cue,control")
    assert demo.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cue scenes: colour alone labels" in printed
    assert "control scenes: colour alone labels" in printed
    assert "paired mIoU differences from the plain classifier over seeds:" in printed
    assert f"wrote {out} and {out.with_name('x_curves.png')}" in printed

    report = json.loads(out.read_text())
    runs = report["runs"]
    assert sorted((r["seed"], r["scenes"]) for r in runs) == [
        (0, "control"),
        (0, "cue"),
        (1, "control"),
        (1, "cue"),
    ]
    for r in runs:  # each run is also the results.json of its folder
        saved = json.loads((work / f"{r['scenes']}-seed{r['seed']}" / "results.json").read_text())
        assert saved["arms"] == r["arms"]
        assert r["iterations"] == STAGE_ITERS + ARM_ITERS
    summary = report["summary"]
    assert set(summary) == {"cue", "control"}
    for scenes in ("cue", "control"):
        assert set(summary[scenes]) == {"condnet", "cac"}
        for arm in ("condnet", "cac"):
            by_seed = {r["seed"]: r["arms"] for r in runs if r["scenes"] == scenes}
            diffs = [by_seed[s][arm]["mIoU"] - by_seed[s]["plain"]["mIoU"] for s in (0, 1)]
            entry = summary[scenes][arm]
            assert entry["seeds"] == [0, 1] and entry["n"] == 2
            assert entry["differences"] == pytest.approx(diffs, abs=1e-12)
            assert entry["mean_difference"] == pytest.approx((diffs[0] + diffs[1]) / 2)
            assert entry["wins"] == sum(d > 0 for d in diffs)
            interval = stats.paired_interval(diffs)
            assert entry["ci_low"] == pytest.approx(interval["low"], abs=1e-9)
            assert entry["ci_high"] == pytest.approx(interval["high"], abs=1e-9)
            assert entry["std_difference"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2**0.5)
    checks = report["colour_cue_check"]
    assert set(checks) == {"cue", "control"}
    for check in checks.values():
        assert 0.0 <= check["global_accuracy"] <= 1.0
        assert 0.0 <= check["per_image_accuracy"] <= 1.0
    assert report["threads"] == 1
    assert out.with_name("x_curves.png").is_file()
    assert json.loads((data / "cue" / "scenes.json").read_text())["colours"] == "image"
    assert json.loads((data / "control" / "scenes.json").read_text())["colours"] == "region"


def _committed_summary() -> dict:
    """A committed report's summary whose CondNet interval on the cue set lies far above
    any possible gain (mIoU differences are within +-100) and whose CAC interval
    contains every possible gain."""
    runs = []
    for seed, (condnet_gain, cac_gain) in enumerate([(150.0, -150.0), (151.0, 150.0)]):
        for scenes in ("cue", "control"):
            arms = {
                "plain": {"mIoU": 0.0},
                "condnet": {"mIoU": condnet_gain},
                "cac": {"mIoU": cac_gain},
            }
            runs.append({"seed": seed, "scenes": scenes, "arms": arms})
    return stats.summarize(runs)


def test_a_run_is_compared_with_the_committed_intervals(tiny_configs, in_tmp, capsys):
    data, work = in_tmp / "scenes", in_tmp / "work"
    committed = in_tmp / "committed.json"
    summary = _committed_summary()
    committed.write_text(json.dumps({"runs": [], "summary": summary}))
    argv = _argv(data, work, tiny_configs)
    assert demo.main([*argv, "--committed", str(committed)]) == 0
    out = capsys.readouterr().out
    assert "no committed multi-seed results" not in out
    arms = json.loads((work / "cue-seed0" / "results.json").read_text())["arms"]
    for arm, label, where in (("condnet", "CondNet", "outside"), ("cac", "CAC", "inside")):
        gain = arms[arm]["mIoU"] - arms["plain"]["mIoU"]
        entry = summary["cue"][arm]
        assert (entry["ci_low"] <= gain <= entry["ci_high"]) == (where == "inside")
        expected = (
            f"{label} - plain: {gain:+.2f} mIoU; committed over 2 seeds: mean "
            f"{entry['mean_difference']:+.2f}, 95% interval "
            f"[{entry['ci_low']:+.2f}, {entry['ci_high']:+.2f}]; this run is {where} it"
        )
        assert expected in out
        control = summary["control"][arm]
        assert f"'control' set, {label} - plain: committed over 2 seeds" in out
        assert f"[{control['ci_low']:+.2f}, {control['ci_high']:+.2f}]" in out

    # The default --committed is relative to the current folder, where there is none.
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "(no committed multi-seed results at benchmarks/results/demo_scenes.json" in out
    assert "committed over" not in out and "CAC - plain:" in out
    # 'none' compares with nothing and prints no note.
    assert demo.main([*argv, "--committed", "none"]) == 0
    out = capsys.readouterr().out
    assert "committed" not in out and "CondNet - plain:" in out


def test_defaults_write_under_the_current_folder(in_tmp, monkeypatch, capsys):
    """Without --data and --work-dir the scenes and runs go under the folder the command
    runs from, and the configs are the package's own."""
    seen = []

    def run_seed_not_trained(settings, scenes, seed, rate, committed):
        seen.append((settings, scenes, seed, committed))
        return {"seed": seed, "scenes": scenes, "arms": {}}, rate

    monkeypatch.setattr(demo_run, "run_seed", run_seed_not_trained)
    assert demo.main(["--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert (in_tmp / "data" / "scenes" / "cue" / "scenes.json").is_file()
    assert not (in_tmp / "data" / "scenes" / "control").exists()
    assert "wrote 6 training and 3 validation scenes (colours per image) to data/scenes/cue" in out
    [(settings, scenes, seed, committed)] = seen
    assert (scenes, seed, committed) == ("cue", 0, None)
    assert settings.work_dir == Path("work_dirs/demo")
    assert settings.work_dir.resolve() == in_tmp / "work_dirs" / "demo"
    assert settings.data.resolve() == in_tmp / "data" / "scenes"
    assert settings.configs == demo_run.default_configs()
    assert not demo_run.missing_configs(settings.configs)
    assert settings.arms == ("plain", "condnet", "cac") and settings.scenes == ("cue",)
    assert (settings.stage_iters, settings.iters, settings.threads) == (200, 100, 1)
    assert settings.committed == Path("benchmarks/results/demo_scenes.json")
    assert settings.json is None and not settings.fresh


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--iters", "0"], "--iters must be >= 1"),
        (["--stage-iters", "0"], "--stage-iters must be >= 1"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--num-images", "0"], "--num-images must be >= 1"),
        (["--seeds", "0,x"], "argument --seeds: expected comma-separated integers"),
        (["--seeds", "1,1"], "argument --seeds: expected distinct seeds"),
        (["--seeds", "3"], "--seeds needs at least two seeds"),
        (["--seeds", "0,1", "--seed", "2"], "--seed and --seeds: give one of them"),
        (["--json", "x.json"], "--json is where --seeds writes its report; it needs --seeds"),
        (["--arms", "condnet"], "--arms must include plain"),
        (["--arms", "plain,foo"], "argument --arms: expected distinct comma-separated names"),
        (["--scenes", "foo"], "argument --scenes: expected distinct comma-separated names"),
        (["--configs", "EMPTY"], "lacks plain_r18-d8_scenes.py"),
        (["--device", "tpu"], "argument --device: invalid choice"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(tmp_path) if a == "EMPTY" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scenes", ("foo",)),
        ("scenes", ()),
        ("scenes", ("cue", "cue")),
        ("arms", ("condnet", "cac")),
        ("arms", ("plain", "foo")),
        ("arms", ("plain", "plain")),
        ("seeds", ()),
        ("seeds", (1, 1)),
    ],
)
def test_demo_settings_reject_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        demo_run.DemoSettings(**{field: value})


def test_demo_settings_defaults():
    settings = demo_run.DemoSettings()
    assert settings.scenes == ("cue",) and settings.seeds == (0,)
    assert settings.arms == ("plain", "condnet", "cac")


def test_a_report_of_another_format_is_not_compared_with(tmp_path, capsys):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"summary": {"warm_start": {"seeds": 3}}}))
    assert demo_run.load_committed(old) is None
    assert "is not a report of this demo's multi-seed run" in capsys.readouterr().out
    assert demo_run.load_committed(None) is None


def test_write_twin_checks_the_arm_first(tmp_path):
    with pytest.raises(ValueError, match="arm must be 'condnet' or 'cac'"):
        write_twin("plain", tmp_path / "missing.pth", tmp_path / "twin.pth", tmp_path / "c.py")


@pytest.mark.parametrize("arm", ["plain", "foo"])
def test_write_twin_rejects_an_unknown_arm(arm, tiny_configs, tmp_path):
    config = tiny_configs / MODELS["condnet"]
    plain = build_model(load_config(tiny_configs / MODELS["plain"]))
    checkpoint = tmp_path / "plain.pth"
    torch.save({"state_dict": plain.state_dict()}, checkpoint)
    out = tmp_path / "twin.pth"
    with pytest.raises(ValueError, match="arm must be 'condnet' or 'cac'"):
        write_twin(arm, checkpoint, out, config)
    assert not out.exists()


def test_learning_curve_reads_every_log_later_values_winning(tmp_path):
    def log(name: str, entries: list[dict]) -> None:
        (tmp_path / name).write_text("".join(json.dumps(e) + "\n" for e in entries))

    log(
        "20260101_120000.log.json",
        [
            {"mode": "train", "iter": 2, "loss": 1.0},
            {"mode": "val", "iter": 2, "mIoU": 0.25, "aAcc": 0.5},
            {"mode": "val", "iter": 4, "mIoU": 0.5, "aAcc": 0.5},
        ],
    )
    # The resumed run re-logged iteration 4 and went on to 6.
    log(
        "20260101_130000.log.json",
        [
            {"mode": "val", "iter": 4, "mIoU": 0.375, "aAcc": 0.5},
            {"mode": "train", "iter": 6, "loss": 0.5},
            {"mode": "val", "iter": 6, "mIoU": 0.625, "aAcc": 0.5},
        ],
    )
    (tmp_path / "20260101_120000.log").write_text('{"mode": "val", "iter": 8, "mIoU": 1.0}\n')
    assert learning_curve(tmp_path) == [[2, 25.0], [4, 37.5], [6, 62.5]]
    assert learning_curve(tmp_path, offset=10) == [[12, 25.0], [14, 37.5], [16, 62.5]]
    assert learning_curve(tmp_path / "missing") == []
