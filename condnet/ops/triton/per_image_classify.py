"""The per-image classifier products in Triton, shared by dynamic_classify
(CondNet's linear classifier) and cosine_classify (CAC's cosine one).

With w (B, K, C) one classifier per image, and for the cosine classifier
|x_n| the per-pixel norm of the features and r_n = max(|x_n|, eps)
(1 for the linear one):

    y[b]    = w[b] x[b] / r + beta[b]        (K x C) @ (C x N)
    dx[b]   = w[b]^T (dy[b] / r)  (- the norm's term, cosine)   (C x K) @ (K x N)
    dw[b]   = (dy[b] / r) x[b]^T             (K x N) @ (N x C)
    dbeta[b] = sum_n dy[b]                   (linear, with a bias)

The cosine forward sums the squares of the x tiles it loads for the
product, so the norm costs no second pass over x; every class tile computes
it and the first writes it out. Its dx also sums dy * y per pixel in the
loop over the classes, for the norm's term
``- [|x_n| >= eps] x_n (sum_k dy y) / (r_n |x_n|)``.

Three batched products, one kernel each, the batch on the last grid axis.
The forward and dx grids put the output-row tiles on the first (fastest)
axis, so the programs that share a tile of x or dy run side by side and
read it from L2. dw reduces over the pixels of one image inside one program,
so it needs neither atomics nor a second pass, and is deterministic.

eps reaches the kernels as a one-element tensor in the accumulator's dtype:
a Python float argument would be typed float32, and 1e-12 in float32 is not
float64's 1e-12.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from .config import accumulator_dtype, dot_precision, dynamic_classify_blocks
from .launch import interpreted
from .tiles import dot, load_tile, store_tile


@triton.jit
def _classify_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, eps_ptr, y_ptr, xn_ptr,
    K, C, N,
    sx_b, sx_c, sx_n,
    sw_b, sw_k, sw_c,
    sbias_b, sbias_k,
    sy_b, sy_k, sy_n,
    sxn_b, sxn_n,
    HAS_BIAS: tl.constexpr,
    COSINE: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
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
        if COSINE:
            x_acc = xt.to(ACC)
            squares += tl.sum(x_acc * x_acc, axis=0)
    if COSINE:
        norm = tl.sqrt(squares)
        eps = tl.load(eps_ptr)
        acc = acc / tl.maximum(norm, eps)[None, :]
        xn_ptrs = xn_ptr + b * sxn_b + offs_n * sxn_n
        tl.store(xn_ptrs, norm.to(xn_ptr.dtype.element_ty), mask=n_ok & (pid_k == 0))
    if HAS_BIAS:
        bias = tl.load(bias_ptr + b * sbias_b + offs_k * sbias_k, mask=k_ok, other=0.0)
        acc += bias.to(ACC)[:, None]
    store_tile(y_ptr + b * sy_b, acc, offs_k, offs_n, sy_k, sy_n, k_ok, n_ok)


@triton.jit
def _classify_dx_kernel(
    dy_ptr, x_ptr, w_ptr, y_ptr, xn_ptr, eps_ptr, dx_ptr,
    K, C, N,
    sdy_b, sdy_k, sdy_n,
    sx_b, sx_c, sx_n,
    sw_b, sw_k, sw_c,
    sy_b, sy_k, sy_n,
    sxn_b, sxn_n,
    sdx_b, sdx_c, sdx_n,
    COSINE: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.program_id(2).to(tl.int64)
    c_ok = offs_c < C
    n_ok = offs_n < N
    if COSINE:
        eps = tl.load(eps_ptr)
        norm = tl.load(xn_ptr + b * sxn_b + offs_n * sxn_n, mask=n_ok, other=1.0).to(ACC)
        inv_r = 1.0 / tl.maximum(norm, eps)
        dot_y = tl.zeros([BLOCK_N], ACC)
    acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        wt = load_tile(w_ptr + b * sw_b, offs_c, offs_k, sw_c, sw_k, c_ok, k_ok).to(XT)
        dy = load_tile(dy_ptr + b * sdy_b, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok)
        if COSINE:
            dy = dy.to(ACC)
            y = load_tile(y_ptr + b * sy_b, offs_k, offs_n, sy_k, sy_n, k_ok, n_ok).to(ACC)
            dot_y += tl.sum(dy * y, axis=0)
            dy = dy * inv_r[None, :]
        acc = dot(wt, dy.to(XT), acc, PRECISION, ACC)
    if COSINE:
        # Where the clamp holds (|x_n| < eps) the norm has no gradient; elsewhere
        # r = |x_n|, so 1 / (r |x_n|) = 1 / r^2 (no 0 / 0 in the unused branch).
        coef = tl.where(norm >= eps, dot_y * inv_r * inv_r, 0.0)
        xt = load_tile(x_ptr + b * sx_b, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok).to(ACC)
        acc -= xt * coef[None, :]
    store_tile(dx_ptr + b * sdx_b, acc, offs_c, offs_n, sdx_c, sdx_n, c_ok, n_ok)


@triton.jit
def _classify_dw_kernel(
    dy_ptr, x_ptr, xn_ptr, eps_ptr, dw_ptr, db_ptr,
    K, C, N,
    sdy_b, sdy_k, sdy_n,
    sx_b, sx_c, sx_n,
    sxn_b, sxn_n,
    sdw_b, sdw_k, sdw_c,
    sdb_b, sdb_k,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    COSINE: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    pid_c = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    k_ok = offs_k < K
    c_ok = offs_c < C
    if COSINE:
        eps = tl.load(eps_ptr)
    acc = tl.zeros([BLOCK_K, BLOCK_C], ACC)
    acc_b = tl.zeros([BLOCK_K], ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        dy = load_tile(dy_ptr + b * sdy_b, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok)
        if NEED_DB:
            acc_b += tl.sum(dy.to(ACC), axis=1)
        if NEED_DW:
            if COSINE:
                norm = tl.load(xn_ptr + b * sxn_b + offs_n * sxn_n, mask=n_ok, other=1.0)
                dy = dy.to(ACC) / tl.maximum(norm.to(ACC), eps)[None, :]
            xt = load_tile(x_ptr + b * sx_b, offs_n, offs_c, sx_n, sx_c, n_ok, c_ok)
            acc = dot(dy.to(XT), xt, acc, PRECISION, ACC)
    if NEED_DW:
        store_tile(dw_ptr + b * sdw_b, acc, offs_k, offs_c, sdw_k, sdw_c, k_ok, c_ok)
    if NEED_DB:
        # Every channel tile summed the same dy; the first one writes dbeta.
        tl.store(
            db_ptr + b * sdb_b + offs_k * sdb_k,
            acc_b.to(db_ptr.dtype.element_ty),
            mask=k_ok & (pid_c == 0),
        )


def eps_tensor(eps: float, x: torch.Tensor) -> torch.Tensor:
    """eps as the kernels read it: one element in x's accumulator dtype."""
    return torch.full((1,), eps, dtype=accumulator_dtype(x.dtype), device=x.device)


def _options(x: torch.Tensor, K: int, C: int, N: int, kernel) -> tuple[dict, tuple[int, ...]]:
    """The launch options and the (K, C, N) tile sizes."""
    blocks = dynamic_classify_blocks(K, C, N, x.dtype, interpreted(kernel))
    options = dict(
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    return options, (blocks.k, blocks.c, blocks.n)


def classify_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    x_norm: torch.Tensor | None,
    eps: float,
    wrap_triton: Callable,
) -> torch.Tensor:
    """Launches the forward kernel; returns the (B, K, H, W) logits. With
    ``x_norm`` (B, H, W) the classifier is the cosine one and the norms are
    written there. The op's module passes its ``wrap_triton`` (the launch)."""
    B, C, H, W = x.shape
    K = weight.shape[1]
    N = H * W
    y = x.new_empty(B, K, H, W)
    if B == 0:
        return y
    xf, yf = x.reshape(B, C, N), y.view(B, K, N)
    xnf = x_norm.view(B, N) if x_norm is not None else None
    options, (bk, _, bn) = _options(x, K, C, N, _classify_fwd_kernel)
    # Never read without HAS_BIAS or COSINE; any tensor serves as the pointer.
    bias_t = bias if bias is not None else weight[:, :, 0]
    grid = (triton.cdiv(K, bk), triton.cdiv(N, bn), B)
    wrap_triton(_classify_fwd_kernel)[grid](
        xf,
        weight,
        bias_t,
        eps_tensor(eps, x),
        yf,
        xnf if xnf is not None else yf,
        K,
        C,
        N,
        *xf.stride(),
        *weight.stride(),
        *bias_t.stride(),
        *yf.stride(),
        *(xnf.stride() if xnf is not None else (0, 0)),
        HAS_BIAS=bias is not None,
        COSINE=xnf is not None,
        **options,
    )
    return y


def classify_backward(
    grad_logits: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    cosine: tuple[torch.Tensor, torch.Tensor, float] | None,
    output_mask: list[bool],
    wrap_triton: Callable,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dw, dbeta)``, None where ``output_mask`` says it is not needed;
    ``cosine`` is the cosine classifier's ``(logits, x_norm, eps)``, None for
    the linear one. The op's module passes its ``wrap_triton`` (the launch)."""
    need_dx, need_dw, need_db = output_mask
    B, C, H, W = x.shape
    K = weight.shape[1]
    N = H * W
    dx = x.new_empty(B, C, H, W) if need_dx else None
    dw = weight.new_empty(B, K, C) if need_dw else None
    db = weight.new_empty(B, K) if need_db else None
    if B == 0:
        return dx, dw, db
    dyf, xf = grad_logits.reshape(B, K, N), x.reshape(B, C, N)
    yf = xnf = None
    eps = 0.0
    if cosine is not None:
        yf, xnf, eps = cosine[0].reshape(B, K, N), cosine[1].reshape(B, N), cosine[2]
    eps_t = eps_tensor(eps, x)
    options, (bk, bc, bn) = _options(x, K, C, N, _classify_dx_kernel)
    if dx is not None:
        dxf = dx.view(B, C, N)
        grid = (triton.cdiv(C, bc), triton.cdiv(N, bn), B)
        wrap_triton(_classify_dx_kernel)[grid](
            dyf,
            xf,
            weight,
            yf if yf is not None else dyf,
            xnf if xnf is not None else dyf,
            eps_t,
            dxf,
            K,
            C,
            N,
            *dyf.stride(),
            *xf.stride(),
            *weight.stride(),
            *(yf.stride() if yf is not None else (0, 0, 0)),
            *(xnf.stride() if xnf is not None else (0, 0)),
            *dxf.stride(),
            COSINE=cosine is not None,
            **options,
        )
    if need_dw or need_db:
        # dbeta alone needs one channel tile, not all of them.
        grid = (triton.cdiv(K, bk), triton.cdiv(C, bc) if need_dw else 1, B)
        dw_t = dw if dw is not None else weight
        db_t = db if db is not None else weight[:, :, 0]
        wrap_triton(_classify_dw_kernel)[grid](
            dyf,
            xf,
            xnf if xnf is not None else dyf,
            eps_t,
            dw_t,
            db_t,
            K,
            C,
            N,
            *dyf.stride(),
            *xf.stride(),
            *(xnf.stride() if xnf is not None else (0, 0)),
            *dw_t.stride(),
            *db_t.stride(),
            NEED_DW=need_dw,
            NEED_DB=need_db,
            COSINE=cosine is not None,
            **options,
        )
    return dx, dw, db
