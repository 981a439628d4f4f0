"""dynamic_classify in Triton: the per-image 1x1 classifier and its backward.

    y[b]     = w[b] x[b] + beta[b]          (K x C) @ (C x N)
    dx[b]    = w[b]^T dy[b]                 (C x K) @ (K x N)
    dw[b]    = dy[b] x[b]^T                 (K x N) @ (N x C)
    dbeta[b] = sum_n dy[b]

Three batched products, one kernel each, the batch on the last grid axis.
The forward and dx grids put the output-row tiles on the first (fastest)
axis, so the programs that share a tile of x or dy run side by side and
read it from L2. dw reduces over the pixels of one image inside one program,
so it needs neither atomics nor a second pass, and is deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import dot_precision, dynamic_classify_blocks
from .launch import interpreted, wrap_triton
from .tiles import dot, load_tile, store_tile


@triton.jit
def _dynamic_classify_fwd_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    y_ptr,
    K,
    C,
    N,
    sx_b,
    sx_c,
    sx_n,
    sw_b,
    sw_k,
    sw_c,
    sbias_b,
    sbias_k,
    sy_b,
    sy_k,
    sy_n,
    HAS_BIAS: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.program_id(2).to(tl.int64)
    k_ok = offs_k < K
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_K, BLOCK_N], ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        w = load_tile(w_ptr + b * sw_b, offs_k, offs_c, sw_k, sw_c, k_ok, c_ok)
        xt = load_tile(x_ptr + b * sx_b, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
        acc = dot(w, xt, acc, PRECISION, ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + b * sbias_b + offs_k * sbias_k, mask=k_ok, other=0.0)
        acc += bias.to(ACC)[:, None]
    store_tile(y_ptr + b * sy_b, acc, offs_k, offs_n, sy_k, sy_n, k_ok, n_ok)


@triton.jit
def _dynamic_classify_dx_kernel(
    dy_ptr,
    w_ptr,
    dx_ptr,
    K,
    C,
    N,
    sdy_b,
    sdy_k,
    sdy_n,
    sw_b,
    sw_k,
    sw_c,
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
    XT: tl.constexpr = w_ptr.dtype.element_ty
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    b = tl.program_id(2).to(tl.int64)
    c_ok = offs_c < C
    n_ok = offs_n < N
    acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        wt = load_tile(w_ptr + b * sw_b, offs_c, offs_k, sw_c, sw_k, c_ok, k_ok)
        dy = load_tile(dy_ptr + b * sdy_b, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok).to(XT)
        acc = dot(wt, dy, acc, PRECISION, ACC)
    store_tile(dx_ptr + b * sdx_b, acc, offs_c, offs_n, sdx_c, sdx_n, c_ok, n_ok)


@triton.jit
def _dynamic_classify_dw_kernel(
    dy_ptr,
    x_ptr,
    dw_ptr,
    db_ptr,
    K,
    C,
    N,
    sdy_b,
    sdy_k,
    sdy_n,
    sx_b,
    sx_c,
    sx_n,
    sdw_b,
    sdw_k,
    sdw_c,
    sdb_b,
    sdb_k,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    pid_c = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    k_ok = offs_k < K
    c_ok = offs_c < C
    acc = tl.zeros([BLOCK_K, BLOCK_C], ACC)
    acc_b = tl.zeros([BLOCK_K], ACC)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        dy = load_tile(dy_ptr + b * sdy_b, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok)
        if NEED_DW:
            xt = load_tile(x_ptr + b * sx_b, offs_n, offs_c, sx_n, sx_c, n_ok, c_ok)
            acc = dot(dy.to(XT), xt, acc, PRECISION, ACC)
        if NEED_DB:
            acc_b += tl.sum(dy.to(ACC), axis=1)
    if NEED_DW:
        store_tile(dw_ptr + b * sdw_b, acc, offs_k, offs_c, sdw_k, sdw_c, k_ok, c_ok)
    if NEED_DB:
        # Every channel tile summed the same dy; the first one writes dbeta.
        tl.store(
            db_ptr + b * sdb_b + offs_k * sdb_k,
            acc_b.to(db_ptr.dtype.element_ty),
            mask=k_ok & (pid_c == 0),
        )


def dynamic_classify_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    B, C, H, W = x.shape
    K = weight.shape[1]
    N = H * W
    y = x.new_empty(B, K, H, W)
    if B == 0:
        return y
    xf = x.reshape(B, C, N)
    yf = y.view(B, K, N)
    blocks = dynamic_classify_blocks(K, C, N, x.dtype, interpreted(_dynamic_classify_fwd_kernel))
    # Never read without HAS_BIAS; any tensor serves as the pointer.
    bias_t = bias if bias is not None else weight
    grid = (triton.cdiv(K, blocks.k), triton.cdiv(N, blocks.n), B)
    wrap_triton(_dynamic_classify_fwd_kernel)[grid](
        xf,
        weight,
        bias_t,
        yf,
        K,
        C,
        N,
        *xf.stride(),
        *weight.stride(),
        bias_t.stride(0),
        bias_t.stride(1),
        *yf.stride(),
        HAS_BIAS=bias is not None,
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    return y


def dynamic_classify_backward(
    grad_logits: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, output_mask: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dw, dbeta)``, None where ``output_mask`` says it is not needed."""
    need_dx, need_dw, need_db = output_mask
    B, C, H, W = x.shape
    K = weight.shape[1]
    N = H * W
    dx = x.new_empty(B, C, H, W) if need_dx else None
    dw = weight.new_empty(B, K, C) if need_dw else None
    db = weight.new_empty(B, K) if need_db else None
    if B == 0:
        return dx, dw, db
    blocks = dynamic_classify_blocks(K, C, N, x.dtype, interpreted(_dynamic_classify_dx_kernel))
    dyf = grad_logits.reshape(B, K, N)
    xf = x.reshape(B, C, N)
    common = dict(
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    if dx is not None:
        dxf = dx.view(B, C, N)
        grid = (triton.cdiv(C, blocks.c), triton.cdiv(N, blocks.n), B)
        wrap_triton(_dynamic_classify_dx_kernel)[grid](
            dyf, weight, dxf, K, C, N, *dyf.stride(), *weight.stride(), *dxf.stride(), **common
        )
    if need_dw or need_db:
        # dbeta alone needs one channel tile, not all of them.
        grid = (triton.cdiv(K, blocks.k), triton.cdiv(C, blocks.c) if need_dw else 1, B)
        dw_t = dw if dw is not None else weight
        db_t = db if db is not None else weight[:, :, 0]
        wrap_triton(_dynamic_classify_dw_kernel)[grid](
            dyf,
            xf,
            dw_t,
            db_t,
            K,
            C,
            N,
            *dyf.stride(),
            *xf.stride(),
            *dw_t.stride(),
            *db_t.stride(),
            NEED_DW=need_dw,
            NEED_DB=need_db,
            **common,
        )
    return dx, dw, db
