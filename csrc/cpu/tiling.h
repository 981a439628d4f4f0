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
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>

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

// The CPU kernels compose ATen ops on tiles; those must run as plain math,
// not be recorded by autograd or recast by an enclosing autocast region.
struct KernelScope {
  at::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

// float for float/half/bfloat16 inputs, double for double.
inline at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Sums partial results over dimension `dim` strictly in index order, so the
// result never depends on how ATen would split a reduction across threads.
inline at::Tensor sum_in_order(const at::Tensor& partials, int64_t dim) {
  if (partials.size(dim) == 0) {
    auto shape = partials.sizes().vec();
    shape.erase(shape.begin() + dim);
    return at::zeros(shape, partials.options());
  }
  at::Tensor total = partials.select(dim, 0).clone();
  for (int64_t i = 1; i < partials.size(dim); ++i) total.add_(partials.select(dim, i));
  return total;
}

}  // namespace condnet::cpu
