// How the CPU kernels split the pixels of one image into work.
//
// Work items are (image, chunk) pairs run under at::parallel_for; a chunk is a
// fixed range of pixels walked in tiles of kTile pixels, and each tile of x is
// read once and used for every product that needs it while it is in cache.
// The chunk count depends on N only, never on the thread count, and partial
// reductions are summed in chunk order, so results are bit-for-bit
// reproducible on any machine and any number of threads.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <cmath>

namespace condnet::cpu {

constexpr int64_t kTile = 128;          // pixels per tile: C * kTile floats stay in L2
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

// Numerically stable softmax over the rows of a contiguous (K, T) block,
// i.e. over classes, independently for each of the T pixel columns.
template <typename acc_t>
void softmax_over_rows(acc_t* p, int64_t K, int64_t T, acc_t* col_max, acc_t* col_sum) {
  std::copy(p, p + T, col_max);
  for (int64_t k = 1; k < K; ++k) {
    const acc_t* row = p + k * T;
    for (int64_t t = 0; t < T; ++t) col_max[t] = std::max(col_max[t], row[t]);
  }
  std::fill(col_sum, col_sum + T, acc_t(0));
  for (int64_t k = 0; k < K; ++k) {
    acc_t* row = p + k * T;
    for (int64_t t = 0; t < T; ++t) {
      row[t] = std::exp(row[t] - col_max[t]);
      col_sum[t] += row[t];
    }
  }
  for (int64_t t = 0; t < T; ++t) col_sum[t] = acc_t(1) / col_sum[t];
  for (int64_t k = 0; k < K; ++k) {
    acc_t* row = p + k * T;
    for (int64_t t = 0; t < T; ++t) row[t] *= col_sum[t];
  }
}

// Sums partials of shape (B, chunks, ...) over the chunk dimension in chunk
// order (deterministic), returning (B, ...).
inline at::Tensor sum_chunks(const at::Tensor& partials) {
  at::Tensor total = partials.select(1, 0).clone();
  for (int64_t c = 1; c < partials.size(1); ++c) total.add_(partials.select(1, c));
  return total;
}

}  // namespace condnet::cpu
