"""project in Triton: theta[b, k] = A[k] f[b, k] + a[k] and its backward

    df[b, k] = A[k]^T dtheta[b, k]
    dA[k]    = sum_b dtheta[b, k] f[b, k]^T
    da[k]    = sum_b dtheta[b, k]

for class features f (B, K, C), A (K, C+1, C), a (K, C+1). The products are
only B wide, so both kernels stream A (158 MB in float32 at C=512, K=150):
the forward reads it once; the backward reads each element once for df while
it writes its gradient. The sums are broadcast products reduced with
``tl.sum`` rather than ``tl.dot`` (B is far below a tensor-core tile), in
float32 (float64 for float64) whatever A's dtype: A may be float32 master
weights beside float16/bfloat16 features, read as they are.

Forward: one program per (row block, class, image block), looping over the
channels. Backward: one program per (channel block, class), looping over
all C+1 rows, so df and dA are complete in one program: no atomics, no
partial sums, deterministic. Its image block covers the whole batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import project_blocks
from .launch import interpreted, wrap_triton
from .tiles import load_tile, store_tile


@triton.jit
def _project_fwd_kernel(
    f_ptr,
    a_ptr,
    bias_ptr,
    theta_ptr,
    B,
    K,
    C,
    sf_b,
    sf_k,
    sf_c,
    sa_k,
    sa_j,
    sa_c,
    sbias_k,
    sbias_j,
    st_b,
    st_k,
    st_j,
    HAS_BIAS: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    J = C + 1
    offs_j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    k = tl.program_id(1).to(tl.int64)
    offs_b = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    j_ok = offs_j < J
    b_ok = offs_b < B
    acc = tl.zeros([BLOCK_B, BLOCK_J], ACC)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        a = load_tile(a_ptr + k * sa_k, offs_j, offs_c, sa_j, sa_c, j_ok, c_ok).to(ACC)
        f = load_tile(f_ptr + k * sf_k, offs_b, offs_c, sf_b, sf_c, b_ok, c_ok).to(ACC)
        acc += tl.sum(f[:, None, :] * a[None, :, :], axis=2)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + k * sbias_k + offs_j * sbias_j, mask=j_ok, other=0.0)
        acc += bias.to(ACC)[None, :]
    store_tile(theta_ptr + k * st_k, acc, offs_b, offs_j, st_b, st_j, b_ok, j_ok)


@triton.jit
def _project_bwd_kernel(
    dt_ptr,
    f_ptr,
    a_ptr,
    df_ptr,
    da_ptr,
    dbias_ptr,
    B,
    K,
    C,
    sdt_b,
    sdt_k,
    sdt_j,
    sf_b,
    sf_k,
    sf_c,
    sa_k,
    sa_j,
    sa_c,
    sdf_b,
    sdf_k,
    sdf_c,
    sda_k,
    sda_j,
    sda_c,
    sdb_k,
    sdb_j,
    NEED_DF: tl.constexpr,
    NEED_DA: tl.constexpr,
    NEED_DBIAS: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    ACC: tl.constexpr = tl.float64 if FP64 else tl.float32
    J = C + 1
    pid_c = tl.program_id(0)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    k = tl.program_id(1).to(tl.int64)
    offs_b = tl.arange(0, BLOCK_B)
    c_ok = offs_c < C
    b_ok = offs_b < B
    f = load_tile(f_ptr + k * sf_k, offs_b, offs_c, sf_b, sf_c, b_ok, c_ok).to(ACC)
    df = tl.zeros([BLOCK_B, BLOCK_C], ACC)
    for j0 in range(0, J, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_ok = offs_j < J
        dt = load_tile(dt_ptr + k * sdt_k, offs_b, offs_j, sdt_b, sdt_j, b_ok, j_ok).to(ACC)
        if NEED_DA:
            grad = tl.sum(dt[:, :, None] * f[:, None, :], axis=0)
            store_tile(da_ptr + k * sda_k, grad, offs_j, offs_c, sda_j, sda_c, j_ok, c_ok)
        if NEED_DF:
            a = load_tile(a_ptr + k * sa_k, offs_j, offs_c, sa_j, sa_c, j_ok, c_ok).to(ACC)
            df += tl.sum(dt[:, :, None] * a[None, :, :], axis=1)
        if NEED_DBIAS:
            # Every channel block sums the same rows; the first one writes da.
            tl.store(
                dbias_ptr + k * sdb_k + offs_j * sdb_j,
                tl.sum(dt, axis=0).to(dbias_ptr.dtype.element_ty),
                mask=j_ok & (pid_c == 0),
            )
    if NEED_DF:
        store_tile(df_ptr + k * sdf_k, df, offs_b, offs_c, sdf_b, sdf_c, b_ok, c_ok)


def project_forward(
    class_feats: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    B, K, C = class_feats.shape
    theta = class_feats.new_empty(B, K, C + 1)
    if B == 0:
        return theta
    blocks = project_blocks(B, C, class_feats.dtype, interpreted(_project_fwd_kernel))
    bias_t = bias if bias is not None else weight[:, :, 0]  # never read without HAS_BIAS
    grid = (triton.cdiv(C + 1, blocks.j), K, triton.cdiv(B, blocks.b))
    wrap_triton(_project_fwd_kernel)[grid](
        class_feats,
        weight,
        bias_t,
        theta,
        B,
        K,
        C,
        *class_feats.stride(),
        *weight.stride(),
        *bias_t.stride(),
        *theta.stride(),
        HAS_BIAS=bias is not None,
        FP64=class_feats.dtype == torch.float64,
        BLOCK_B=blocks.b,
        BLOCK_J=blocks.j,
        BLOCK_C=blocks.c,
        num_warps=blocks.num_warps,
    )
    return theta


def project_backward(
    grad_theta: torch.Tensor,
    class_feats: torch.Tensor,
    weight: torch.Tensor,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(df, dA, da)``, None where ``output_mask`` says it is not needed."""
    need_df, need_da, need_dbias = output_mask
    B, K, C = class_feats.shape
    df = class_feats.new_empty(B, K, C) if need_df else None
    da = weight.new_empty(K, C + 1, C) if need_da else None
    dbias = weight.new_empty(K, C + 1) if need_dbias else None
    if B == 0:
        return (
            df,
            da.zero_() if da is not None else None,
            dbias.zero_() if dbias is not None else None,
        )
    if not (need_df or need_da or need_dbias):
        return None, None, None
    # One image block holds the whole batch: dA sums over every image.
    blocks = project_blocks(
        B, C, class_feats.dtype, interpreted(_project_bwd_kernel), whole_batch=True
    )
    # Absent outputs are never written; the weight stands in for their pointers.
    df_t = df if df is not None else class_feats
    da_t = da if da is not None else weight
    dbias_t = dbias if dbias is not None else weight[:, :, 0]
    grid = (triton.cdiv(C, blocks.c), K)
    wrap_triton(_project_bwd_kernel)[grid](
        grad_theta,
        class_feats,
        weight,
        df_t,
        da_t,
        dbias_t,
        B,
        K,
        C,
        *grad_theta.stride(),
        *class_feats.stride(),
        *weight.stride(),
        *df_t.stride(),
        *da_t.stride(),
        *dbias_t.stride(),
        NEED_DF=need_df,
        NEED_DA=need_da,
        NEED_DBIAS=need_dbias,
        FP64=class_feats.dtype == torch.float64,
        BLOCK_B=blocks.b,
        BLOCK_J=blocks.j,
        BLOCK_C=blocks.c,
        num_warps=blocks.num_warps,
    )
    return df, da, dbias
