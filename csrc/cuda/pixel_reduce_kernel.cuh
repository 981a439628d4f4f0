// Products that reduce over pixels into a (K, C) matrix per image:
// class_pool's class features f = (p / N) x^T, dynamic_classify's weight
// gradient dw = dy x^T and class_pool's guide-weight gradient dWg = dgt x^T.
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

// partial[b * splits + s][k][c] = sum over n in split s of A(b, k, n) x[b, c, n].
// A is `a` (B, K, N) or, with SOFTMAX, T(exp(a - lse) * scale), a being the
// guide logits. Grid: ceil(C/TN) * ceil(K/TM) * B * splits blocks, channel
// tiles fastest.
template <class T, bool SOFTMAX>
__global__ void __launch_bounds__(kThreads, 2)
    pixel_reduce_kernel(const T* __restrict__ x, const T* __restrict__ a,
                        const acc_t<T>* __restrict__ lse, acc_t<T> scale,
                        acc_t<T>* __restrict__ partial, int C, int K, int64_t N, int64_t split_len,
                        int splits) {
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
  const A_t* lb = SOFTMAX ? lse + b * N : nullptr;

  TileAccumulator<T, TM, TN> acc;
  acc.zero();
  for (int64_t n0 = start; n0 < stop; n0 += TK) {
    const int nv = static_cast<int>(std::min<int64_t>(TK, stop - n0));
    if constexpr (SOFTMAX) {
      load_softmax_tile<TM, TK>(As.data, As.ld, ab + n0, N, lb + n0, scale, kv, nv);
    } else {
      load_tile<TM, TK>(As.data, As.ld, ab + n0, N, kv, nv);
    }
    load_tile<TN, TK>(Bs.data, Bs.ld, xb + n0, N, cv, nv);
    __syncthreads();
    acc.template mma<TK, false, true>(As.data, As.ld, Bs.data, Bs.ld);
    __syncthreads();
  }
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
// with SOFTMAX, else the multiplier itself).
template <class T, bool SOFTMAX>
at::Tensor launch_pixel_reduce(const at::Tensor& x, const at::Tensor& a, const at::Tensor& lse,
                               acc_t<T> scale) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = a.size(1);
  const int64_t tiles = ceil_div(C, Tiles<T>::N) * ceil_div(K, Tiles<T>::M);
  const int splits = pixel_splits(B * tiles, N, Tiles<T>::K, multiprocessor_count(x));
  // Splits cover whole reduction steps, so only the last one is ragged.
  const int64_t split_len = ceil_div(ceil_div(N, splits), Tiles<T>::K) * Tiles<T>::K;
  at::Tensor partial = at::empty({B, splits, K, C}, x.options().dtype(acc_type(x.scalar_type())));
  const int64_t blocks = checked_blocks(B * splits * tiles, x);
  auto* kernel = &pixel_reduce_kernel<T, SOFTMAX>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), x.const_data_ptr<T>(), a.const_data_ptr<T>(),
                 SOFTMAX ? lse.const_data_ptr<acc_t<T>>() : nullptr, scale,
                 partial.mutable_data_ptr<acc_t<T>>(), checked_int(C, "channels"),
                 checked_int(K, "classes"), N, split_len, splits);
  return partial;
}

}  // namespace condnet::cuda
