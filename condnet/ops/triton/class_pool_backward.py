"""class_pool backward in Triton: dx, dWg and dbg in one pass over x.

With upstream gradients dg (B, K, N) and df (B, K, C), either possibly
absent, and the saved guide logits g from which p = softmax_k(g) is
recomputed:

    dp  = df x / N                      (K x N per image)
    dgt = dg + p * (dp - sum_k p dp)    softmax backward
    dx  = df^T p / N + Wg^T dgt  (+ w^T dy)
    dWg = sum_{b,n} dgt x^T,  dbg = sum_{b,n} dgt

The optional ``w^T dy`` is the dynamic classifier's input gradient, which the
whole classifier's backward passes in (grad_logits, classifier_weight) so
that dx is written once.

One program owns BLOCK_N pixels of one image (grid: pixel blocks, images):

A. (only with df) over class tiles: dp by ``tl.dot`` over channel blocks;
   running softmax max and sum, and the running sum of exp(g - max) * dp,
   which all rescale together when the max grows, so ``sum_k p dp`` needs no
   second pass. dp goes to a scratch buffer, one fp32 K x BLOCK_N slab per
   program, which stays in L2.
B. over class tiles: dgt, its row sums (dbg) and dgt x^T (dWg), added across
   programs like f in the forward (atomics, or per-program partial rows when
   determinism is asked for). dgt replaces dp in the scratch slab.
C. over channel tiles, each accumulating over the class tiles:
   dx = Wg^T dgt + df^T p / N (+ w^T dy), written once.

Without df, dgt is dg itself and the softmax is not needed at all.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .class_pool import reduce_with_atomics
from .config import accumulator_dtype, class_pool_blocks, dot_precision
from .launch import interpreted, wrap_triton
from .tiles import dot, load_tile, reduce_tile, reduce_vector, store_tile


@triton.jit
def _class_pool_bwd_kernel(
    dg_ptr,
    df_ptr,
    x_ptr,
    wg_ptr,
    g_ptr,
    dy_ptr,
    cw_ptr,
    dx_ptr,
    dw_ptr,
    db_ptr,
    s_ptr,
    K,
    K2,
    C,
    N,
    sdg_b,
    sdg_k,
    sdg_n,
    sdf_b,
    sdf_k,
    sdf_c,
    sx_b,
    sx_c,
    sx_n,
    sw_k,
    sw_c,
    sg_b,
    sg_k,
    sg_n,
    sdy_b,
    sdy_k,
    sdy_n,
    scw_b,
    scw_k,
    scw_c,
    sdx_b,
    sdx_c,
    sdx_n,
    sdw_r,
    sdw_k,
    sdw_c,
    sdb_r,
    sdb_k,
    ss_b,
    ss_k,
    ss_n,
    HAS_DG: tl.constexpr,
    HAS_DF: tl.constexpr,
    HAS_DY: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    ATOMIC: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    x_img = x_ptr + b * sx_b
    g_img = g_ptr + b * sg_b
    dg_img = dg_ptr + b * sdg_b
    df_img = df_ptr + b * sdf_b
    s_img = s_ptr + b * ss_b
    row = 0 if ATOMIC else b * tl.num_programs(0) + pid_n
    dw_row = dw_ptr + row * sdw_r
    db_row = db_ptr + row * sdb_r
    inv_n = 1.0 / tl.cast(N, ACC)

    if HAS_DF:  # A: softmax statistics, s = sum_k p dp, and dp into the scratch slab
        m_i = tl.full([BLOCK_N], float("-inf"), ACC)
        l_i = tl.zeros([BLOCK_N], ACC)
        t_i = tl.zeros([BLOCK_N], ACC)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            dp = tl.zeros([BLOCK_K, BLOCK_N], ACC)
            for c0 in range(0, C, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                c_ok = offs_c < C
                dft = load_tile(df_img, offs_k, offs_c, sdf_k, sdf_c, k_ok, c_ok).to(XT)
                xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
                dp = dot(dft, xt, dp, PRECISION, ACC)
            dp = dp * inv_n
            g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
            logits = tl.where(k_ok[:, None], g, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(logits, axis=0))
            alpha = tl.exp(m_i - m_new)
            e = tl.exp(logits - m_new[None, :])
            l_i = l_i * alpha + tl.sum(e, axis=0)
            t_i = t_i * alpha + tl.sum(e * dp, axis=0)
            m_i = m_new
            store_tile(s_img, dp, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)
        inv_l = 1.0 / l_i
        s_i = t_i * inv_l
        # The dp tiles are read back below by other threads of this program.
        tl.debug_barrier()

    if NEED_DW or NEED_DB or (NEED_DX and HAS_DF):  # B: dgt, dbg, dWg
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            if HAS_DG:
                dgt = load_tile(dg_img, offs_k, offs_n, sdg_k, sdg_n, k_ok, n_ok).to(ACC)
            else:
                dgt = tl.zeros([BLOCK_K, BLOCK_N], ACC)
            if HAS_DF:
                g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
                p = tl.exp(g - m_i[None, :]) * inv_l[None, :]
                dp = load_tile(s_img, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)
                # Padded classes and pixels load logits of 0, so a finite p; zeroed
                # here, they add nothing to dbg, dWg or dx whatever the later masks.
                dgt = tl.where(k_ok[:, None] & n_ok[None, :], dgt + p * (dp - s_i[None, :]), 0.0)
            if NEED_DB:
                reduce_vector(db_row, tl.sum(dgt, axis=1), offs_k, sdb_k, k_ok, ATOMIC)
            if NEED_DW:
                dgt_x = dgt.to(XT)
                for c0 in range(0, C, BLOCK_C):
                    offs_c = c0 + tl.arange(0, BLOCK_C)
                    c_ok = offs_c < C
                    xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
                    part = dot(dgt_x, tl.trans(xt), None, PRECISION, ACC)
                    reduce_tile(dw_row, part, offs_k, offs_c, sdw_k, sdw_c, k_ok, c_ok, ATOMIC)
            if NEED_DX and HAS_DF:
                # No thread may overwrite dp before every thread has read it.
                tl.debug_barrier()
                store_tile(s_img, dgt, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)

    if NEED_DX:  # C: dx = Wg^T dgt + df^T p / N (+ w^T dy)
        if HAS_DF:
            tl.debug_barrier()
        dy_img = dy_ptr + b * sdy_b
        cw_img = cw_ptr + b * scw_b
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
            acc_f = tl.zeros([BLOCK_C, BLOCK_N], ACC)
            if HAS_DG or HAS_DF:
                for k0 in range(0, K, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)
                    k_ok = offs_k < K
                    wt = load_tile(wg_ptr, offs_c, offs_k, sw_c, sw_k, c_ok, k_ok)
                    if HAS_DF:
                        dgt = load_tile(s_img, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)
                    else:
                        dgt = load_tile(dg_img, offs_k, offs_n, sdg_k, sdg_n, k_ok, n_ok)
                    acc = dot(wt, dgt.to(XT), acc, PRECISION, ACC)
                    if HAS_DF:
                        dft = load_tile(df_img, offs_c, offs_k, sdf_c, sdf_k, c_ok, k_ok).to(XT)
                        g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
                        p = tl.exp(g - m_i[None, :]) * inv_l[None, :]
                        p = tl.where(k_ok[:, None] & n_ok[None, :], p, 0.0)
                        acc_f = dot(dft, p.to(XT), acc_f, PRECISION, ACC)
            if HAS_DF:
                acc += acc_f * inv_n
            if HAS_DY:
                for k0 in range(0, K2, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)
                    k_ok = offs_k < K2
                    wt = load_tile(cw_img, offs_c, offs_k, scw_c, scw_k, c_ok, k_ok)
                    dyt = load_tile(dy_img, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok)
                    acc = dot(wt, dyt, acc, PRECISION, ACC)
            store_tile(dx_ptr + b * sdx_b, acc, offs_c, offs_n, sdx_c, sdx_n, c_ok, n_ok)


def _strides(t: torch.Tensor | None, dims: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * dims


def class_pool_backward(
    grad_guide_logits: torch.Tensor | None,
    grad_class_feats: torch.Tensor | None,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_logits: torch.Tensor,
    output_mask: list[bool],
    grad_logits: torch.Tensor | None = None,
    classifier_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launches the backward kernel; returns ``(dx, dWg, dbg)``, None where
    ``output_mask`` says the gradient is not needed. With ``grad_logits``
    (B, K', H, W) and ``classifier_weight`` (B, K', C), dx also receives
    ``classifier_weight^T grad_logits``."""
    if (grad_logits is None) != (classifier_weight is None):
        raise ValueError("grad_logits and classifier_weight must be given together")
    need_dx, need_dw, need_db = output_mask
    B, C, H, W = x.shape
    K = guide_weight.shape[0]
    N = H * W
    dx = x.new_empty(B, C, H, W) if need_dx else None
    has_dy = need_dx and grad_logits is not None
    pooled = grad_guide_logits is not None or grad_class_feats is not None
    if B == 0 or not (pooled or has_dy):
        return (
            dx.zero_() if dx is not None else None,
            guide_weight.new_zeros(K, C) if need_dw else None,
            guide_weight.new_zeros(K) if need_db else None,
        )
    if not (need_dx or need_dw or need_db):
        return None, None, None
    blocks = class_pool_blocks(K, C, N, x.dtype, interpreted(_class_pool_bwd_kernel))
    pixel_blocks = triton.cdiv(N, blocks.n)
    acc_dtype = accumulator_dtype(x.dtype)
    atomic = reduce_with_atomics(B * pixel_blocks)
    rows = 1 if atomic else B * pixel_blocks

    def reduction_buffer(*shape):
        make = torch.zeros if atomic else torch.empty
        return make(rows, *shape, dtype=acc_dtype, device=x.device)

    xf = x.reshape(B, C, N)
    gf = guide_logits.reshape(B, K, N)
    dgf = grad_guide_logits.reshape(B, K, N) if grad_guide_logits is not None else None
    df = grad_class_feats
    has_df = df is not None
    dw = reduction_buffer(K, C) if need_dw else None
    db = reduction_buffer(K) if need_db else None
    scratch = torch.empty(B, K, N, dtype=acc_dtype, device=x.device) if has_df else None
    dxf = dx.view(B, C, N) if dx is not None else None
    dyf = grad_logits.reshape(B, -1, N) if need_dx and grad_logits is not None else None
    cw = classifier_weight if has_dy else None
    # Absent tensors are never read; x stands in for their pointers.
    wrap_triton(_class_pool_bwd_kernel)[(pixel_blocks, B)](
        dgf if dgf is not None else xf,
        df if has_df else xf,
        xf,
        guide_weight,
        gf,
        dyf if has_dy else xf,
        cw if has_dy else xf,
        dxf if dxf is not None else xf,
        dw if dw is not None else xf,
        db if db is not None else xf,
        scratch if has_df else xf,
        K,
        cw.shape[1] if cw is not None else 0,
        C,
        N,
        *_strides(dgf, 3),
        *_strides(df, 3),
        *xf.stride(),
        *guide_weight.stride(),
        *gf.stride(),
        *_strides(dyf, 3),
        *_strides(cw, 3),
        *_strides(dxf, 3),
        *_strides(dw, 3),
        *_strides(db, 2),
        *_strides(scratch, 3),
        HAS_DG=dgf is not None,
        HAS_DF=has_df,
        HAS_DY=has_dy,
        NEED_DX=need_dx,
        NEED_DW=need_dw,
        NEED_DB=need_db,
        ATOMIC=atomic,
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    if dw is not None:
        dw = (dw[0] if rows == 1 else dw.sum(0)).to(x.dtype)
    if db is not None:
        db = (db[0] if rows == 1 else db.sum(0)).to(x.dtype)
    return dx, dw, db
