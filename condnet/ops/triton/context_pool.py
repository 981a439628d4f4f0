"""context_pool forward in Triton: CAC's static logits, class centres and
class masses, in one pass over x.

    s = Wg x + bg,  P = softmax_k(s),  mass = sum_n P,  centres = P x^T / (mass + 1e-12)

The kernel is class_pool's (:mod:`.class_pool`), with two differences:

- the guide weight may be one per image, (B, K, C) (the static classifier
  with a Dropout2d mask folded in); a shared (K, C) one is read with an
  image stride of 0;
- the pooled sums are not divided by N: each class's probability mass is
  summed in the same loop that forms ``P x^T``, from the same registers, and
  the launcher divides the (B, K, C) sums by it once every program has added
  its part.

One program owns BLOCK_N pixels of one image (grid: pixel blocks, images).
Loop 1 over the class tiles writes the logits and keeps the online softmax's
running max and sum per pixel; loop 2 reads the logits back (from L2),
forms the probabilities, adds their row sums to the mass and their product
with x to the sums, channel block by channel block. Partial sums from the
programs of one image are added with float32 atomics, or, under
``torch.use_deterministic_algorithms``, written to per-program rows and
added in a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..cac import MASS_EPS
from .class_pool import reduce_with_atomics
from .config import accumulator_dtype, class_pool_blocks, dot_precision
from .launch import interpreted, wrap_triton
from .tiles import dot, load_tile, reduce_tile, reduce_vector, store_tile


@triton.jit
def _context_pool_fwd_kernel(
    x_ptr,
    wg_ptr,
    bg_ptr,
    g_ptr,
    sums_ptr,
    mass_ptr,
    K,
    C,
    N,
    sx_b,
    sx_c,
    sx_n,
    sw_b,
    sw_k,
    sw_c,
    sb_k,
    sg_b,
    sg_k,
    sg_n,
    ss_r,
    ss_k,
    ss_c,
    sm_r,
    sm_k,
    HAS_BIAS: tl.constexpr,
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
    w_img = wg_ptr + b * sw_b
    g_img = g_ptr + b * sg_b
    row = b if ATOMIC else b * tl.num_programs(0) + pid_n
    sums_row = sums_ptr + row * ss_r
    mass_row = mass_ptr + row * sm_r

    m_i = tl.full([BLOCK_N], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_N], ACC)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        acc = tl.zeros([BLOCK_K, BLOCK_N], ACC)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            w = load_tile(w_img, offs_k, offs_c, sw_k, sw_c, k_ok, c_ok).to(XT)
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
    # Other threads of this program wrote the logits read back below.
    tl.debug_barrier()

    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        g = load_tile(g_img, offs_k, offs_n, sg_k, sg_n, k_ok, n_ok).to(ACC)
        p = tl.exp(g - m_i[None, :]) * inv_l[None, :]
        # Padded classes and pixels load logits of 0, so a finite p; zeroed,
        # they add nothing to the mass or the sums.
        p = tl.where(k_ok[:, None] & n_ok[None, :], p, 0.0)
        reduce_vector(mass_row, tl.sum(p, axis=1), offs_k, sm_k, k_ok, ATOMIC)
        p_x = p.to(XT)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
            part = dot(p_x, tl.trans(xt), None, PRECISION, ACC)
            reduce_tile(sums_row, part, offs_k, offs_c, ss_k, ss_c, k_ok, c_ok, ATOMIC)


def image_strides(weight: torch.Tensor) -> tuple[int, int, int]:
    """(image, class, channel) strides of a (K, C) or (B, K, C) weight; a
    shared (K, C) weight has an image stride of 0."""
    if weight.dim() == 2:
        return 0, weight.stride(0), weight.stride(1)
    return weight.stride(0), weight.stride(1), weight.stride(2)


def context_pool_forward(
    x: torch.Tensor, guide_weight: torch.Tensor, guide_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the forward kernel; returns ``(guide_logits, centres, mass)``,
    all in x's dtype (centres divided by the mass in the accumulator's dtype
    and rounded once)."""
    B, C, H, W = x.shape
    K = guide_weight.shape[-2]
    N = H * W
    g = x.new_empty(B, K, H, W)
    if B == 0:
        return g, x.new_zeros(B, K, C), x.new_zeros(B, K)
    # A view for contiguous and channels_last x; other layouts are copied.
    xf = x.reshape(B, C, N)
    gf = g.view(B, K, N)
    blocks = class_pool_blocks(K, C, N, x.dtype, interpreted(_context_pool_fwd_kernel))
    pixel_blocks = triton.cdiv(N, blocks.n)
    acc_dtype = accumulator_dtype(x.dtype)
    atomic = reduce_with_atomics(pixel_blocks)
    rows = B if atomic else B * pixel_blocks
    make = torch.zeros if atomic else torch.empty
    sums = make(rows, K, C, dtype=acc_dtype, device=x.device)
    mass = make(rows, K, dtype=acc_dtype, device=x.device)
    # Never read without HAS_BIAS; any tensor serves as the pointer.
    bias = guide_bias if guide_bias is not None else x
    wrap_triton(_context_pool_fwd_kernel)[(pixel_blocks, B)](
        xf,
        guide_weight,
        bias,
        gf,
        sums,
        mass,
        K,
        C,
        N,
        *xf.stride(),
        *image_strides(guide_weight),
        bias.stride(0),
        *gf.stride(),
        *sums.stride(),
        *mass.stride(),
        HAS_BIAS=guide_bias is not None,
        ATOMIC=atomic,
        FP64=x.dtype == torch.float64,
        PRECISION=dot_precision(x.dtype),
        BLOCK_K=blocks.k,
        BLOCK_C=blocks.c,
        BLOCK_N=blocks.n,
        **blocks.launch,
    )
    if rows != B:
        sums = sums.view(B, pixel_blocks, K, C).sum(1)
        mass = mass.view(B, pixel_blocks, K).sum(1)
    centres = sums / (mass + MASS_EPS).unsqueeze(-1)
    return g, centres.to(x.dtype), mass.to(x.dtype)
