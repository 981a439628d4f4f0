"""The CAC rows of benchmarks/run_kernels.py: the released formulation that
eager and compile run is the CAC classifier (checked against condnet's
reference in float64, gradients included), the work model gives the numbers
benchmarks/NOTES.md quotes, the rows run in quick mode in float32 and
amp-bfloat16 with complete records, and an extension without CAC kernels (or
with the forward's only) is skipped with the reason, not run. No timing is
asserted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import cac_released  # noqa: E402
import kernel_cases  # noqa: E402
import providers  # noqa: E402
import roofline_table  # noqa: E402
import run_kernels  # noqa: E402

from condnet.ops import extension, reference  # noqa: E402

CPU = torch.device("cpu")
HAS_CAC = (
    providers.why_not(
        providers.PROVIDERS["extension"],
        kernel_cases.Case("cac", "fwd_bwd", (2, 8, 3, 4, 4), torch.float32, CPU),
    )
    is None
)


def _inputs(bias: bool, gen: torch.Generator):
    B, C, K, H, W = 2, 8, 5, 4, 6

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    return (
        rnd(B, C, H, W),
        rnd(K, C),
        rnd(K) if bias else None,
        rnd(C // 2, 2 * C),
        rnd(C, C // 2),
        rnd(C) if bias else None,
    )


@pytest.mark.parametrize("bias", [True, False])
def test_released_formulation_is_the_cac_classifier(bias):
    """Forward and every gradient equal condnet's reference with the
    released division (eps=0) in float64."""
    x, w, b, wi, wo, bo = inputs = _inputs(bias, torch.Generator().manual_seed(5))
    logits, static = cac_released.classifier(*inputs)
    want_logits, want_static = reference.context_aware_classifier(
        x, w, b, w, wi, wo, bo, scale=15.0, eps=0.0
    )
    torch.testing.assert_close(static, want_static, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, want_logits, rtol=1e-10, atol=1e-10)
    leaves = [t for t in inputs if t is not None]
    up = [torch.randn_like(logits), torch.randn_like(static)]
    got = torch.autograd.grad((logits, static), leaves, up)
    want = torch.autograd.grad((want_logits, want_static), leaves, up)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)


def test_released_formulation_takes_conv_seg_weight_shape():
    x, w, b, wi, wo, bo = _inputs(True, torch.Generator().manual_seed(6))
    flat = cac_released.classifier(x, w, b, wi, wo, bo)
    conv = cac_released.classifier(x, w[:, :, None, None], b, wi, wo, bo)
    for a, e in zip(conv, flat, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_work_model_at_ade():
    """CAC at ade in float32: x 67.1 MB, g and y 19.7 MB each, parameters
    (K*C + K + Hd*2C + C*Hd + C) * 4 = 1.88 MB; the forward reads x twice and
    writes g and y, the backward reads x twice, writes dx, reads g, dg and dy
    twice; three products forward, six backward, and the generator."""
    B, C, K, H, W = kernel_cases.SHAPES["ade"]
    N, hidden = H * W, C // 2
    x, g = B * C * N * 4, B * K * N * 4
    params = (K * C + K + hidden * 2 * C + C * hidden + C) * 4
    product, gen = 2.0 * B * K * C * N, 2.0 * B * K * (2 * C * hidden + hidden * C)

    def work(mode, precision="float32"):
        dtype, amp = kernel_cases.precision(precision)
        dims = kernel_cases.SHAPES["ade"]
        return kernel_cases.work(kernel_cases.Case("cac", mode, dims, dtype, CPU, "ade", amp=amp))

    assert work("fwd") == (2 * x + 2 * g + params, 3 * product + gen)
    assert work("fwd_bwd") == (5 * x + 6 * g + 3 * params, 9 * product + 3 * gen)
    assert work("fwd")[0] == pytest.approx(175.4e6, rel=1e-3)
    assert work("fwd_bwd")[1] == pytest.approx(46.0e9, rel=1e-3)
    # amp-bfloat16: features in 2 bytes, parameters still 4
    assert work("fwd", "amp-bfloat16")[0] == (2 * x + 2 * g) // 2 + params


def test_notes_hold_the_cac_work_model_table():
    assert roofline_table.table("cac") in (BENCH / "NOTES.md").read_text()
    with pytest.raises(ValueError, match="op must be one of classifier, cac"):
        roofline_table.rows("class_pool")


def test_extension_without_cac_kernels_is_skipped_with_the_reason(monkeypatch):
    case = kernel_cases.Case("cac", "fwd_bwd", (2, 8, 3, 4, 4), torch.float32, CPU)
    fwd = kernel_cases.Case(**{**case.__dict__, "mode": "fwd"})
    ext = providers.PROVIDERS["extension"]
    monkeypatch.setattr(extension, "has_kernel", lambda op, device: False)
    assert "no cpu kernel for context_aware_classifier" in providers.why_not(ext, case)
    # the forward's kernels alone: forward rows run, forward+backward rows do not
    monkeypatch.setattr(extension, "has_kernel", lambda op, device: True)
    monkeypatch.setattr(providers, "_has_backward_kernel", lambda op, device: False)
    assert providers.why_not(ext, fwd) is None
    assert "context_pool_backward (the backward)" in providers.why_not(ext, case)
    assert providers.why_not(providers.PROVIDERS["released"], case) == ("covers only classifier")


def test_cac_rows_run_in_both_precisions(tmp_path, capsys):
    """Eager, compile and (when built) the extension, forward and
    forward+backward, float32 and amp-bfloat16: complete records, outputs
    as eager's, the amp parameters float32."""
    records = run_kernels.main(
        [
            "--quick",
            "--device",
            "cpu",
            "--dtype",
            "float32,amp-bfloat16",
            "--ops",
            "cac",
            "--providers",
            "eager,compile,extension,released",
            "--markdown",
            str(tmp_path / "cac.md"),
        ]
    )
    err = capsys.readouterr().err
    assert "# skipping released: covers only classifier" in err
    if not HAS_CAC:
        assert "# skipping extension: no cpu kernel for" in err
    providers_run = {"eager", "compile", "extension"} if HAS_CAC else {"eager", "compile"}
    for precision in ("float32", "amp-bfloat16"):
        for mode in kernel_cases.MODES:
            group = [r for r in records if (r["dtype"], r["mode"]) == (precision, mode)]
            assert {r["provider"] for r in group} == providers_run
            for rec in group:
                assert rec["op"] == "cac" and rec["shape"] == "ade"
                assert rec["speedup_vs_eager"] > 0 and rec["speedup_vs_compile"] > 0
                assert rec["pct_roofline"] > 0 and rec["peak_mem_bytes"] > 0
                if mode == "fwd" and rec["provider"] != "eager":
                    dtype = torch.bfloat16 if precision.startswith("amp") else torch.float32
                    assert rec["max_rel_err_vs_eager"] < run_kernels.TOLERANCE[dtype]
    assert "| cac | fwd_bwd | compile |" in (tmp_path / "cac.md").read_text()
    amp = kernel_cases.Case("cac", "fwd", (2, 8, 3, 4, 4), torch.bfloat16, CPU, amp=True)
    inputs = kernel_cases.make_inputs(amp)
    assert inputs["x"].dtype == torch.bfloat16
    assert {inputs[n].dtype for n in kernel_cases.INPUTS["cac"][1:]} == {torch.float32}


@pytest.mark.skipif(not HAS_CAC, reason="needs the CPU extension's CAC kernels")
def test_fused_and_released_rows_return_the_same_outputs():
    case = kernel_cases.Case("cac", "fwd", (2, 16, 7, 5, 6), torch.float64, CPU)
    inputs = kernel_cases.make_inputs(case)
    fused = providers.build(providers.PROVIDERS["extension"], case, inputs)()
    eager = providers.build(providers.PROVIDERS["eager"], case, inputs)()
    for a, e in zip(fused, eager, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-9)
