"""Masked 2-D tile loads and stores shared by the kernels."""

import triton
import triton.language as tl


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
