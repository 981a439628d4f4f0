// Per-pixel logits out[b] = W[b] x[b] + bias[b]: class_pool's and CAC's
// guide logits (one W for all images, or one per image) and
// dynamic_classify's output (a W per image); and the cosine classifier's
// out[b] = W[b] x[b] / max(|x_n|, eps), the norm of each pixel taken in the
// same pass over the channels as the product.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "launch.cuh"
#include "softmax_tile.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

// One block per (image, tile of Tiles<T>::N pixels); it walks every class
// tile, so with WITH_LSE it also returns each pixel's log-sum-exp over all
// classes (lse, B x N, in the accumulation type), computed from the logits
// as stored in T, exactly what the reference's softmax sees. With COSINE
// (and no bias) the first class tile's product also sums each pixel's x^2;
// norm (B x N, accumulation type) gets |x_n| and every logit is divided by
// max(|x_n|, eps) before it is rounded to T.
// Grid: B * ceil(N / Tiles<T>::N) blocks, pixel tiles fastest.
template <class T, bool WITH_LSE, bool COSINE = false>
__global__ void __launch_bounds__(kThreads, 2)
    logits_kernel(const T* __restrict__ x, const T* __restrict__ weight,
                  int64_t weight_batch_stride, const T* __restrict__ bias,
                  int64_t bias_batch_stride, T* __restrict__ out, acc_t<T>* __restrict__ lse,
                  acc_t<T>* __restrict__ norm, acc_t<T> eps, int C, int K, int64_t N) {
  static_assert(!(WITH_LSE && COSINE), "the cosine logits are not a softmax's input here");
  using A_t = acc_t<T>;
  constexpr int TM = Tiles<T>::M, TN = Tiles<T>::N, TK = Tiles<T>::K;
  __shared__ SharedTile<T, TM, TK> As;
  __shared__ SharedTile<T, TK, TN> Bs;
  __shared__ SharedTile<A_t, TM, TN> Cs;
  __shared__ A_t col_max[TN], col_sum[TN];  // with COSINE, col_max holds max(|x_n|, eps)

  const int64_t tiles = (N + TN - 1) / TN;
  const int64_t b = blockIdx.x / tiles;
  const int64_t n0 = (blockIdx.x % tiles) * TN;
  const int nv = static_cast<int>(std::min<int64_t>(TN, N - n0));
  const T* xb = x + b * C * N + n0;
  const T* wb = weight + b * weight_batch_stride;
  const T* bb = bias == nullptr ? nullptr : bias + b * bias_batch_stride;
  T* ob = out + b * K * N + n0;
  if ((WITH_LSE || COSINE) && threadIdx.x < TN) {
    col_max[threadIdx.x] = -std::numeric_limits<A_t>::infinity();
    col_sum[threadIdx.x] = A_t(0);
  }

  for (int k0 = 0; k0 < K; k0 += TM) {
    const int kv = std::min(TM, K - k0);
    A_t* sumsq = COSINE && k0 == 0 ? col_sum : nullptr;
    product_to_shared(As, Bs, Cs, wb + static_cast<int64_t>(k0) * C, C, kv, xb, N, nv, sumsq);
    if (COSINE && k0 == 0) {
      if (threadIdx.x < nv) {
        const A_t length = sqrt_acc(col_sum[threadIdx.x]);
        norm[b * N + n0 + threadIdx.x] = length;
        col_max[threadIdx.x] = fmax(length, eps);
      }
      __syncthreads();
    }
    for (int e = threadIdx.x; e < TM * TN; e += kThreads) {
      const int i = e / TN, j = e % TN;
      if (i < kv && j < nv) {
        A_t v = Cs.data[i * Cs.ld + j];
        if (bb != nullptr) v += to_acc(bb[k0 + i]);
        if constexpr (COSINE) v /= col_max[j];
        const T rounded = static_cast<T>(v);
        ob[static_cast<int64_t>(k0 + i) * N + j] = rounded;
        if (WITH_LSE) Cs.data[i * Cs.ld + j] = to_acc(rounded);
      }
    }
    if constexpr (WITH_LSE) {
      __syncthreads();
      if (threadIdx.x < nv) {
        const int j = threadIdx.x;
        fold_logsumexp(col_max[j], col_sum[j], Cs.data + j, Cs.ld, kv);
      }
    }
    __syncthreads();  // Cs is read until here; the next class tile rewrites it
  }
  if constexpr (WITH_LSE) {
    if (threadIdx.x < nv) {
      lse[b * N + n0 + threadIdx.x] = col_max[threadIdx.x] + log_acc(col_sum[threadIdx.x]);
    }
  }
}

// out (B, K, N) = weight[b] x[b] + bias[b]; x is (B, C, N) contiguous, weight
// (K, C) or (B, K, C) and bias (K) or (B, K) as their batch strides say (0:
// shared by all images), bias may be undefined. With WITH_LSE, lse (B, N).
template <class T, bool WITH_LSE>
void launch_logits(const at::Tensor& x, const at::Tensor& weight, int64_t weight_batch_stride,
                   const at::Tensor& bias, int64_t bias_batch_stride, const at::Tensor& out,
                   const at::Tensor& lse) {
  const int64_t B = x.size(0), N = x.size(2);
  const int64_t blocks = checked_blocks(B * ceil_div(N, Tiles<T>::N), x);
  auto* kernel = &logits_kernel<T, WITH_LSE>;
  CONDNET_LAUNCH(
      kernel, blocks, current_stream(), x.const_data_ptr<T>(), weight.const_data_ptr<T>(),
      weight_batch_stride, bias.defined() ? bias.const_data_ptr<T>() : nullptr, bias_batch_stride,
      out.mutable_data_ptr<T>(), WITH_LSE ? lse.mutable_data_ptr<acc_t<T>>() : nullptr, nullptr,
      acc_t<T>(0), checked_int(x.size(1), "channels"), checked_int(out.size(1), "classes"), N);
}

// The cosine logits out (B, K, N) = weight[b] x[b] / max(|x_n|, eps) and
// norm (B, N) = |x_n| in the accumulation type; x (B, C, N) and weight
// (B, K, C) contiguous.
template <class T>
void launch_cosine_logits(const at::Tensor& x, const at::Tensor& weight, double eps,
                          const at::Tensor& out, const at::Tensor& norm) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = weight.size(1);
  const int64_t blocks = checked_blocks(B * ceil_div(N, Tiles<T>::N), x);
  auto* kernel = &logits_kernel<T, false, true>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), x.const_data_ptr<T>(),
                 weight.const_data_ptr<T>(), K * C, nullptr, 0, out.mutable_data_ptr<T>(), nullptr,
                 norm.mutable_data_ptr<acc_t<T>>(), static_cast<acc_t<T>>(eps),
                 checked_int(C, "channels"), checked_int(K, "classes"), N);
}

}  // namespace condnet::cuda
