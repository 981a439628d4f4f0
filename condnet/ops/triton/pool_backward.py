"""The softmax pooling backward in Triton, shared by class_pool (CondNet)
and context_pool (CAC): dx, dWg and dbg in one pass over x, optionally with
a classifier's part of dx, so that a whole classifier writes dx once.

With ds the static (guide) logits' gradient, dM (B, K, C) and h (B, K) the
pooled outputs' gradients brought to P, each possibly absent, and
P = softmax_k(s) recomputed from the saved logits:

    dP  = dM x / D + h                               (K x N per image)
    dst = ds + P * (dP - sum_k P dP)                 softmax backward
    dx  = Wg^T dst + dM^T P / D  (+ the classifier term)
    dWg = sum_n dst x^T (per image for a (B, K, C) Wg, else summed over images)
    dbg = sum_{b,n} dst

class_pool passes dM = df, D = N and no h; context_pool passes
dM = dcen / (mass + 1e-12), D = 1 and h = dmass - sum_c dcen centres / (mass + 1e-12).
The divisor D is applied in the accumulator after the product, so that
df / N is never rounded to x's dtype.

The classifier term, with dy its logits' gradient and v its (B, K', C)
weights, is ``v^T dy`` for CondNet's linear dynamic classifier, and for
CAC's cosine one (y the logits, |x_n| the saved norms, r_n = max(|x_n|, eps)):

    sum_k v[k] dy[k, n] / r_n - [|x_n| >= eps] x_n (sum_k dy[k, n] y[k, n]) / (r_n |x_n|)

One program owns BLOCK_N pixels of one image (grid: pixel blocks, images):

A. (with dP) over class tiles: dP, the softmax statistics and sum_k P dP,
   online; dP into a per-program fp32 scratch slab (it stays in L2).
B. over class tiles: dst, dbg and dWg (atomics, or per-program partial rows
   under ``torch.use_deterministic_algorithms``); dst replaces dP in the slab.
D. (cosine classifier) over class tiles: sum_k dy y per pixel, for the norm's term.
C. over channel tiles, each accumulating over the class tiles: dx, written once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .config import accumulator_dtype, class_pool_blocks, dot_precision
from .launch import interpreted
from .per_image_classify import eps_tensor
from .pool_forward import image_strides
from .tiles import dot, load_tile, reduce_tile, reduce_vector, store_tile


@triton.jit
def _pool_bwd_kernel(
    ds_ptr, dm_ptr, h_ptr, x_ptr, wg_ptr, g_ptr,
    dy_ptr, v_ptr, y_ptr, xn_ptr, eps_ptr,
    dx_ptr, dw_ptr, db_ptr, s_ptr,
    K, K2, C, N, DIVISOR,
    sds_b, sds_k, sds_n,
    sdm_b, sdm_k, sdm_c,
    sh_b, sh_k,
    sx_b, sx_c, sx_n,
    sw_b, sw_k, sw_c,
    sg_b, sg_k, sg_n,
    sdy_b, sdy_k, sdy_n,
    sv_b, sv_k, sv_c,
    sy_b, sy_k, sy_n,
    sxn_b, sxn_n,
    sdx_b, sdx_c, sdx_n,
    sdw_r, sdw_k, sdw_c,
    sdb_r, sdb_k,
    ss_b, ss_k, ss_n,
    HAS_DS: tl.constexpr,
    HAS_DM: tl.constexpr,
    HAS_H: tl.constexpr,
    HAS_DY: tl.constexpr,
    COSINE: tl.constexpr,
    SCALE_DM: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    PER_IMAGE: tl.constexpr,
    ATOMIC: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    XT: tl.constexpr = x_ptr.dtype.element_ty
    HAS_DP: tl.constexpr = HAS_DM or HAS_H
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    x_img = x_ptr + b * sx_b
    w_img = wg_ptr + b * sw_b
    g_img = g_ptr + b * sg_b
    ds_img = ds_ptr + b * sds_b
    dm_img = dm_ptr + b * sdm_b
    s_img = s_ptr + b * ss_b
    inv_d = 1.0 / tl.cast(DIVISOR, ACC)
    program_row = b * tl.num_programs(0) + pid_n
    if ATOMIC:
        dw_row = dw_ptr + (b if PER_IMAGE else 0) * sdw_r
        db_row = db_ptr
    else:
        dw_row = dw_ptr + program_row * sdw_r
        db_row = db_ptr + program_row * sdb_r

    if HAS_DP:  # A: softmax statistics, t = sum_k P dP, and dP into the scratch slab
        m_i = tl.full([BLOCK_N], float("-inf"), ACC)
        l_i = tl.zeros([BLOCK_N], ACC)
        t_i = tl.zeros([BLOCK_N], ACC)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            dp = tl.zeros([BLOCK_K, BLOCK_N], ACC)
            if HAS_DM:
                for c0 in range(0, C, BLOCK_C):
                    offs_c = c0 + tl.arange(0, BLOCK_C)
                    c_ok = offs_c < C
                    dmt = load_tile(dm_img, offs_k, offs_c, sdm_k, sdm_c, k_ok, c_ok).to(XT)
                    xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
                    dp = dot(dmt, xt, dp, PRECISION, ACC)
                dp = dp * inv_d
            if HAS_H:
                h = tl.load(h_ptr + b * sh_b + offs_k * sh_k, mask=k_ok, other=0.0).to(ACC)
                dp += h[:, None]
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
        t_i = t_i * inv_l
        # The dP tiles are read back below by other threads of this program.
        tl.debug_barrier()

    if NEED_DW or NEED_DB or (NEED_DX and HAS_DP):  # B: dst, dbg, dWg
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            if HAS_DS:
                dst = load_tile(ds_img, offs_k, offs_n, sds_k, sds_n, k_ok, n_ok).to(ACC)
            else:
                dst = tl.zeros([BLOCK_K, BLOCK_N], ACC)
            if HAS_DP:
                g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
                p = tl.exp(g - m_i[None, :]) * inv_l[None, :]
                dp = load_tile(s_img, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)
                # Padded classes and pixels load logits of 0, so a finite P; zeroed
                # here, they add nothing to dbg, dWg or dx whatever the later masks.
                dst = tl.where(k_ok[:, None] & n_ok[None, :], dst + p * (dp - t_i[None, :]), 0.0)
            if NEED_DB:
                reduce_vector(db_row, tl.sum(dst, axis=1), offs_k, sdb_k, k_ok, ATOMIC)
            if NEED_DW:
                dst_x = dst.to(XT)
                for c0 in range(0, C, BLOCK_C):
                    offs_c = c0 + tl.arange(0, BLOCK_C)
                    c_ok = offs_c < C
                    xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
                    part = dot(dst_x, tl.trans(xt), None, PRECISION, ACC)
                    reduce_tile(dw_row, part, offs_k, offs_c, sdw_k, sdw_c, k_ok, c_ok, ATOMIC)
            if NEED_DX and HAS_DP:
                # No thread may overwrite dP before every thread has read it.
                tl.debug_barrier()
                store_tile(s_img, dst, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)

    if NEED_DX:
        dy_img = dy_ptr + b * sdy_b
        v_img = v_ptr + b * sv_b
        if COSINE:  # D: the norm's coefficient sum_k dy y / (r |x|), and 1 / r
            eps = tl.load(eps_ptr)
            norm = tl.load(xn_ptr + b * sxn_b + offs_n * sxn_n, mask=n_ok, other=1.0).to(ACC)
            inv_r = 1.0 / tl.maximum(norm, eps)
            dot_y = tl.zeros([BLOCK_N], ACC)
            for k0 in range(0, K2, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                k_ok = offs_k < K2
                dyt = load_tile(dy_img, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok).to(ACC)
                yt = load_tile(y_ptr + b * sy_b, offs_k, offs_n, sy_k, sy_n, k_ok, n_ok)
                dot_y += tl.sum(dyt * yt.to(ACC), axis=0)
            # Where the clamp holds (|x_n| < eps) the norm has no gradient; elsewhere
            # r = |x_n|, so 1 / (r |x_n|) = 1 / r^2 (no 0 / 0 in the unused branch).
            coef = tl.where(norm >= eps, dot_y * inv_r * inv_r, 0.0)
        if HAS_DP:
            tl.debug_barrier()
        # C: dx = Wg^T dst + dM^T P / D (+ the classifier term)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
            if SCALE_DM:
                acc_m = tl.zeros([BLOCK_C, BLOCK_N], ACC)
            if HAS_DS or HAS_DP:
                for k0 in range(0, K, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)
                    k_ok = offs_k < K
                    wt = load_tile(w_img, offs_c, offs_k, sw_c, sw_k, c_ok, k_ok).to(XT)
                    if HAS_DP:
                        dst = load_tile(s_img, offs_k, offs_n, ss_k, ss_n, k_ok, n_ok)
                    else:
                        dst = load_tile(ds_img, offs_k, offs_n, sds_k, sds_n, k_ok, n_ok)
                    acc = dot(wt, dst.to(XT), acc, PRECISION, ACC)
                    if HAS_DM:
                        dmt = load_tile(dm_img, offs_c, offs_k, sdm_c, sdm_k, c_ok, k_ok).to(XT)
                        g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
                        p = tl.exp(g - m_i[None, :]) * inv_l[None, :]
                        p = tl.where(k_ok[:, None] & n_ok[None, :], p, 0.0)
                        if SCALE_DM:
                            acc_m = dot(dmt, p.to(XT), acc_m, PRECISION, ACC)
                        else:
                            acc = dot(dmt, p.to(XT), acc, PRECISION, ACC)
            if HAS_DM and SCALE_DM:
                acc += acc_m * inv_d
            if HAS_DY:
                for k0 in range(0, K2, BLOCK_K):
                    offs_k = k0 + tl.arange(0, BLOCK_K)
                    k_ok = offs_k < K2
                    vt = load_tile(v_img, offs_c, offs_k, sv_c, sv_k, c_ok, k_ok).to(XT)
                    dyt = load_tile(dy_img, offs_k, offs_n, sdy_k, sdy_n, k_ok, n_ok)
                    if COSINE:
                        dyt = dyt.to(ACC) * inv_r[None, :]
                    acc = dot(vt, dyt.to(XT), acc, PRECISION, ACC)
            if COSINE:
                xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok).to(ACC)
                acc -= xt * coef[None, :]
            store_tile(dx_ptr + b * sdx_b, acc, offs_c, offs_n, sdx_c, sdx_n, c_ok, n_ok)


class ClassifierTerm(NamedTuple):
    """A classifier's part of dx: its logits' gradient (B, K', H, W) and its
    weights (B, K', C); with ``logits`` and ``x_norm`` the cosine classifier's
    (:mod:`.cosine_classify`), else a linear one."""

    grad_logits: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor | None = None
    x_norm: torch.Tensor | None = None
    eps: float = 0.0


def _strides(t: torch.Tensor | None, dims: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * dims


def pool_backward(
    grad_guide_logits: torch.Tensor | None,
    dm: torch.Tensor | None,
    h: torch.Tensor | None,
    divisor: int,
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_logits: torch.Tensor,
    output_mask: list[bool],
    classifier: ClassifierTerm | None,
    reduce_with_atomics: Callable[[int], bool],
    wrap_triton: Callable,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Launches the backward kernel (see the module's docstring for dm, h and
    ``divisor``); returns ``(dx, dWg, dbg)``, None where ``output_mask`` says
    the gradient is not needed. dWg has guide_weight's shape and dtype.
    Each op's module passes its ``reduce_with_atomics`` (atomics or
    per-program rows, for a program count) and ``wrap_triton`` (the launch),
    so that the choice and the launches are the op's, as for its other kernels."""
    need_dx, need_dw, need_db = output_mask
    B, C, H, W = x.shape
    K = guide_weight.shape[-2]
    N = H * W
    per_image = guide_weight.dim() == 3
    dx = x.new_empty(B, C, H, W) if need_dx else None
    term = classifier if need_dx else None
    has_dp = dm is not None or h is not None
    if B == 0 or not (grad_guide_logits is not None or has_dp or term is not None):
        return (
            dx.zero_() if dx is not None else None,
            torch.zeros_like(guide_weight) if need_dw else None,
            guide_weight.new_zeros(K) if need_db else None,
        )
    if not (need_dx or need_dw or need_db):
        return None, None, None
    blocks = class_pool_blocks(K, C, N, x.dtype, interpreted(_pool_bwd_kernel))
    pixel_blocks = triton.cdiv(N, blocks.n)
    acc_dtype = accumulator_dtype(x.dtype)
    atomic = reduce_with_atomics(B * pixel_blocks)
    make = torch.zeros if atomic else torch.empty
    programs = B * pixel_blocks
    # Rows of partial sums: one per program, or with atomics one per image for
    # a per-image guide weight and one in all for a shared one.
    dw_rows = (B if per_image else 1) if atomic else programs
    dw = make(dw_rows, K, C, dtype=acc_dtype, device=x.device) if need_dw else None
    db = make(1 if atomic else programs, K, dtype=acc_dtype, device=x.device) if need_db else None
    xf = x.reshape(B, C, N)
    gf = guide_logits.reshape(B, K, N)
    dsf = grad_guide_logits.reshape(B, K, N) if grad_guide_logits is not None else None
    scratch = torch.empty(B, K, N, dtype=acc_dtype, device=x.device) if has_dp else None
    dxf = dx.view(B, C, N) if dx is not None else None
    dyf = v = yf = xnf = None
    cosine = False
    if term is not None:
        dyf, v = term.grad_logits.reshape(B, -1, N), term.weight
        if term.logits is not None and term.x_norm is not None:
            cosine = True
            yf, xnf = term.logits.reshape(B, -1, N), term.x_norm.reshape(B, N)
    eps_t = eps_tensor(term.eps if term is not None else 0.0, x)
    # Absent tensors are never read; x stands in for their pointers.
    wrap_triton(_pool_bwd_kernel)[(pixel_blocks, B)](
        *(t if t is not None else xf for t in (dsf, dm, h)),
        xf,
        guide_weight,
        gf,
        *(t if t is not None else xf for t in (dyf, v, yf, xnf)),
        eps_t,
        *(t if t is not None else xf for t in (dxf, dw, db, scratch)),
        K,
        v.shape[1] if v is not None else 0,
        C,
        N,
        divisor,
        *_strides(dsf, 3),
        *_strides(dm, 3),
        *_strides(h, 2),
        *xf.stride(),
        *image_strides(guide_weight),
        *gf.stride(),
        *_strides(dyf, 3),
        *_strides(v, 3),
        *_strides(yf, 3),
        *_strides(xnf, 2),
        *_strides(dxf, 3),
        *_strides(dw, 3),
        *_strides(db, 2),
        *_strides(scratch, 3),
        HAS_DS=dsf is not None,
        HAS_DM=dm is not None,
        HAS_H=h is not None,
        HAS_DY=term is not None,
        COSINE=cosine,
        # A divisor other than 1 needs a second dx accumulator (registers).
        SCALE_DM=divisor != 1,
        NEED_DX=need_dx,
        NEED_DW=need_dw,
        NEED_DB=need_db,
        PER_IMAGE=per_image,
        ATOMIC=atomic,
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    if dw is not None:
        if not atomic:
            dw = dw.view(B, pixel_blocks, K, C).sum(1) if per_image else dw.sum(0)
        dw = (dw if per_image else dw.view(K, C)).to(guide_weight.dtype)
    if db is not None:
        db = (db[0] if db.shape[0] == 1 else db.sum(0)).to(x.dtype)
    return dx, dw, db
