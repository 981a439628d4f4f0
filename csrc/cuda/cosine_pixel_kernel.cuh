// The per-pixel factors of the cosine classifier's dx,
//
//     y[k, n] = <v[k], x_n> / r_n,   r_n = max(|x_n|, eps)
//     dx_n = sum_k v[k] dy[k, n] / r_n  -  x_n * coef_n
//     coef_n = [|x_n| >= eps] * (sum_k dy[k, n] y[k, n]) / (r_n |x_n|)
//
// (the indicator is clamp_min's gradient mask; with eps = 0 a zero pixel
// gives NaN, as the released division does). One thread per pixel reads dy
// and y once; the channel product (channel_product_kernel.cuh) and the
// weight gradient (pixel_reduce_kernel.cuh) then read inv_norm = 1 / r_n and
// coef from this (B, N) pair instead of redoing the sum over classes for
// every channel tile.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "launch.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

// Grid: ceil(B * N / kThreads) blocks.
template <class T>
__global__ void __launch_bounds__(kThreads)
    cosine_pixel_kernel(const T* __restrict__ dy, const T* __restrict__ y,
                        const acc_t<T>* __restrict__ norm, acc_t<T> eps,
                        acc_t<T>* __restrict__ inv_norm, acc_t<T>* __restrict__ coef, int K,
                        int64_t N, int64_t pixels) {
  using A_t = acc_t<T>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= pixels) return;
  const int64_t b = i / N, n = i % N;
  const T* dyb = dy + b * K * N + n;
  const T* yb = y + b * K * N + n;
  A_t dot = A_t(0);
  for (int k = 0; k < K; ++k) dot += to_acc(dyb[static_cast<int64_t>(k) * N]) * to_acc(yb[k * N]);
  const A_t length = norm[i];
  const A_t r = fmax(length, eps);
  inv_norm[i] = A_t(1) / r;
  coef[i] = length >= eps ? dot / (r * length) : A_t(0);
}

// inv_norm and coef (B, N), in the accumulation type, from dy and the logits
// y (B, K, N) and the pixel norms (B, N); all contiguous.
template <class T>
void launch_cosine_pixel(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& norm,
                         double eps, const at::Tensor& inv_norm, const at::Tensor& coef) {
  const int64_t B = y.size(0), K = y.size(1), N = y.size(2);
  const int64_t blocks = checked_blocks(ceil_div(B * N, kThreads), y);
  auto* kernel = &cosine_pixel_kernel<T>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), dy.const_data_ptr<T>(), y.const_data_ptr<T>(),
                 norm.const_data_ptr<acc_t<T>>(), static_cast<acc_t<T>>(eps),
                 inv_norm.mutable_data_ptr<acc_t<T>>(), coef.mutable_data_ptr<acc_t<T>>(),
                 checked_int(K, "classes"), N, B * N);
}

}  // namespace condnet::cuda
