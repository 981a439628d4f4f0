"""benchmarks/run_kernels.py in quick mode: it runs, its records are complete
and consistent (repeats included), --plot writes a PNG, bad arguments fail
clearly; the named shapes and their work model; and the released
formulation and the CPU peak-memory method it relies on are right. How the
benchmark measures is tested in test_bench_method.py. No timing is asserted."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import kernel_cases  # noqa: E402
import memory  # noqa: E402
import providers  # noqa: E402
import released  # noqa: E402
import report  # noqa: E402
import rows  # noqa: E402
import run_kernels  # noqa: E402

from condnet.ops import extension, reference  # noqa: E402

FIELDS = {
    "op": str,
    "provider": str,
    "device": str,
    "device_name": str,
    "dtype": str,
    "B": int,
    "C": int,
    "K": int,
    "H": int,
    "W": int,
    "mode": str,
    "median_ms": float,
    "q20_ms": float,
    "q80_ms": float,
    "speedup_vs_eager": float,
    "speedup_vs_compile": (float, type(None)),
    "gbps": float,
    "tflops": float,
    "pct_roofline": float,
    "over_roofline": bool,
    "memory_ceiling_gbps": float,
    "matmul_ceiling_tflops": float,
    "memory_ceiling_source": str,
    "matmul_ceiling_source": str,
    "repeats": int,
    "repeat_medians_ms": list,
    "repeat_spread": float,
    "unsteady": bool,
    "page_faults_per_call": float,
    "peak_mem_bytes": (int, type(None)),
    "cpu_model": (str, type(None)),
    "cpu_features": list,
    "cpu_allocator": str,
    "threads": int,
    "torch_version": str,
    "triton_version": (str, type(None)),
    "commit": (str, type(None)),
    "date": str,
}
HAS_EXTENSION = extension.has_kernel("class_pool", "cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two quick CPU runs: every provider on the whole classifier's
    forward+backward at the quick ADE shape (compile only there: compiling is
    the slow part), and every op's forward at the quick ADE shapes, twice,
    and the sweeps, once, with markdown and plot."""
    out = tmp_path_factory.mktemp("bench")
    common = ["--quick", "--device", "cpu", "--dtype", "float32"]
    ade = run_kernels.main(
        [*common, "--ops", "classifier", "--mode", "fwd_bwd", "--json", str(out / "a.json")]
    )
    sweeps = run_kernels.main(
        [
            *common,
            "--shapes",
            "ade,ade-b8,sweep-k,sweep-n",
            "--repeat",
            "2",
            "--mode",
            "fwd",
            "--providers",
            "eager,extension,triton,released",
            "--json",
            str(out / "b.json"),
            "--markdown",
            str(out / "b.md"),
            "--plot",
            str(out / "b.png"),
        ]
    )
    return out, ade, sweeps


def test_json_has_every_field_with_its_type(runs):
    out, ade, sweeps = runs
    for name, in_memory in (("a.json", ade), ("b.json", sweeps)):
        records = json.loads((out / name).read_text())
        assert records == json.loads(json.dumps(in_memory))
        for rec in records:
            for field, kind in FIELDS.items():
                assert isinstance(rec[field], kind), (field, rec[field])
            assert rec["device"] == "cpu" and rec["dtype"] == "float32"


def test_records_are_consistent(runs):
    _, ade, sweeps = runs
    for rec in ade + sweeps:
        assert rec["q20_ms"] <= rec["median_ms"] <= rec["q80_ms"]
        assert rec["peak_mem_bytes"] is None or rec["peak_mem_bytes"] >= 0
        assert rec["gbps"] > 0 and rec["tflops"] > 0 and rec["pct_roofline"] > 0
        if rec["provider"] == "eager":
            assert rec["speedup_vs_eager"] == 1.0
        if rec["provider"] == "compile":
            assert rec["speedup_vs_compile"] == 1.0
        if rec["max_rel_err_vs_eager"] is not None:
            assert rec["max_rel_err_vs_eager"] < 1e-4
    # forward outputs were checked against eager's (released included)
    assert all(r["max_rel_err_vs_eager"] is not None for r in sweeps if r["provider"] != "eager")
    assert all(rec["speedup_vs_compile"] is not None for rec in ade)
    assert all(rec["speedup_vs_compile"] is None for rec in sweeps)  # compile was not asked for
    for rec in sweeps:  # the named shapes twice (--repeat 2), the sweeps once
        n = 1 if rec["shape"] in kernel_cases.SWEEPS else 2
        assert rec["repeats"] == len(rec["repeat_medians_ms"]) == n
        assert rec["median_ms"] == statistics.median(rec["repeat_medians_ms"])
        assert rec["unsteady"] == (rec["repeat_spread"] > rows.SPREAD_LIMIT)
        assert rec["over_roofline"] == (rec["pct_roofline"] > rows.ROOFLINE_LIMIT)
    assert {r["B"] for r in sweeps if r["shape"] == "ade-b8"} == {8}


def _expected(op: str, names: set[str]) -> set[str]:
    case = kernel_cases.Case(op, "fwd", (2, 8, 3, 4, 4), torch.float32, torch.device("cpu"))
    return {n for n in names if providers.why_not(providers.PROVIDERS[n], case) is None}


def test_providers_present_as_expected(runs):
    _, ade, sweeps = runs
    got = {r["provider"] for r in ade}
    assert {"eager", "compile", "released"} <= got
    assert ("extension" in got) == HAS_EXTENSION
    assert got == _expected("classifier", set(providers.PROVIDERS))
    assert {r["mode"] for r in ade} == {"fwd_bwd"} and {r["mode"] for r in sweeps} == {"fwd"}
    for op in kernel_cases.OPS:
        for shape in ("ade", "sweep-k", "sweep-n"):
            got = {r["provider"] for r in sweeps if (r["op"], r["shape"]) == (op, shape)}
            assert ("released" in got) == (op == "classifier")
            assert got == _expected(op, {"eager", "extension", "triton", "released"})
    assert not any(r["provider"] == "triton" for r in ade + sweeps)  # interpreted on the CPU
    assert {r["K"] for r in sweeps if r["shape"] == "sweep-k"} == set(kernel_cases.QUICK_SWEEP_K)
    sides = {r["H"] for r in sweeps if r["shape"] == "sweep-n"}
    assert sides == set(kernel_cases.QUICK_SWEEP_SIDES)


def test_markdown_and_plot_are_written(runs):
    out, _, _ = runs
    text = (out / "b.md").read_text()
    assert text.startswith("Measured on CPU ") and "threads, torch " in text and "commit " in text
    assert "Ceilings (the best of several measurements in this run):" in text
    assert "- float32: memory " in text and " TFLOP/s (float32 " in text
    assert "Rows measured 1 or 2 times, interleaved" in text
    assert "**ade-b8** (B=8, C=32, K=150, 16x16), float32:" in text and "| spread |" in text
    assert "**sweep-k**, classifier fwd" in text and "| K | eager |" in text
    assert (out / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--device", "tpu"], ["--device", "cpu", "cuda"]),
        (["--ops", "class_pool,pool"], ["--ops", "'pool'", "dynamic_classify"]),
        (["--mode", "bwd"], ["--mode", "fwd_bwd"]),
        (["--providers", "eager,cudnn"], ["--providers", "'cudnn'", "released"]),
        (["--dtype", "int8"], ["--dtype", "bfloat16"]),
        (["--shapes", "adee"], ["--shapes", "'adee'", "ade-b8", "cityscapes", "sweep-k"]),
        (["--repeat", "0"], ["--repeat", "at least 1"]),
        (["--sweep-repeat", "0"], ["--sweep-repeat", "at least 1"]),
        (["--sweep-providers", "eager,cudnn"], ["--sweep-providers", "'cudnn'"]),
        (["--shapes", "B=2,C=8,K=3,H=4"], ["--shapes", "lacks W"]),
        (["--shapes", "B=2,C=8,K=3,H=4,W=x"], ["--shapes", "not an integer"]),
        (["--shapes", "B=2,C=8,K=3,H=4,W=4,Q=1"], ["--shapes", "'Q'"]),
        (["--plot", "x.png"], ["--plot", "sweep-k"]),
    ],
)
def test_bad_arguments_fail_naming_the_option(args, words, capsys):
    with pytest.raises(SystemExit) as exc:
        run_kernels.parse_args(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


def test_bad_argument_from_the_command_line():
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_kernels.py"), "--ops", "nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "--ops" in done.stderr and "classifier" in done.stderr


def test_shape_specs():
    specs = kernel_cases.split_shape_specs("ade,B=2,C=512,K=150,H=64,W=64,B=1,C=8,K=3,H=4,W=5")
    assert specs == ["ade", "B=2,C=512,K=150,H=64,W=64", "B=1,C=8,K=3,H=4,W=5"]
    explicit = kernel_cases.expand_shape(specs[1], quick=True)  # kept as given
    assert explicit == [(specs[1], (2, 512, 150, 64, 64))]
    ks = [d[2] for _, d in kernel_cases.expand_shape("sweep-k", quick=False)]
    assert ks == [19, 59, 150, 256, 512, 1024]
    ns = [d[3] * d[4] for _, d in kernel_cases.expand_shape("sweep-n", quick=False)]
    assert ns == [32**2, 64**2, 128**2, 256**2]
    # the sweeps vary one dimension of ade: B=2, C=512, K=150, 128x128
    assert {d[:2] + d[3:] for _, d in kernel_cases.expand_shape("sweep-k", quick=False)} == {
        (2, 512, 128, 128)
    }
    assert {d[:3] for _, d in kernel_cases.expand_shape("sweep-n", quick=False)} == {(2, 512, 150)}


@pytest.mark.parametrize(
    "name, full, quick",
    [
        ("ade", (2, 512, 150, 128, 128), (2, 32, 150, 16, 16)),
        ("ade-b8", (8, 512, 150, 128, 128), (8, 32, 150, 16, 16)),
        ("pc59", (4, 512, 59, 120, 120), (4, 32, 59, 16, 16)),
        ("cityscapes", (2, 512, 19, 128, 256), (2, 32, 19, 16, 32)),
    ],
)
def test_named_shapes_are_where_the_released_heads_run(name, full, quick):
    """The stride-4 map of each dataset's crop at the released per-GPU batch
    (ade-b8: one GPU's); --quick keeps B, K and the aspect ratio."""
    assert kernel_cases.expand_shape(name, quick=False) == [(name, full)]
    assert kernel_cases.expand_shape(name, quick=True) == [(name, quick)]


def test_work_model_at_ade():
    """The numbers benchmarks/NOTES.md quotes: ADE B=2, 128x128 as trained
    (bf16 features, float32 projection): x 33.6 MB, forward ~245 MB, and
    the float32 projection weight 158 MB; at B=8 x 134 MB, forward ~505 MB."""

    def case(name, mode):
        dims = kernel_cases.SHAPES[name]
        cpu = torch.device("cpu")
        return kernel_cases.Case("classifier", mode, dims, torch.bfloat16, cpu, name, amp=True)

    fwd, _ = kernel_cases.work(case("ade", "fwd"))
    assert fwd == pytest.approx(244.4e6, rel=1e-3)
    fwd8, flops8 = kernel_cases.work(case("ade-b8", "fwd"))
    assert fwd8 == pytest.approx(504.6e6, rel=1e-3)
    assert flops8 == pytest.approx(4 * 3 * 5.03e9 + 2 * 8 * 150 * 513 * 512, rel=1e-3)
    both, _ = kernel_cases.work(case("ade", "fwd_bwd"))
    assert both == pytest.approx(699.6e6, rel=1e-3)


def test_environment_names_the_machine(runs):
    _, ade, _ = runs
    rec = ade[0]
    assert rec["cpu_model"] and rec["threads"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        assert rec["cpu_features"] == report.cpu_info(cpuinfo.read_text())[1]
    assert rec["cpu_allocator"] and rec["page_faults_per_call"] >= 0


def test_the_commit_is_dirty_for_code_not_for_results(tmp_path, monkeypatch):
    """make bench's later commands run after its earlier ones rewrote the
    committed results: that alone must not mark the commit dirty."""

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "r.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(report, "ROOT", tmp_path)
    head = report.commit()
    assert head and not head.endswith("-dirty")
    (results / "r.md").write_text("new\n")
    assert report.commit() == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert report.commit() == f"{head}-dirty"


def test_notes_hold_the_work_model_table():
    """benchmarks/NOTES.md's roofline table is what kernel_cases.work gives
    at the named shapes (python benchmarks/roofline_table.py prints it)."""
    import roofline_table

    assert roofline_table.table() in (BENCH / "NOTES.md").read_text()
    assert {row[0] for row in roofline_table.rows()} == set(kernel_cases.SHAPES)


def _classifier_inputs(dtype, bias=True):
    gen = torch.Generator().manual_seed(3)
    B, C, K, H, W = 2, 8, 5, 4, 6

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    return (
        rnd(B, C, H, W).requires_grad_(),
        rnd(K, C).requires_grad_(),
        rnd(K).requires_grad_() if bias else None,
        rnd(C * K + K, C, 1, 1).requires_grad_(),
        rnd(C * K + K).requires_grad_() if bias else None,
    )


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_released_formulation_matches_condnet_ops(dtype, bias):
    x, gw, gb, pw, pb = inputs = _classifier_inputs(dtype, bias)
    guide, logits = released.classifier(*inputs)
    g_ref, feats = reference.class_pool(x, gw, gb)
    w, b = reference.project_grouped_conv(feats, pw, pb)
    y_ref = reference.dynamic_classify(x, w, b)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {}
    torch.testing.assert_close(guide, g_ref, **tol)
    torch.testing.assert_close(logits, y_ref, **tol)
    if dtype == torch.float64:  # the gradients agree too
        leaves = [t for t in inputs if t is not None]
        up = [torch.randn_like(guide), torch.randn_like(logits)]
        got = torch.autograd.grad((guide, logits), leaves, up)
        want = torch.autograd.grad((g_ref, y_ref), leaves, up)
        for a, e in zip(got, want, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


MIB = 2**20


def test_cpu_peak_memory_sees_what_the_call_allocates():
    cpu = torch.device("cpu")

    def one():
        return torch.ones(MIB // 4)  # 1 MiB

    def one_then_another():
        a = torch.ones(MIB // 4)
        del a
        return torch.ones(MIB // 4)

    def two_at_once():
        a, b = torch.ones(MIB // 4), torch.ones(MIB // 4)
        return a + b

    big = torch.randn(4 * MIB // 4)

    def only_reads():
        return big.sum()

    assert MIB <= memory.peak_memory(one, cpu) < 2 * MIB
    assert MIB <= memory.peak_memory(one_then_another, cpu) < 2 * MIB  # frees are counted in order
    assert 3 * MIB <= memory.peak_memory(two_at_once, cpu) < 4 * MIB
    assert memory.peak_memory(only_reads, cpu) < MIB  # what existed before is not counted


@pytest.mark.skipif(not HAS_EXTENSION, reason="needs the CPU extension")
def test_cpu_peak_memory_sees_the_extension_outputs():
    import condnet.ops as ops

    x, gw, gb = torch.randn(2, 16, 32, 32), torch.randn(7, 16), torch.randn(7)
    outputs = (2 * 7 * 32 * 32 + 2 * 7 * 16) * 4

    def call():
        with torch.no_grad():
            ops.class_pool(x, gw, gb, backend="extension")

    assert memory.peak_memory(call, torch.device("cpu")) >= outputs


def test_mixed_precision_rows(tmp_path):
    """amp-bfloat16: bf16 features, float32 parameters, under autocast; the
    projection's weight counts 4 bytes an element in the work model."""
    records = run_kernels.main(
        [
            "--quick",
            "--device",
            "cpu",
            "--dtype",
            "amp-bfloat16",
            "--ops",
            "project,classifier",
            "--mode",
            "fwd",
            "--providers",
            "eager,extension",
            "--json",
            str(tmp_path / "amp.json"),
        ]
    )
    assert {r["dtype"] for r in records} == {"amp-bfloat16"}
    assert {r["op"] for r in records} == {"project", "classifier"}
    assert {r["provider"] for r in records} == (
        {"eager", "extension"} if HAS_EXTENSION else {"eager"}
    )
    for rec in records:
        if rec["max_rel_err_vs_eager"] is not None:
            assert rec["max_rel_err_vs_eager"] < run_kernels.TOLERANCE[torch.bfloat16]
    case = kernel_cases.Case("project", "fwd", (2, 8, 3, 4, 4), torch.bfloat16, torch.device("cpu"))
    amp = kernel_cases.Case(**{**case.__dict__, "amp": True})
    weight = (8 * 3 + 3) * 8
    assert kernel_cases.work(amp)[0] - kernel_cases.work(case)[0] == 2 * weight
    inputs = kernel_cases.make_inputs(amp)
    assert inputs["class_feats"].dtype == torch.bfloat16
    assert inputs["class_weight"].dtype == torch.float32
