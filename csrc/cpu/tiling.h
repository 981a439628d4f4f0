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

#include <algorithm>

#include "../kernel_host.h"

namespace condnet::cpu {

constexpr int64_t kTile = 256;  // pixels per tile: C * kTile floats stay in L2
constexpr int64_t kPixelsPerChunk = 1024;
constexpr int64_t kMaxChunks = 16;

struct Chunks {
  int64_t count;
  int64_t length;  // pixels per chunk, a multiple of kTile; the last may be shorter

  explicit Chunks(int64_t N) {
    int64_t want = std::clamp<int64_t>((N + kPixelsPerChunk - 1) / kPixelsPerChunk, 1, kMaxChunks);
    length = ((N + want - 1) / want + kTile - 1) / kTile * kTile;
    count = (N + length - 1) / length;
  }
};

}  // namespace condnet::cpu
