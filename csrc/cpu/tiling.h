// How the CPU kernels split the pixels of one image into work.
//
// Work items are (image, chunk) pairs run under at::parallel_for; a chunk is a
// fixed range of pixels walked in tiles of kTile pixels, and each tile of x is
// read once and used for every product that needs it while it is in cache.
// The chunk count depends on N only, never on the thread count, and partial
// reductions are summed in chunk order, so repeated runs are bitwise
// identical. (Across thread counts the BLAS may still round differently.)
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>

#include "../kernel_host.h"

namespace condnet::cpu {

constexpr int64_t kTile = 256;  // pixels per tile: C * kTile floats stay in L2
constexpr int64_t kPixelsPerChunk = 1024;
constexpr int64_t kMaxChunks = 16;

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
// covering pixels [start, stop), under at::parallel_for. OpenMP workers start
// with fresh thread-local state (grad mode, dispatch keys): each gets the
// caller's, which includes the calling kernel's KernelScope.
template <class Body>
void for_each_chunk(int64_t B, const Chunks& chunks, const Body& body) {
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, B * chunks.count, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard caller_guard(caller_state);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks.count, c = item % chunks.count;
      const int64_t start = c * chunks.length;
      body(b, c, start, std::min(chunks.pixels, start + chunks.length));
    }
  });
}

}  // namespace condnet::cpu
