"""cosine_classify in Triton: CAC's cosine logits and their backward.

With v (B, K, C) the scaled, normalised per-image classifiers, |x_n| the
per-pixel norm of the features and r_n = max(|x_n|, eps):

    y[b, k, n] = <v[b, k], x[b, :, n]> / r_n
    dv[b, k]   = sum_n dy[b, k, n] / r_n x[b, :, n]
    dx[b, :, n] = sum_k v[b, k] dy[b, k, n] / r_n
                 - [|x_n| >= eps] x[b, :, n] (sum_k dy[b, k, n] y[b, k, n]) / (r_n |x_n|)

(the indicator is clamp_min's gradient mask; with eps = 0 a zero pixel
divides 0 by 0, as the released CAC code does).

Three batched products, one kernel each, the batch on the last grid axis,
laid out as :mod:`.dynamic_classify`'s:

- forward: (K x C) @ (C x N); each program also sums the squares of the x
  tiles it loads for the product, so the norm costs no second pass over x.
  Every class tile computes it; the first writes it out.
- dx: (C x K) @ (K x N) with dy's columns scaled by 1 / r_n before the
  product; the same loop over the classes sums dy * y per pixel.
- dv: (K x N) @ (N x C) with dy's columns scaled the same way, reduced over
  the pixels of one image inside one program (no atomics, deterministic).

eps reaches the kernels as a one-element tensor in the accumulator's dtype:
a Python float argument would be typed float32, and 1e-12 in float32 is not
float64's 1e-12.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import Blocks, accumulator_dtype, dot_precision, dynamic_classify_blocks
from .launch import interpreted, wrap_triton
from .tiles import dot, load_tile, store_tile


@triton.jit
def _cosine_classify_fwd_kernel(
    x_ptr,
    w_ptr,
    eps_ptr,
    y_ptr,
    xn_ptr,
    K,
    C,
    N,
    sx_b,
    sx_c,
    sx_n,
    sw_b,
    sw_k,
    sw_c,
    sy_b,
    sy_k,
    sy_n,
    sxn_b,
    sxn_n,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    pid_k = tl.program_id(0)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.program_id(2).to(tl.int64)
    k_ok = offs_k < K
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_K, BLOCK_N], ACC)
    squares = tl.zeros([BLOCK_N], ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        w = load_tile(w_ptr + b * sw_b, offs_k, offs_c, sw_k, sw_c, k_ok, c_ok).to(XT)
        xt = load_tile(x_ptr + b * sx_b, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
        acc = dot(w, xt, acc, PRECISION, ACC)
        x_acc = xt.to(ACC)
        squares += tl.sum(x_acc * x_acc, axis=0)
    norm = tl.sqrt(squares)
    eps = tl.load(eps_ptr)
    acc = acc / tl.maximum(norm, eps)[None, :]
    store_tile(y_ptr + b * sy_b, acc, offs_k, offs_n, sy_k, sy_n, k_ok, n_ok)
    xn_ptrs = xn_ptr + b * sxn_b + offs_n * sxn_n
    tl.store(xn_ptrs, norm.to(xn_ptr.dtype.element_ty), mask=n_ok & (pid_k == 0))


@triton.jit
def _cosine_classify_dx_kernel(
    dy_ptr,
    x_ptr,
    w_ptr,
    y_ptr,
    xn_ptr,
    eps_ptr,
    dx_ptr,
    K,
    C,
    N,
    sdy_b,
    sdy_k,
    sdy_n,
    sx_b,
    sx_c,
    sx_n,
    sw_b,
    sw_k,
    sw_c,
    sy_b,
    sy_k,
    sy_n,
    sxn_b,
    sxn_n,
    sdx_b,
    sdx_c,
    sdx_n,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.program_id(2).to(tl.int64)
    c_ok = offs_c < C
    n_ok = offs_n < N
    eps = tl.load(eps_ptr)
    norm = tl.load(xn_ptr + b * sxn_b + offs_n * sxn_n, mask=n_ok, other=1.0).to(ACC)
    inv_r = 1.0 / tl.maximum(norm, eps)
    acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    dot_y = tl.zeros([BLOCK_N], ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        wt = load_tile(w_ptr + b * sw_b, offs_c, offs_k, sw_c, sw_k, c_ok, k_ok).to(XT)
        dy = load_tile(dy_ptr + b * sdy_b, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok).to(ACC)
        y = load_tile(y_ptr + b * sy_b, offs_k, offs_n, sy_k, sy_n, k_ok, n_ok).to(ACC)
        dot_y += tl.sum(dy * y, axis=0)
        acc = dot(wt, (dy * inv_r[None, :]).to(XT), acc, PRECISION, ACC)
    # Where the clamp holds (|x_n| < eps) the norm has no gradient; elsewhere
    # r = |x_n|, so 1 / (r |x_n|) = 1 / r^2 (no 0 / 0 in the unused branch).
    coef = tl.where(norm >= eps, dot_y * inv_r * inv_r, 0.0)
    xt = load_tile(x_ptr + b * sx_b, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok).to(ACC)
    acc -= xt * coef[None, :]
    store_tile(dx_ptr + b * sdx_b, acc, offs_c, offs_n, sdx_c, sdx_n, c_ok, n_ok)


@triton.jit
def _cosine_classify_dw_kernel(
    dy_ptr,
    x_ptr,
    xn_ptr,
    eps_ptr,
    dw_ptr,
    K,
    C,
    N,
    sdy_b,
    sdy_k,
    sdy_n,
    sx_b,
    sx_c,
    sx_n,
    sxn_b,
    sxn_n,
    sdw_b,
    sdw_k,
    sdw_c,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    k_ok = offs_k < K
    c_ok = offs_c < C
    eps = tl.load(eps_ptr)
    acc = tl.zeros([BLOCK_K, BLOCK_C], ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        norm = tl.load(xn_ptr + b * sxn_b + offs_n * sxn_n, mask=n_ok, other=1.0).to(ACC)
        dy = load_tile(dy_ptr + b * sdy_b, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok).to(ACC)
        dy = (dy / tl.maximum(norm, eps)[None, :]).to(XT)
        xt = load_tile(x_ptr + b * sx_b, offs_n, offs_c, sx_n, sx_c, n_ok, c_ok)
        acc = dot(dy, xt, acc, PRECISION, ACC)
    store_tile(dw_ptr + b * sdw_b, acc, offs_k, offs_c, sdw_k, sdw_c, k_ok, c_ok)


def norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The per-pixel norms' dtype: float32 for 16-bit features, else theirs."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def eps_tensor(eps: float, x: torch.Tensor) -> torch.Tensor:
    """eps as the kernels read it: one element in x's accumulator dtype."""
    return torch.full((1,), eps, dtype=accumulator_dtype(x.dtype), device=x.device)


def _common(x: torch.Tensor, K: int, C: int, N: int, kernel) -> tuple[dict, Blocks]:
    blocks = dynamic_classify_blocks(K, C, N, x.dtype, interpreted(kernel))
    options = dict(
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    return options, blocks


def cosine_classify_forward(
    x: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the forward kernel; returns ``(logits, x_norm)``: (B, K, H, W)
    in x's dtype and the unclamped norms (B, H, W)."""
    B, C, H, W = x.shape
    K = weight.shape[1]
    N = H * W
    y = x.new_empty(B, K, H, W)
    x_norm = x.new_empty(B, H, W, dtype=norm_dtype(x.dtype))
    if B == 0:
        return y, x_norm
    xf, yf, xnf = x.reshape(B, C, N), y.view(B, K, N), x_norm.view(B, N)
    options, blocks = _common(x, K, C, N, _cosine_classify_fwd_kernel)
    grid = (triton.cdiv(K, blocks.k), triton.cdiv(N, blocks.n), B)
    wrap_triton(_cosine_classify_fwd_kernel)[grid](
        xf,
        weight,
        eps_tensor(eps, x),
        yf,
        xnf,
        K,
        C,
        N,
        *xf.stride(),
        *weight.stride(),
        *yf.stride(),
        *xnf.stride(),
        **options,
    )
    return y, x_norm


def cosine_classify_backward(
    grad_logits: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    logits: torch.Tensor,
    x_norm: torch.Tensor,
    eps: float,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dweight)``, None where ``output_mask`` says it is not needed."""
    need_dx, need_dw = output_mask
    B, C, H, W = x.shape
    K = weight.shape[1]
    N = H * W
    dx = x.new_empty(B, C, H, W) if need_dx else None
    dw = weight.new_empty(B, K, C) if need_dw else None
    if B == 0:
        return dx, dw
    dyf, xf, xnf = grad_logits.reshape(B, K, N), x.reshape(B, C, N), x_norm.reshape(B, N)
    eps_t = eps_tensor(eps, x)
    options, blocks = _common(x, K, C, N, _cosine_classify_dx_kernel)
    if dx is not None:
        yf, dxf = logits.reshape(B, K, N), dx.view(B, C, N)
        grid = (triton.cdiv(C, blocks.c), triton.cdiv(N, blocks.n), B)
        wrap_triton(_cosine_classify_dx_kernel)[grid](
            dyf,
            xf,
            weight,
            yf,
            xnf,
            eps_t,
            dxf,
            K,
            C,
            N,
            *dyf.stride(),
            *xf.stride(),
            *weight.stride(),
            *yf.stride(),
            *xnf.stride(),
            *dxf.stride(),
            **options,
        )
    if dw is not None:
        grid = (triton.cdiv(K, blocks.k), triton.cdiv(C, blocks.c), B)
        wrap_triton(_cosine_classify_dw_kernel)[grid](
            dyf,
            xf,
            xnf,
            eps_t,
            dw,
            K,
            C,
            N,
            *dyf.stride(),
            *xf.stride(),
            *xnf.stride(),
            *dw.stride(),
            **options,
        )
    return dx, dw
