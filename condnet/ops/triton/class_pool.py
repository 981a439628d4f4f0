"""class_pool forward in Triton: guide logits, their softmax over the K
classes and the class-pooled features, in one pass over x.

One program owns BLOCK_N pixels of one image; the grid is
(pixel blocks, images). It runs two loops over the classes, BLOCK_K at a
time:

1. ``g = Wg x + bg`` tile by tile (each tile a loop of ``tl.dot`` over
   channel blocks), written out as the guide logits, while a running max and
   a running sum of exponentials per pixel give the softmax statistics over
   all K (the two-stage "online" softmax), so K is not bounded by a tile.
2. The logits tiles are read back (this program just wrote them; they are
   in L2), turned into probabilities with the finished statistics, and
   ``p x^T`` is added into f channel block by channel block.

The probabilities never leave registers. The slice of x the program reads,
C x BLOCK_N, is re-read by each class tile from L1/L2, not from DRAM.

f sums over all pixels of an image, so several programs contribute to each
entry. By default they add their partial sums with float32 atomics into a
zeroed buffer. When ``torch.are_deterministic_algorithms_enabled()``, each
program instead writes its partial sum to a row of its own and the rows are
added in a fixed order afterwards, so results are bitwise reproducible.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import accumulator_dtype, class_pool_blocks, dot_precision
from .launch import interpreted, wrap_triton
from .tiles import dot, load_tile, reduce_tile, store_tile


@triton.jit
def _class_pool_fwd_kernel(
    x_ptr,
    wg_ptr,
    bg_ptr,
    g_ptr,
    f_ptr,
    K,
    C,
    N,
    sx_b,
    sx_c,
    sx_n,
    sw_k,
    sw_c,
    sb_k,
    sg_b,
    sg_k,
    sg_n,
    sf_r,
    sf_k,
    sf_c,
    HAS_BIAS: tl.constexpr,
    ATOMIC: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    x_img = x_ptr + b * sx_b
    g_img = g_ptr + b * sg_b
    row = b if ATOMIC else b * tl.num_programs(0) + pid_n
    f_row = f_ptr + row * sf_r

    m_i = tl.full([BLOCK_N], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_N], ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        acc = tl.zeros([BLOCK_K, BLOCK_N], ACC)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            w = load_tile(wg_ptr, offs_k, offs_c, sw_k, sw_c, k_ok, c_ok)
            xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
            acc = dot(w, xt, acc, PRECISION, ACC)
        if HAS_BIAS:
            acc += tl.load(bg_ptr + offs_k * sb_k, mask=k_ok, other=0.0).to(ACC)[:, None]
        g = acc.to(g_ptr.dtype.element_ty)
        store_tile(g_img, g, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok)
        # The softmax sees the logits as returned, rounded to x's dtype, like
        # the reference; padded classes get -inf and so probability 0.
        logits = tl.where(k_ok[:, None], g.to(ACC), float("-inf"))
        m_new = tl.maximum(m_i, tl.max(logits, axis=0))
        l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(logits - m_new[None, :]), axis=0)
        m_i = m_new
    inv_l = 1.0 / l_i
    inv_n = 1.0 / tl.cast(N, ACC)
    # Other threads of this program wrote the logits read back below.
    tl.debug_barrier()

    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
        p = tl.exp(g - m_i[None, :]) * inv_l[None, :]
        # Padded classes and pixels load logits of 0, so a finite p; zeroed.
        p = tl.where(k_ok[:, None] & n_ok[None, :], p, 0.0).to(x_ptr.dtype.element_ty)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
            part = dot(p, tl.trans(xt), None, PRECISION, ACC)
            reduce_tile(f_row, part * inv_n, offs_k, offs_c, sf_k, sf_c, k_ok, c_ok, ATOMIC)


def reduce_with_atomics(programs: int) -> bool:
    """Whether partial sums from ``programs`` programs are combined with
    atomics: not for one program, nor when determinism is asked for."""
    return programs > 1 and not torch.are_deterministic_algorithms_enabled()


def class_pool_forward(
    x: torch.Tensor, guide_weight: torch.Tensor, guide_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the forward kernel; returns ``(guide_logits, class_feats)``."""
    B, C, H, W = x.shape
    K = guide_weight.shape[0]
    N = H * W
    g = x.new_empty(B, K, H, W)
    if B == 0:
        return g, x.new_zeros(B, K, C)
    # A view for contiguous and channels_last x; other layouts are copied.
    xf = x.reshape(B, C, N)
    gf = g.view(B, K, N)
    blocks = class_pool_blocks(K, C, N, x.dtype, interpreted(_class_pool_fwd_kernel))
    pixel_blocks = triton.cdiv(N, blocks.n)
    acc_dtype = accumulator_dtype(x.dtype)
    atomic = reduce_with_atomics(pixel_blocks)
    if atomic:
        partial = torch.zeros(B, K, C, dtype=acc_dtype, device=x.device)
    else:
        partial = torch.empty(B * pixel_blocks, K, C, dtype=acc_dtype, device=x.device)
    # Never read without HAS_BIAS; any tensor serves as the pointer.
    bias = guide_bias if guide_bias is not None else guide_weight
    wrap_triton(_class_pool_fwd_kernel)[(pixel_blocks, B)](
        xf,
        guide_weight,
        bias,
        gf,
        partial,
        K,
        C,
        N,
        *xf.stride(),
        *guide_weight.stride(),
        bias.stride(0),
        *gf.stride(),
        *partial.stride(),
        HAS_BIAS=guide_bias is not None,
        ATOMIC=atomic,
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    if atomic or pixel_blocks == 1:
        f = partial.view(B, K, C)
    else:
        f = partial.view(B, pixel_blocks, K, C).sum(1)
    return g, f.to(x.dtype)
