"""Masked 2-D tile loads and stores, and the product, shared by the kernels."""

import os

import triton
import triton.language as tl

# Whether the kernels are being defined for Triton's interpreter
# (TRITON_INTERPRET=1 when they are decorated; see launch.py).
INTERPRETED: tl.constexpr = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") == "1")


@triton.jit
def dot(a, b, acc, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """``tl.dot(a, b, acc)`` with ``PRECISION`` and ``ACC`` accumulation.

    Triton's interpreter multiplies bfloat16 operands as raw bit patterns (a
    16x16 product is off by ~1e10), so there, and only there, bfloat16
    operands are widened to float32 first. Everything around the product,
    every bfloat16 load, store and rounding point, stays as the GPU runs it;
    the widened product is exact where the tensor cores' is a float32 sum
    of exact bfloat16 products, so the two differ only in summation order.
    """
    if INTERPRETED and a.dtype == tl.bfloat16:
        a, b = a.to(tl.float32), b.to(tl.float32)
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=ACC)
    return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=ACC)


@triton.jit
def load_tile(ptr, rows, cols, row_stride, col_stride, row_ok, col_ok):
    """The (len(rows) x len(cols)) tile at ``ptr``, zero outside the masks."""
    ptrs = ptr + rows[:, None] * row_stride + cols[None, :] * col_stride
    return tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)


@triton.jit
def store_tile(ptr, value, rows, cols, row_stride, col_stride, row_ok, col_ok):
    ptrs = ptr + rows[:, None] * row_stride + cols[None, :] * col_stride
    tl.store(ptrs, value.to(ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def reduce_tile(
    ptr, value, rows, cols, row_stride, col_stride, row_ok, col_ok, ATOMIC: tl.constexpr
):
    """Adds ``value`` into a zeroed buffer with atomics, or stores it into a
    buffer of per-program partial sums that the launcher adds up in a fixed order."""
    ptrs = ptr + rows[:, None] * row_stride + cols[None, :] * col_stride
    mask = row_ok[:, None] & col_ok[None, :]
    if ATOMIC:
        tl.atomic_add(ptrs, value.to(ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(ptrs, value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def reduce_vector(ptr, value, rows, row_stride, row_ok, ATOMIC: tl.constexpr):
    """``reduce_tile`` for a vector."""
    ptrs = ptr + rows * row_stride
    if ATOMIC:
        tl.atomic_add(ptrs, value.to(ptr.dtype.element_ty), mask=row_ok)
    else:
        tl.store(ptrs, value.to(ptr.dtype.element_ty), mask=row_ok)
