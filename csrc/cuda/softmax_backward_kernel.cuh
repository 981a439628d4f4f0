// The backward through a soft-mask pooling and its softmax, per pixel tile:
//
//     dp  = scale * (df x) + h                 (K x pixels, via tensor cores)
//     dgt = dg + p * (dp - sum_k p dp)         p = exp(g - lse)
//
// class_pool: scale = 1/N, no h (f = (p / N) x^T). CAC's context_pool:
// scale = 1, df = dM = d centres / (mass + eps) and h[k] the gradient of the
// class mass (its own and through the centres' division).
//
// dgt (B, K, N) is written in x's dtype, as the gradient of the guide logits
// is in the reference; the channel and pixel-reduce kernels then read it for
// dx and dWg. The per-pixel lse comes back too, for the p terms of dx.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "launch.cuh"
#include "softmax_tile.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

// Grid: B * ceil(N / Tiles<T>::N) blocks, pixel tiles fastest. dg and h
// (B, K) may be null. dgt first holds T(df x) (what the reference rounds it
// to), then dgt itself.
template <class T>
__global__ void __launch_bounds__(kThreads, 2)
    softmax_backward_kernel(const T* __restrict__ x, const T* __restrict__ df,
                            const T* __restrict__ g, const T* __restrict__ dg, acc_t<T> scale,
                            const acc_t<T>* __restrict__ h, T* __restrict__ dgt,
                            acc_t<T>* __restrict__ lse, int C, int K, int64_t N) {
  using A_t = acc_t<T>;
  constexpr int TM = Tiles<T>::M, TN = Tiles<T>::N, TK = Tiles<T>::K;
  __shared__ SharedTile<T, TM, TK> As;
  __shared__ SharedTile<T, TK, TN> Bs;
  __shared__ SharedTile<A_t, TM, TN> Cs;
  __shared__ A_t col_max[TN], col_sum[TN], col_dot[TN];

  const int64_t tiles = (N + TN - 1) / TN;
  const int64_t b = blockIdx.x / tiles;
  const int64_t n0 = (blockIdx.x % tiles) * TN;
  const int nv = static_cast<int>(std::min<int64_t>(TN, N - n0));
  const T* xb = x + b * C * N + n0;
  const T* dfb = df + b * K * C;
  const T* gb = g + b * K * N + n0;
  const T* dgb = dg == nullptr ? nullptr : dg + b * K * N + n0;
  const A_t* hb = h == nullptr ? nullptr : h + b * K;
  T* db = dgt + b * K * N + n0;
  const int j = threadIdx.x;  // the pixel column of the per-column steps
  if (j < TN) {
    col_max[j] = -std::numeric_limits<A_t>::infinity();
    col_sum[j] = A_t(0);
  }

  // 1. T(df x) for every class tile, and the log-sum-exp of g per pixel.
  for (int k0 = 0; k0 < K; k0 += TM) {
    const int kv = std::min(TM, K - k0);
    product_to_shared(As, Bs, Cs, dfb + static_cast<int64_t>(k0) * C, C, kv, xb, N, nv);
    for (int e = threadIdx.x; e < TM * TN; e += kThreads) {
      const int i = e / TN, jj = e % TN;
      if (i < kv && jj < nv) {
        db[static_cast<int64_t>(k0 + i) * N + jj] = static_cast<T>(Cs.data[i * Cs.ld + jj]);
      }
    }
    if (j < nv)
      fold_logsumexp(col_max[j], col_sum[j], gb + static_cast<int64_t>(k0) * N + j, N, kv);
    __syncthreads();  // Cs is read until here; the next class tile rewrites it
  }

  // 2. Per pixel: its lse and sum_k p dp (this block's own writes to dgt are
  // visible after the barrier above).
  if (j < nv) {
    const A_t l = col_max[j] + log_acc(col_sum[j]);
    lse[b * N + n0 + j] = l;
    col_max[j] = l;
    A_t dot = A_t(0);
    for (int k = 0; k < K; ++k) {
      const int64_t at = static_cast<int64_t>(k) * N + j;
      const A_t dp = to_acc(db[at]) * scale + (hb == nullptr ? A_t(0) : hb[k]);
      dot += exp_acc(to_acc(gb[at]) - l) * dp;
    }
    col_dot[j] = dot;
  }
  __syncthreads();

  // 3. dgt = dg + p * (dp - sum_k p dp), over every (class, pixel) of the tile.
  for (int64_t e = threadIdx.x; e < static_cast<int64_t>(K) * TN; e += kThreads) {
    const int jj = static_cast<int>(e % TN);
    if (jj >= nv) continue;
    const int64_t at = (e / TN) * N + jj;
    const A_t p = exp_acc(to_acc(gb[at]) - col_max[jj]);
    const A_t dp = to_acc(db[at]) * scale + (hb == nullptr ? A_t(0) : hb[e / TN]);
    A_t v = p * (dp - col_dot[jj]);
    if (dgb != nullptr) v += to_acc(dgb[at]);
    db[at] = static_cast<T>(v);
  }
}

// dgt (B, K, N) and lse (B, N) from x (B, C, N), df (B, K, C), the guide
// logits g (B, K, N), dg (same, or undefined) and h (B, K) in the
// accumulation type (or undefined); all contiguous.
template <class T>
void launch_softmax_backward(const at::Tensor& x, const at::Tensor& df, const at::Tensor& g,
                             const at::Tensor& dg, double scale, const at::Tensor& h,
                             const at::Tensor& dgt, const at::Tensor& lse) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = g.size(1);
  const int64_t blocks = checked_blocks(B * ceil_div(N, Tiles<T>::N), x);
  auto* kernel = &softmax_backward_kernel<T>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), x.const_data_ptr<T>(), df.const_data_ptr<T>(),
                 g.const_data_ptr<T>(), dg.defined() ? dg.const_data_ptr<T>() : nullptr,
                 static_cast<acc_t<T>>(scale), h.defined() ? h.const_data_ptr<acc_t<T>>() : nullptr,
                 dgt.mutable_data_ptr<T>(), lse.mutable_data_ptr<acc_t<T>>(),
                 checked_int(C, "channels"), checked_int(K, "classes"), N);
}

}  // namespace condnet::cuda
