"""A small, odd-shaped workout of the CUDA kernels, for compute-sanitizer.

    compute-sanitizer --tool memcheck python3 benchmarks/sanitize_case.py

Runs class_pool and dynamic_classify with backend="extension" on CUDA at
two odd shapes (one tile of everything; two class and channel tiles with
several pixel splits) in float32, bfloat16 and float64: forward and
backward through autograd with every upstream gradient and with each absent in
turn, then the backward ops directly under every output_mask. Then the whole
fused classifier (conditional_classifier, both layouts, also with float32
projection weights beside bfloat16 features) and the projection's backward
under every output_mask. Results are compared with condnet.ops.reference
computed on the CPU in float64 (so the sanitizer sees few kernels besides
condnet's). Prints "ok"; exits 1 on a mismatch, 2 when there is no GPU or no
CUDA kernel.
"""

from __future__ import annotations

import itertools
import sys

import torch

import condnet.ops as ops
from condnet.ops import extension, reference

SHAPES = [(2, 40, 7, 7, 9), (1, 70, 70, 24, 24)]  # B, C, K, H, W
# Largest |error| as a fraction of the largest |truth|. Loose on purpose: this
# is for catching garbage (out-of-bounds reads, uninitialised or racing
# results), the gpu tests check precision.
TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 8e-2, torch.float64: 1e-8}
NAMES = ("x", "guide_weight", "guide_bias", "weight", "bias")
UPSTREAM = ("dg", "df", "dy")

failures: list[str] = []


def check(label: str, got: torch.Tensor | None, want: torch.Tensor | None, dtype) -> None:
    if got is None or want is None:
        if (got is None) != (want is None):
            failures.append(f"{label}: got {type(got).__name__}, want {type(want).__name__}")
        return
    got, want = got.detach().cpu().double(), want.detach().double()
    if got.shape != want.shape:
        failures.append(f"{label}: shape {tuple(got.shape)}, want {tuple(want.shape)}")
        return
    scale = want.abs().max().item() if want.numel() else 0.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    if not err <= TOLERANCE[dtype] * max(scale, 1e-30):  # also catches NaN
        failures.append(f"{label}: max error {err:.3g} against max |truth| {scale:.3g}")


def make(dtype, shape) -> dict[str, torch.Tensor]:
    """Inputs and upstream gradients rounded to dtype, on the CPU."""
    B, C, K, H, W = shape
    gen = torch.Generator().manual_seed(0)
    shapes = {
        "x": ((B, C, H, W), 1.0),
        "guide_weight": ((K, C), 2 * C**-0.5),
        "guide_bias": ((K,), 1.0),
        "weight": ((B, K, C), C**-0.5),
        "bias": ((B, K), 1.0),
        "dg": ((B, K, H, W), 1.0),
        "df": ((B, K, C), 1.0),
        "dy": ((B, K, H, W), 1.0),
    }
    return {
        name: (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
        for name, (shape, scale) in shapes.items()
    }


def forward_backward(t: dict, absent: tuple[str, ...], device: str, exact: bool) -> dict:
    """Outputs and gradients of both ops, the upstream gradients in ``absent`` left out."""
    copy = {n: t[n].to(device, torch.float64 if exact else None, copy=True) for n in t}
    leaves = {n: copy[n].requires_grad_(True) for n in NAMES}
    ups = {n: None if n in absent else copy[n] for n in UPSTREAM}
    kw = {} if exact else {"backend": "extension"}
    pool = reference.class_pool if exact else ops.class_pool
    classify = reference.dynamic_classify if exact else ops.dynamic_classify
    g, f = pool(leaves["x"], leaves["guide_weight"], leaves["guide_bias"], **kw)
    y = classify(leaves["x"], leaves["weight"], leaves["bias"], **kw)
    pairs = [(o, ups[n]) for o, n in ((g, "dg"), (f, "df"), (y, "dy")) if ups[n] is not None]
    torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
    return {"g": g, "f": f, "y": y, **{f"d_{n}": leaves[n].grad for n in NAMES}}


def backward_ops(t: dict, dtype) -> None:
    """The backward ops called directly, against the reference's gradients."""
    cuda = {n: v.cuda() for n, v in t.items()}
    exact = {n: v.double().requires_grad_(n in NAMES) for n, v in t.items()}
    g, f = reference.class_pool(exact["x"], exact["guide_weight"], exact["guide_bias"])
    y = reference.dynamic_classify(exact["x"], exact["weight"], None)
    g_cuda, _ = torch.ops.condnet.class_pool(cuda["x"], cuda["guide_weight"], cuda["guide_bias"])
    pool_in = [exact["x"], exact["guide_weight"], exact["guide_bias"]]
    for dg, df in (("dg", "df"), (None, "df"), ("dg", None), (None, None)):
        zero_g, zero_f = torch.zeros_like(g), torch.zeros_like(f)
        ups = (exact[dg] if dg else zero_g, exact[df] if df else zero_f)
        want = torch.autograd.grad((g, f), pool_in, ups, retain_graph=True)
        for mask in itertools.product([True, False], repeat=3):
            got = torch.ops.condnet.class_pool_backward(
                cuda[dg] if dg else None,
                cuda[df] if df else None,
                cuda["x"],
                cuda["guide_weight"],
                g_cuda,
                list(mask),
            )
            for i, (need, a, b) in enumerate(zip(mask, got, want, strict=True)):
                check(
                    f"{dtype} class_pool_backward({dg}, {df}) mask={mask} [{i}]",
                    a,
                    b if need else None,
                    dtype,
                )
    want = torch.autograd.grad(y, (exact["x"], exact["weight"]), exact["dy"])
    dbeta = exact["dy"].sum(dim=(2, 3))
    for mask in itertools.product([True, False], repeat=3):
        got = torch.ops.condnet.dynamic_classify_backward(
            cuda["dy"], cuda["x"], cuda["weight"], list(mask)
        )
        for i, (need, a, b) in enumerate(zip(mask, got, (*want, dbeta), strict=True)):
            check(
                f"{dtype} dynamic_classify_backward mask={mask} [{i}]",
                a,
                b if need else None,
                dtype,
            )


def classifier(t: dict, dtype, layout: str, param_dtype) -> None:
    """The fused classifier forward and backward, and project_backward's masks."""
    B, C, H, W = t["x"].shape
    K = t["guide_weight"].shape[0]
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(K, C + 1, C, generator=gen, dtype=torch.float64) * C**-0.5
    a = torch.randn(K, C + 1, generator=gen, dtype=torch.float64)
    if layout == "grouped_conv":
        A, a = A.reshape(K * (C + 1), C, 1, 1), a.reshape(-1)
    params = [t["guide_weight"], t["guide_bias"], A, a]
    params = [p.to(param_dtype) for p in params]
    results = []
    for device, exact in (("cuda", False), ("cpu", True)):
        cast = torch.float64 if exact else None
        x = t["x"].to(device, cast).requires_grad_(True)
        leaves = [p.to(device, cast).requires_grad_(True) for p in params]
        fn = reference.conditional_classifier if exact else ops.conditional_classifier
        if exact:
            y, g = fn(x, *leaves, layout)
        else:
            gw, gb = (p.to(dtype) for p in leaves[:2])  # as autocast casts the guide
            y, g = fn(x, gw, gb, *leaves[2:], layout=layout, backend="extension")
        ups = [t["dy"].to(device, cast), t["dg"].to(device, cast)]
        grads = torch.autograd.grad((y, g), [x, *leaves], ups)
        results.append({"y": y, "g": g, **{f"d{i}": v for i, v in enumerate(grads)}})
    label = f"{dtype} classifier {layout} params {param_dtype}"
    for key in results[1]:
        check(f"{label}: {key}", results[0][key], results[1][key], dtype)
    # project_backward alone, under every mask
    f = torch.randn(B, K, C, generator=gen, dtype=torch.float64).to(dtype)
    dtheta = torch.randn(B, K, C + 1, generator=gen, dtype=torch.float64).to(dtype)
    A3 = params[2].reshape(K, C + 1, C)
    exact = [v.double().requires_grad_(True) for v in (f, A3)]
    theta = reference.project(exact[0], exact[1], torch.zeros(K, C + 1, dtype=torch.float64))
    want = (*torch.autograd.grad(theta, exact, dtheta.double()), dtheta.double().sum(0))
    for mask in itertools.product([True, False], repeat=3):
        got = torch.ops.condnet.project_backward(dtheta.cuda(), f.cuda(), A3.cuda(), list(mask))
        for i, (need, a, b) in enumerate(zip(mask, got, want, strict=True)):
            check(f"{label} project_backward mask={mask} [{i}]", a, b if need else None, dtype)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU", file=sys.stderr)
        return 2
    if not extension.has_kernel("class_pool", "cuda"):
        print(extension.missing_kernel_message("class_pool", "cuda"), file=sys.stderr)
        return 2
    for dtype, shape in itertools.product(TOLERANCE, SHAPES):
        t = make(dtype, shape)
        for absent in ((), ("dg",), ("df",), ("dy",), ("dg", "df")):
            got = forward_backward(t, absent, "cuda", exact=False)
            want = forward_backward(t, absent, "cpu", exact=True)
            for key in want:
                check(
                    f"{dtype} {shape} without {absent or 'nothing'}: {key}",
                    got[key],
                    want[key],
                    dtype,
                )
        backward_ops(t, dtype)
        for layout in ("grouped_conv", "per_class"):
            classifier(t, dtype, layout, dtype)
        if dtype == torch.bfloat16:  # float32 master weights, as autocast training has them
            classifier(t, dtype, "grouped_conv", torch.float32)
        torch.cuda.synchronize()
    for line in failures:
        print("MISMATCH", line)
    if failures:
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
