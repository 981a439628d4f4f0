// The pooling weights of class_pool, formed tile by tile from the stored
// guide logits and the per-pixel log-sum-exp, so that the (B, K, N) softmax
// map never exists in device memory.
#pragma once

#include <cstdint>

#include "tile_mma.cuh"

namespace condnet::cuda {

// dst[r][c] = T(exp(g[r * ldg + c] - lse[c]) * scale) for r < rows, c < cols,
// zero elsewhere: rows are classes, columns pixels. With scale = 1/N this is
// the reference's (softmax(g) / N).to(x.dtype).
template <int ROWS, int COLS, class T>
__device__ __forceinline__ void load_softmax_tile(T* dst, int ldd, const T* __restrict__ g,
                                                  int64_t ldg, const acc_t<T>* __restrict__ lse,
                                                  acc_t<T> scale, int rows, int cols) {
  for (int e = threadIdx.x; e < ROWS * COLS; e += kThreads) {
    const int r = e / COLS, c = e % COLS;
    T v = T(0);
    if (r < rows && c < cols) v = static_cast<T>(exp_acc(to_acc(g[r * ldg + c]) - lse[c]) * scale);
    dst[r * ldd + c] = v;
  }
}

// Online log-sum-exp over classes for one pixel column: folds the logits
// v[0], v[ld], ..., v[(rows-1) * ld] into the running (max, sum) pair, with
// one rescale of the old sum per call.
template <class A_t, class V>
__device__ __forceinline__ void fold_logsumexp(A_t& max, A_t& sum, const V* v, int64_t ld,
                                               int rows) {
  A_t next = max;
  for (int r = 0; r < rows; ++r) next = fmax(next, static_cast<A_t>(v[r * ld]));
  A_t total = sum * exp_acc(max - next);  // max == -inf on the first call: 0 * 0
  for (int r = 0; r < rows; ++r) total += exp_acc(static_cast<A_t>(v[r * ld]) - next);
  max = next;
  sum = total;
}

}  // namespace condnet::cuda
