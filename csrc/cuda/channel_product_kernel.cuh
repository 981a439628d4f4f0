// Products with one output per (channel, pixel), reducing over classes: the
// input gradients
//
//     dynamic_classify:      dx = w^T dy
//     class_pool:            dx = Wg^T dgt + df^T (p / N)
//     the whole classifier:  dx = Wg^T dgt + df^T (p / N) + w^T dy
//
// so that the classifier's backward writes dx once.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "softmax_tile.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

// out[b][c][n] = sum_k a[b][k][c] bp[b][k][n], plus, with SOFTMAX_TERM,
// sum_k s[b][k][c] T(exp(g[b][k][n] - lse[b][n]) * scale), plus, with
// CLASSIFIER_TERM, sum_k' w[b][k'][c] dy[b][k'][n] over K2 classes. a's
// images are a_batch_stride apart (0: one matrix for all). Grid: ceil(N/TN)
// * ceil(C/TM) * B blocks, pixel tiles fastest.
template <class T, bool SOFTMAX_TERM, bool CLASSIFIER_TERM>
__global__ void __launch_bounds__(kThreads, 2)
    channel_product_kernel(const T* __restrict__ a, int64_t a_batch_stride,
                           const T* __restrict__ bp, const T* __restrict__ s,
                           const T* __restrict__ g, const acc_t<T>* __restrict__ lse,
                           acc_t<T> scale, const T* __restrict__ w, const T* __restrict__ dy,
                           int K2, T* __restrict__ out, int C, int K, int64_t N) {
  using A_t = acc_t<T>;
  constexpr int TM = Tiles<T>::M, TN = Tiles<T>::N, TK = Tiles<T>::K;
  __shared__ SharedTile<T, TK, TM> As;  // classes x channels, read as its transpose
  __shared__ SharedTile<T, TK, TN> Bs;  // classes x pixels
  __shared__ SharedTile<A_t, TM, TN> Cs;

  const int64_t n_tiles = (N + TN - 1) / TN;
  const int c_tiles = (C + TM - 1) / TM;
  const int64_t n0 = (blockIdx.x % n_tiles) * TN;
  const int c0 = static_cast<int>((blockIdx.x / n_tiles) % c_tiles) * TM;
  const int64_t b = blockIdx.x / (n_tiles * c_tiles);
  const int nv = static_cast<int>(std::min<int64_t>(TN, N - n0));
  const int cv = std::min(TM, C - c0);
  const T* ab = a + b * a_batch_stride + c0;
  const T* bpb = bp + b * K * N + n0;

  TileAccumulator<T, TM, TN> acc;
  acc.zero();
  for (int k0 = 0; k0 < K; k0 += TK) {
    const int kv = std::min(TK, K - k0);
    load_tile<TK, TM>(As.data, As.ld, ab + static_cast<int64_t>(k0) * C, C, kv, cv);
    load_tile<TK, TN>(Bs.data, Bs.ld, bpb + static_cast<int64_t>(k0) * N, N, kv, nv);
    __syncthreads();
    acc.template mma<TK, true, false>(As.data, As.ld, Bs.data, Bs.ld);
    __syncthreads();
    if constexpr (SOFTMAX_TERM) {
      load_tile<TK, TM>(As.data, As.ld, s + (b * K + k0) * C + c0, C, kv, cv);
      load_softmax_tile<TK, TN>(Bs.data, Bs.ld, g + (b * K + k0) * N + n0, N, lse + b * N + n0,
                                scale, kv, nv);
      __syncthreads();
      acc.template mma<TK, true, false>(As.data, As.ld, Bs.data, Bs.ld);
      __syncthreads();
    }
  }
  if constexpr (CLASSIFIER_TERM) {
    const T* wb = w + b * K2 * C + c0;
    const T* dyb = dy + b * K2 * N + n0;
    for (int k0 = 0; k0 < K2; k0 += TK) {
      const int kv = std::min(TK, K2 - k0);
      load_tile<TK, TM>(As.data, As.ld, wb + static_cast<int64_t>(k0) * C, C, kv, cv);
      load_tile<TK, TN>(Bs.data, Bs.ld, dyb + static_cast<int64_t>(k0) * N, N, kv, nv);
      __syncthreads();
      acc.template mma<TK, true, false>(As.data, As.ld, Bs.data, Bs.ld);
      __syncthreads();
    }
  }
  acc.store(Cs.data, Cs.ld);
  __syncthreads();
  T* ob = out + (b * C + c0) * N + n0;
  for (int e = threadIdx.x; e < TM * TN; e += kThreads) {
    const int i = e / TN, j = e % TN;
    if (i < cv && j < nv)
      ob[static_cast<int64_t>(i) * N + j] = static_cast<T>(Cs.data[i * Cs.ld + j]);
  }
}

// out (B, C, N) = a[b]^T bp[b] (+ s[b]^T (p / N) with SOFTMAX_TERM, p from
// g and lse) (+ w[b]^T dy[b] with CLASSIFIER_TERM). a is (K, C) with
// a_batch_stride 0 or (B, K, C) with K * C; bp, g (B, K, N), s (B, K, C),
// lse (B, N), w (B, K2, C), dy (B, K2, N); all contiguous.
template <class T, bool SOFTMAX_TERM, bool CLASSIFIER_TERM>
void launch_channel_product(const at::Tensor& a, int64_t a_batch_stride, const at::Tensor& bp,
                            const at::Tensor& s, const at::Tensor& g, const at::Tensor& lse,
                            const at::Tensor& w, const at::Tensor& dy, const at::Tensor& out) {
  const int64_t B = out.size(0), C = out.size(1), N = out.size(2), K = bp.size(1);
  const int64_t blocks =
      checked_blocks(B * ceil_div(C, Tiles<T>::M) * ceil_div(N, Tiles<T>::N), out);
  auto* kernel = &channel_product_kernel<T, SOFTMAX_TERM, CLASSIFIER_TERM>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), a.const_data_ptr<T>(), a_batch_stride,
                 bp.const_data_ptr<T>(), SOFTMAX_TERM ? s.const_data_ptr<T>() : nullptr,
                 SOFTMAX_TERM ? g.const_data_ptr<T>() : nullptr,
                 SOFTMAX_TERM ? lse.const_data_ptr<acc_t<T>>() : nullptr,
                 static_cast<acc_t<T>>(1.0 / static_cast<double>(N)),
                 CLASSIFIER_TERM ? w.const_data_ptr<T>() : nullptr,
                 CLASSIFIER_TERM ? dy.const_data_ptr<T>() : nullptr,
                 CLASSIFIER_TERM ? checked_int(w.size(1), "classes") : 0, out.mutable_data_ptr<T>(),
                 checked_int(C, "channels"), checked_int(K, "classes"), N);
}

}  // namespace condnet::cuda
