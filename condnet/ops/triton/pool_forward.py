"""The softmax pooling forward in Triton, shared by class_pool (CondNet) and
context_pool (CAC): guide logits, their softmax over the K classes and the
class-pooled sums, in one pass over x.

    s = Wg x + bg,  P = softmax_k(s),  sums = P x^T / D  (+ mass = sum_n P)

class_pool passes the divisor D = N (its pooled features are means) and no
mass; context_pool passes D = 1 and asks for the mass, summed in the same
loop that forms ``P x^T``, from the same registers, and divides the sums by
it once every program has added its part. The guide weight is (K, C), read
with an image stride of 0, or one per image, (B, K, C) (CAC's static
classifier with a Dropout2d mask folded in).

One program owns BLOCK_N pixels of one image; the grid is
(pixel blocks, images). It runs two loops over the classes, BLOCK_K at a
time:

1. ``s = Wg x + bg`` tile by tile (each tile a loop of ``tl.dot`` over
   channel blocks), written out as the guide logits, while a running max and
   a running sum of exponentials per pixel give the softmax statistics over
   all K (the two-stage "online" softmax), so K is not bounded by a tile.
2. The logits tiles are read back (this program just wrote them; they are
   in L2), turned into probabilities with the finished statistics, and
   ``P x^T`` is added into the sums channel block by channel block.

The probabilities never leave registers. The slice of x the program reads,
C x BLOCK_N, is re-read by each class tile from L1/L2, not from DRAM.

The sums run over all pixels of an image, so several programs contribute to
each entry. By default they add their partial sums with float32 atomics into
a zeroed buffer. When ``torch.are_deterministic_algorithms_enabled()``, each
program instead writes its partial sum to a row of its own and the rows are
added in a fixed order afterwards, so results are bitwise reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from .config import accumulator_dtype, class_pool_blocks, dot_precision
from .launch import interpreted
from .tiles import dot, load_tile, reduce_tile, reduce_vector, store_tile


@triton.jit
def _pool_fwd_kernel(
    x_ptr, wg_ptr, bg_ptr, g_ptr, sums_ptr, mass_ptr,
    K, C, N, DIVISOR,
    sx_b, sx_c, sx_n,
    sw_b, sw_k, sw_c,
    sb_k,
    sg_b, sg_k, sg_n,
    ss_r, ss_k, ss_c,
    sm_r, sm_k,
    HAS_BIAS: tl.constexpr,
    WITH_MASS: tl.constexpr,
    ATOMIC: tl.constexpr,
    FP64: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
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
    inv_d = 1.0 / tl.cast(DIVISOR, ACC)
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
        if WITH_MASS:
            reduce_vector(mass_row, tl.sum(p, axis=1), offs_k, sm_k, k_ok, ATOMIC)
        p_x = p.to(XT)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            xt = load_tile(x_img, offs_c, offs_n, sx_c, sx_n, c_ok, n_ok)
            part = dot(p_x, tl.trans(xt), None, PRECISION, ACC) * inv_d
            reduce_tile(sums_row, part, offs_k, offs_c, ss_k, ss_c, k_ok, c_ok, ATOMIC)


def image_strides(weight: torch.Tensor) -> tuple[int, int, int]:
    """(image, class, channel) strides of a (K, C) or (B, K, C) weight; a
    shared (K, C) weight has an image stride of 0."""
    if weight.dim() == 2:
        return 0, weight.stride(0), weight.stride(1)
    return weight.stride(0), weight.stride(1), weight.stride(2)


def pool_forward(
    x: torch.Tensor,
    guide_weight: torch.Tensor,
    guide_bias: torch.Tensor | None,
    divisor: int,
    with_mass: bool,
    reduce_with_atomics: Callable[[int], bool],
    wrap_triton: Callable,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Launches the forward kernel; returns ``(guide_logits, sums, mass)``:
    the logits in x's dtype, the (B, K, C) sums (divided by ``divisor``) and,
    with ``with_mass``, the (B, K) mass in the accumulator's dtype, else
    None. Each op's module passes its ``reduce_with_atomics`` (atomics or
    per-program rows, for a program count) and ``wrap_triton`` (the launch),
    so that the choice and the launches are the op's, as for its other kernels."""
    B, C, H, W = x.shape
    K = guide_weight.shape[-2]
    N = H * W
    g = x.new_empty(B, K, H, W)
    acc_dtype = accumulator_dtype(x.dtype)
    if B == 0:
        mass = x.new_zeros(B, K, dtype=acc_dtype) if with_mass else None
        return g, x.new_zeros(B, K, C, dtype=acc_dtype), mass
    # A view for contiguous and channels_last x; other layouts are copied.
    xf = x.reshape(B, C, N)
    gf = g.view(B, K, N)
    blocks = class_pool_blocks(K, C, N, x.dtype, interpreted(_pool_fwd_kernel))
    pixel_blocks = triton.cdiv(N, blocks.n)
    atomic = reduce_with_atomics(pixel_blocks)
    rows = B if atomic else B * pixel_blocks
    make = torch.zeros if atomic else torch.empty
    sums = make(rows, K, C, dtype=acc_dtype, device=x.device)
    mass = make(rows, K, dtype=acc_dtype, device=x.device) if with_mass else None
    # Never read without HAS_BIAS or WITH_MASS; any tensor serves as the pointer.
    bias = guide_bias if guide_bias is not None else x
    mass_out = mass if mass is not None else sums
    wrap_triton(_pool_fwd_kernel)[(pixel_blocks, B)](
        xf,
        guide_weight,
        bias,
        gf,
        sums,
        mass_out,
        K,
        C,
        N,
        divisor,
        *xf.stride(),
        *image_strides(guide_weight),
        bias.stride(0),
        *gf.stride(),
        *sums.stride(),
        *(mass.stride() if mass is not None else (0, 0)),
        HAS_BIAS=guide_bias is not None,
        WITH_MASS=with_mass,
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
        mass = mass.view(B, pixel_blocks, K).sum(1) if mass is not None else None
    return g, sums, mass
