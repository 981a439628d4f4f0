// Products with one output per (channel, pixel), reducing over classes: the
// input gradients
//
//     dynamic_classify:      dx = w^T dy
//     class_pool:            dx = Wg^T dgt + df^T (p / N)
//     the whole classifier:  dx = Wg^T dgt + df^T (p / N) + w^T dy
//     cosine_classify:       dx = v^T (dy / r) - x * coef
//     CAC's classifier:      dx = Wg^T ds + dM^T P + v^T (dy / r) - x * coef
//
// (r = max(|x_n|, eps), coef the per-pixel norm term, cosine_pixel_kernel.cuh)
// so that each classifier's backward writes dx once.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "launch.cuh"
#include "softmax_tile.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

// out[b][c][n] = sum_k a[b][k][c] bp[b][k][n] over K classes (K may be 0),
// plus, with SOFTMAX_TERM, sum_k s[b][k][c] T(exp(g[b][k][n] - lse[b][n]) *
// scale), plus, with CLASSIFIER_TERM, sum_k' w[b][k'][c] dy[b][k'][n] over K2
// classes. With COSINE (and CLASSIFIER_TERM) dy is read as T(dy * inv_norm[n])
// and x[b][c][n] * coef[b][n] is subtracted at the end. a's images are
// a_batch_stride apart (0: one matrix for all). Grid: ceil(N/TN) * ceil(C/TM)
// * B blocks, pixel tiles fastest.
template <class T, bool SOFTMAX_TERM, bool CLASSIFIER_TERM, bool COSINE>
__global__ void __launch_bounds__(kThreads, 2)
    channel_product_kernel(const T* __restrict__ a, int64_t a_batch_stride,
                           const T* __restrict__ bp, const T* __restrict__ s,
                           const T* __restrict__ g, const acc_t<T>* __restrict__ lse,
                           acc_t<T> scale, const T* __restrict__ w, const T* __restrict__ dy,
                           int K2, const acc_t<T>* __restrict__ inv_norm,
                           const acc_t<T>* __restrict__ coef, const T* __restrict__ x,
                           T* __restrict__ out, int C, int K, int64_t N) {
  static_assert(CLASSIFIER_TERM || !COSINE, "the cosine term is a classifier term");
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
      if constexpr (COSINE) {
        load_column_scaled_tile<TK, TN>(Bs.data, Bs.ld, dyb + static_cast<int64_t>(k0) * N, N,
                                        inv_norm + b * N + n0, kv, nv);
      } else {
        load_tile<TK, TN>(Bs.data, Bs.ld, dyb + static_cast<int64_t>(k0) * N, N, kv, nv);
      }
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
    if (i < cv && j < nv) {
      A_t v = Cs.data[i * Cs.ld + j];
      if constexpr (COSINE) {
        v -= to_acc(x[(b * C + c0 + i) * N + n0 + j]) * coef[b * N + n0 + j];
      }
      ob[static_cast<int64_t>(i) * N + j] = static_cast<T>(v);
    }
  }
}

// The terms of a channel product; a term's tensors stay undefined where it
// is absent. All contiguous.
struct ChannelTerms {
  // a^T bp: a (K, C) with a_batch_stride 0 or (B, K, C) with K * C; bp (B, K, N).
  at::Tensor a, bp;
  int64_t a_batch_stride = 0;
  // s^T p, p = T(exp(g - lse) * p_scale): s (B, K, C), g (B, K, N), lse (B, N).
  at::Tensor s, g, lse;
  double p_scale = 1.0;
  // w^T dy: w (B, K2, C), dy (B, K2, N). The cosine classifier's form adds
  // inv_norm and coef (B, N, accumulation type) and x (B, C, N):
  // w^T T(dy * inv_norm) - x * coef.
  at::Tensor w, dy, inv_norm, coef, x;
};

// out (B, C, N) = the terms' sum; the template flags say which of s, w and
// inv_norm the terms have (a and bp may be undefined: no first term).
template <class T, bool SOFTMAX_TERM, bool CLASSIFIER_TERM, bool COSINE>
void launch_channel_product(const ChannelTerms& t, const at::Tensor& out) {
  const int64_t B = out.size(0), C = out.size(1), N = out.size(2);
  const int64_t K = t.bp.defined() ? t.bp.size(1) : 0;
  const int64_t blocks =
      checked_blocks(B * ceil_div(C, Tiles<T>::M) * ceil_div(N, Tiles<T>::N), out);
  auto ptr = [](const at::Tensor& v) { return v.defined() ? v.const_data_ptr<T>() : nullptr; };
  auto acc_ptr = [](const at::Tensor& v) {
    return v.defined() ? v.const_data_ptr<acc_t<T>>() : nullptr;
  };
  auto* kernel = &channel_product_kernel<T, SOFTMAX_TERM, CLASSIFIER_TERM, COSINE>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), ptr(t.a), t.a_batch_stride, ptr(t.bp), ptr(t.s),
                 ptr(t.g), acc_ptr(t.lse), static_cast<acc_t<T>>(t.p_scale), ptr(t.w), ptr(t.dy),
                 t.w.defined() ? checked_int(t.w.size(1), "classes") : 0, acc_ptr(t.inv_norm),
                 acc_ptr(t.coef), ptr(t.x), out.mutable_data_ptr<T>(), checked_int(C, "channels"),
                 checked_int(K, "classes"), N);
}

// launch_channel_product with SOFTMAX_TERM and CLASSIFIER_TERM read from
// which terms t has; COSINE: its classifier term is the cosine classifier's.
template <class T, bool COSINE>
void launch_channel_product_of(const ChannelTerms& t, const at::Tensor& out) {
  const bool softmax = t.s.defined(), classifier = t.w.defined();
  if (softmax && classifier) return launch_channel_product<T, true, true, COSINE>(t, out);
  if (softmax) return launch_channel_product<T, true, false, false>(t, out);
  if (classifier) return launch_channel_product<T, false, true, COSINE>(t, out);
  launch_channel_product<T, false, false, false>(t, out);
}

}  // namespace condnet::cuda
