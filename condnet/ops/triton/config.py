"""Block sizes and launch settings for the Triton kernels, as a function of
the problem size.

There is no autotuning: an autotuner would time candidates on the first call
(useless under the interpreter, and a stall inside torch.compile), and these
kernels are memory-bound enough that a rule of thumb gets close. Every tile
dimension is a power of two and at least 16, the smallest operand ``tl.dot``
accepts; the masks in the kernels handle K, C and N that are not multiples.

Under ``TRITON_INTERPRET=1`` the blocks are 16 classes, 16 channels and 32
pixels, so that the CPU tests cross several blocks on every axis with small
tensors, and the interpreter, whose cost grows with the number of programs
and loop trips, stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_BLOCK = 16  # tl.dot needs at least 16 on each operand dimension


@dataclass(frozen=True)
class Blocks:
    """Tile sizes along classes (k), channels (c) and pixels (n), and launch options."""

    k: int
    c: int
    n: int
    num_warps: int = 4
    num_stages: int = 2

    @property
    def launch(self) -> dict[str, int]:
        return {"num_warps": self.num_warps, "num_stages": self.num_stages}


_INTERPRETED = Blocks(MIN_BLOCK, MIN_BLOCK, 2 * MIN_BLOCK, num_warps=1, num_stages=1)


def _pow2_at_least(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _fit(extent: int, cap: int) -> int:
    """The power-of-two tile for ``extent``: as small as covers it, in [16, cap]."""
    return max(MIN_BLOCK, min(cap, _pow2_at_least(extent)))


def class_tile(K: int, cap: int) -> int:
    """Tile over the K classes that wastes the fewest padded rows.

    K=150 takes 32 (5 tiles, 160 rows) rather than 64 (3 tiles, 192 rows); on
    a tie the larger tile wins, for fewer loop trips.
    """
    best, best_rows = MIN_BLOCK, None
    tile = MIN_BLOCK
    while tile <= cap:
        rows = -(-K // tile) * tile
        if best_rows is None or rows <= best_rows:
            best, best_rows = tile, rows
        tile *= 2
    return best


def _wide(dtype: torch.dtype) -> bool:
    """float32 dots run in IEEE precision (no tensor cores) and float64 ones
    hold twice the bytes per element: both want smaller tiles."""
    return dtype in (torch.float32, torch.float64)


def class_pool_blocks(K: int, C: int, N: int, dtype: torch.dtype, interpret: bool) -> Blocks:
    """Tiles for the class_pool kernels, forward and backward.

    One program owns ``n`` pixels of one image and loops over all K classes
    and C channels; its tiles of (k x n) logits stay in registers, and the
    (c x n) slice of x it reads is reused from L1/L2 by every class tile.
    """
    if interpret:
        return _INTERPRETED
    if _wide(dtype):
        # IEEE float32 dots run on FMA units, each thread holding whole rows
        # of both operands: 16-wide K and C tiles keep that within registers.
        k, c, n, warps = class_tile(K, 16), _fit(C, 16), 32 if dtype == torch.float64 else 64, 4
    else:
        # 128 pixels per program halves the partial sums added across programs;
        # with 64-class tiles the backward's live tiles would spill.
        k, c, n, warps = class_tile(K, 32), _fit(C, 64), 128, 8
    return Blocks(k, c, _fit(N, n), num_warps=warps, num_stages=2)


def dynamic_classify_blocks(K: int, C: int, N: int, dtype: torch.dtype, interpret: bool) -> Blocks:
    """Tiles for the dynamic_classify kernels: a batched (K x C) @ (C x N)
    product and its two backward products."""
    if interpret:
        return _INTERPRETED
    wide = _wide(dtype)
    k = class_tile(K, 32 if wide else 64)
    c = _fit(C, 32 if wide else 64)
    n = _fit(N, 32 if dtype == torch.float64 else (64 if wide else 128))
    return Blocks(k, c, n, num_warps=4, num_stages=3 if not wide else 2)


@dataclass(frozen=True)
class ProjectBlocks:
    """Tile sizes of the projection kernels: images (b), rows of A (j) and
    channels (c)."""

    b: int
    j: int
    c: int
    num_warps: int = 4


# Elements of the (images x rows x channels) broadcast product a program
# holds at once: 64 per thread at 4 warps.
_PROJECT_PRODUCT = 8192


def project_blocks(
    B: int, C: int, dtype: torch.dtype, interpret: bool, whole_batch: bool = False
) -> ProjectBlocks:
    """Tiles for the projection's weight streams (not ``tl.dot`` products,
    so no 16-element minimum). The forward's image tile is at most 16 (more
    images take more programs, each re-reading its rows of A); the
    backward's covers the whole batch (``whole_batch``), since every dA
    element sums over all images.

    Under the interpreter: 16 rows and 16 channels, and at most 2 images in
    the forward, so that small tests cross blocks on every axis.
    """
    images = _pow2_at_least(B)
    if interpret:
        return ProjectBlocks(images if whole_batch else min(images, 2), 16, 16, num_warps=1)
    b = images if whole_batch else min(images, 16)
    c = max(16, min(128 if dtype != torch.float64 else 64, _PROJECT_PRODUCT // (b * 4)))
    c = min(c, max(16, _pow2_at_least(C)))
    j = max(1, min(64, _PROJECT_PRODUCT // (b * c)))
    return ProjectBlocks(b, j, c, num_warps=4)


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sums run in float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(dtype: torch.dtype) -> str:
    """float32 products in IEEE float32 rather than TF32: TF32 keeps 10
    mantissa bits, far outside the float32 tolerance the ops promise."""
    return "ieee" if _wide(dtype) else "tf32"
