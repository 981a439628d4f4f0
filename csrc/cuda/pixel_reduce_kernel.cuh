// Products that reduce over pixels into a (K, C) matrix per image:
// class_pool's class features f = (p / N) x^T, CAC's centre sums P x^T (with
// the class masses sum_n P in the same pass), dynamic_classify's weight
// gradient dw = dy x^T, the cosine classifier's dv = (dy / r) x^T and the
// guide-weight gradients dWg = dgt x^T.
//
// Each block owns a (class tile, channel tile) of the output for one image
// and one contiguous split of its pixels, and writes its sum, in the
// accumulation type, to its own slot of `partial` (B * splits, K, C); the
// host sums the slots with an ATen reduction. No atomics, so every run is
// bitwise identical on a given GPU.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "softmax_tile.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

// How a pixel reduction forms its (class, pixel) operand A from `a` (B, K, N)
// and a per-pixel array `col` (B, N) in the accumulation type.
enum class PixelWeights {
  kAsIs,          // A = a
  kSoftmax,       // A = T(exp(a - col) * scale): a the guide logits, col their log-sum-exp
  kColumnScaled,  // A = T(a * col): col a per-pixel factor, 1 / max(|x_n|, eps)
};

// partial[b * splits + s][k][c] = sum over n in split s of A(b, k, n) x[b, c, n],
// A as W says. With row_partial, the blocks of the first channel tile also
// write sum over the split of A(b, k, n) (as rounded to T, the operand the
// product used) to row_partial[b * splits + s][k]. Grid: ceil(C/TN) *
// ceil(K/TM) * B * splits blocks, channel tiles fastest.
template <class T, PixelWeights W>
__global__ void __launch_bounds__(kThreads, 2)
    pixel_reduce_kernel(const T* __restrict__ x, const T* __restrict__ a,
                        const acc_t<T>* __restrict__ col, acc_t<T> scale,
                        acc_t<T>* __restrict__ partial, acc_t<T>* __restrict__ row_partial, int C,
                        int K, int64_t N, int64_t split_len, int splits) {
  using A_t = acc_t<T>;
  constexpr int TM = Tiles<T>::M, TN = Tiles<T>::N, TK = Tiles<T>::K;
  __shared__ SharedTile<T, TM, TK> As;  // classes x pixels
  __shared__ SharedTile<T, TN, TK> Bs;  // channels x pixels, read as its transpose
  __shared__ SharedTile<A_t, TM, TN> Cs;

  const int c_tiles = (C + TN - 1) / TN, k_tiles = (K + TM - 1) / TM;
  const int c0 = static_cast<int>(blockIdx.x % c_tiles) * TN;
  const int k0 = static_cast<int>((blockIdx.x / c_tiles) % k_tiles) * TM;
  const int64_t z = blockIdx.x / (static_cast<int64_t>(c_tiles) * k_tiles);
  const int64_t b = z / splits;
  const int64_t start = (z % splits) * split_len;
  const int64_t stop = std::min(N, start + split_len);
  const int cv = std::min(TN, C - c0), kv = std::min(TM, K - k0);
  const T* xb = x + (b * C + c0) * N;
  const T* ab = a + (b * K + k0) * N;
  const A_t* cb = W == PixelWeights::kAsIs ? nullptr : col + b * N;
  // The row sums: thread i < kv sums row i of every A tile.
  const bool row_sums = row_partial != nullptr && c0 == 0 && static_cast<int>(threadIdx.x) < kv;
  A_t row_sum = A_t(0);

  TileAccumulator<T, TM, TN> acc;
  acc.zero();
  for (int64_t n0 = start; n0 < stop; n0 += TK) {
    const int nv = static_cast<int>(std::min<int64_t>(TK, stop - n0));
    if constexpr (W == PixelWeights::kSoftmax) {
      load_softmax_tile<TM, TK>(As.data, As.ld, ab + n0, N, cb + n0, scale, kv, nv);
    } else if constexpr (W == PixelWeights::kColumnScaled) {
      load_column_scaled_tile<TM, TK>(As.data, As.ld, ab + n0, N, cb + n0, kv, nv);
    } else {
      load_tile<TM, TK>(As.data, As.ld, ab + n0, N, kv, nv);
    }
    load_tile<TN, TK>(Bs.data, Bs.ld, xb + n0, N, cv, nv);
    __syncthreads();
    if (row_sums) {
      for (int j = 0; j < nv; ++j) row_sum += to_acc(As.data[threadIdx.x * As.ld + j]);
    }
    acc.template mma<TK, false, true>(As.data, As.ld, Bs.data, Bs.ld);
    __syncthreads();
  }
  if (row_sums) row_partial[z * K + k0 + threadIdx.x] = row_sum;
  acc.store(Cs.data, Cs.ld);
  __syncthreads();
  A_t* out = partial + (z * K + k0) * C + c0;
  for (int e = threadIdx.x; e < TM * TN; e += kThreads) {
    const int i = e / TN, j = e % TN;
    if (i < kv && j < cv) out[static_cast<int64_t>(i) * C + j] = Cs.data[i * Cs.ld + j];
  }
}

// Returns the partial sums (B, splits, K, C) in the accumulation type of
// sum_n A(b, k, n) x[b, c, n]; a is (B, K, N) contiguous (the guide logits
// with kSoftmax, else the multiplier itself), col (B, N) unless W is kAsIs.
// With row_sums, *row_sums becomes the partial sums (B, splits, K) of A's rows.
template <class T, PixelWeights W>
at::Tensor launch_pixel_reduce(const at::Tensor& x, const at::Tensor& a, const at::Tensor& col,
                               acc_t<T> scale, at::Tensor* row_sums = nullptr) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = a.size(1);
  const int64_t tiles = ceil_div(C, Tiles<T>::N) * ceil_div(K, Tiles<T>::M);
  const int splits = pixel_splits(B * tiles, N, Tiles<T>::K, multiprocessor_count(x));
  // Splits cover whole reduction steps, so only the last one is ragged.
  const int64_t split_len = ceil_div(ceil_div(N, splits), Tiles<T>::K) * Tiles<T>::K;
  const auto acc_options = x.options().dtype(acc_type(x.scalar_type()));
  at::Tensor partial = at::empty({B, splits, K, C}, acc_options);
  if (row_sums != nullptr) *row_sums = at::empty({B, splits, K}, acc_options);
  const int64_t blocks = checked_blocks(B * splits * tiles, x);
  auto* kernel = &pixel_reduce_kernel<T, W>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), x.const_data_ptr<T>(), a.const_data_ptr<T>(),
                 W == PixelWeights::kAsIs ? nullptr : col.const_data_ptr<acc_t<T>>(), scale,
                 partial.mutable_data_ptr<acc_t<T>>(),
                 row_sums != nullptr ? row_sums->mutable_data_ptr<acc_t<T>>() : nullptr,
                 checked_int(C, "channels"), checked_int(K, "classes"), N, split_len, splits);
  return partial;
}

}  // namespace condnet::cuda
