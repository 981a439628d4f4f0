// How the CPU kernels split the pixels of one image into work.
//
// Work items are (image, chunk) pairs run under at::parallel_for; a chunk is a
// fixed range of pixels walked in tiles (kTile pixels, twice that for 16-bit
// products), and each tile of x is read once and used for every product that
// needs it while it is in cache.
// The chunk count depends on N only, never on the thread count, and partial
// reductions are summed in chunk order, so repeated runs are bitwise
// identical. (Across thread counts the BLAS may still round differently.)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <atomic>

#include "../kernel_host.h"

namespace condnet::cpu {

constexpr int64_t kTile = 256;  // pixels per tile: C * kTile floats stay in L2
constexpr int64_t kPixelsPerChunk = 1024;
constexpr int64_t kMaxChunks = 16;

// Pixels per tile for products in `dtype`: 16-bit tiles are twice as wide,
// the same bytes as a float32 tile; each GEMM then does twice the work per
// call (measured at C=512, K=150 with avx512_bf16: 160 -> 185 GFLOP/s for
// the accumulating products, 175 -> 180 for the others).
inline int64_t tile_pixels(at::ScalarType dtype) {
  return at::elementSize(dtype) == 2 ? 2 * kTile : kTile;
}

struct Chunks {
  int64_t count;
  int64_t length;  // pixels per chunk, a multiple of kTile; the last may be shorter
  int64_t pixels;  // N

  explicit Chunks(int64_t N) : pixels(N) {
    int64_t want = std::clamp<int64_t>((N + kPixelsPerChunk - 1) / kPixelsPerChunk, 1, kMaxChunks);
    length = ((N + want - 1) / want + kTile - 1) / kTile * kTile;
    count = (N + length - 1) / length;
  }
};

// Runs body(b, chunk, start, stop) for every (image, chunk) pair, chunk
// covering pixels [start, stop), on at::parallel_for's threads. Each thread
// takes the next unclaimed item until none is left, rather than a fixed
// share: on a machine shared with other jobs a thread that loses its core
// for a while then delays the call by the item it holds, not by its whole
// share. Which thread runs an item changes no result (each item writes its
// own partial sums). OpenMP workers start with fresh thread-local state
// (grad mode, dispatch keys): each gets the caller's, which includes the
// calling kernel's KernelScope.
template <class Body>
void for_each_chunk(int64_t B, const Chunks& chunks, const Body& body) {
  const int64_t items = B * chunks.count;
  std::atomic<int64_t> next{0};
  const at::ThreadLocalState caller_state;
  const int64_t workers = std::clamp<int64_t>(at::get_num_threads(), 1, items);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    const at::ThreadLocalStateGuard caller_guard(caller_state);
    for (int64_t item = next++; item < items; item = next++) {
      const int64_t b = item / chunks.count, c = item % chunks.count;
      const int64_t start = c * chunks.length;
      body(b, c, start, std::min(chunks.pixels, start + chunks.length));
    }
  });
}

}  // namespace condnet::cpu
