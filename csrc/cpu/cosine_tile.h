// The cosine classifier's per-pixel pieces on one tile of T pixels, for the
// CPU kernels (cosine_classify.cpp, softmax_pool.cpp). Tiles are (rows, T)
// views whose pixels are contiguous (rows may be strided):
//
//   forward:  x_norm_n = |x_n|, taken from the tile of x while it is in
//             cache for the product (the product itself is a GEMM);
//   backward: with r_n = max(x_norm_n, eps), the gradient's scaled rows
//             dy / r (the product term of dx, and the weight gradient's
//             left factor) and the coefficient of x_n in dx,
//             [x_norm_n >= eps] (sum_k dy[k, n] y[k, n]) / (r_n x_norm_n).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <cmath>
#include <cstdint>

#include "vector_loops.h"

namespace condnet::cpu {

// out[t] = sqrt(sum_c x[c * ld + t]^2) for t < len: the norms of the columns
// of a (C, len) tile whose rows are ld apart. Walks the tile row by row, each
// row a contiguous run the compiler vectorises, summing in Acc.
template <class T, class Acc>
CONDNET_MULTIVERSION void column_norms(const T* x, int64_t C, int64_t ld, int64_t len, Acc* out) {
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) out[t] = 0;
  for (int64_t c = 0; c < C; ++c) {
    const T* row = x + c * ld;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const Acc v = static_cast<Acc>(row[t]);
      out[t] += v * v;
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) out[t] = std::sqrt(out[t]);
}

// norms (len) in the accumulation dtype of x_tile (C, len), a view of x whose
// pixels are contiguous (rows may be strided).
inline void pixel_norms(const at::Tensor& x_tile, const at::Tensor& norms) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x_tile.scalar_type(), "condnet::pixel_norms", [&] {
        using Acc = at::opmath_type<scalar_t>;
        column_norms<scalar_t, Acc>(x_tile.const_data_ptr<scalar_t>(), x_tile.size(0),
                                    x_tile.stride(0), x_tile.size(1),
                                    norms.mutable_data_ptr<Acc>());
      });
}

// row[t] = row[t] / r[t] for the K rows of a (K, len) tile (rows ld apart),
// divided in Acc and rounded once to T.
template <class T, class Acc>
CONDNET_MULTIVERSION void divide_columns(T* y, int64_t K, int64_t ld, int64_t len, const Acc* r) {
  for (int64_t k = 0; k < K; ++k) {
    T* row = y + k * ld;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) row[t] = static_cast<T>(static_cast<Acc>(row[t]) / r[t]);
  }
}

// dx[c][t] -= x[c][t] * coef[t] for the C rows of (C, len) tiles, in Acc,
// rounded once to T.
template <class T, class Acc>
CONDNET_MULTIVERSION void subtract_scaled_columns(T* dx, int64_t ld, const T* x, int64_t ldx,
                                                  int64_t C, int64_t len, const Acc* coef) {
  for (int64_t c = 0; c < C; ++c) {
    T* out = dx + c * ld;
    const T* in = x + c * ldx;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      out[t] = static_cast<T>(static_cast<Acc>(out[t]) - static_cast<Acc>(in[t]) * coef[t]);
    }
  }
}

// The two per-pixel scalings of the cosine classifier, on tiles whose pixels
// are contiguous, whatever their dtype: ATen's in-place ops would widen a
// 16-bit tile to a float32 copy and copy it back, for each call.
//   y_tile (K, T) /= r (T);   dx_tile (C, T) -= x_tile (C, T) * coef (T)
// with r and coef contiguous, in the tiles' accumulation dtype.
inline void divide_by_norms(const at::Tensor& y_tile, const at::Tensor& r) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, y_tile.scalar_type(), "condnet::divide_by_norms", [&] {
        using Acc = at::opmath_type<scalar_t>;
        divide_columns<scalar_t, Acc>(y_tile.mutable_data_ptr<scalar_t>(), y_tile.size(0),
                                      y_tile.stride(0), y_tile.size(1), r.const_data_ptr<Acc>());
      });
}

inline void subtract_scaled_x(const at::Tensor& dx_tile, const at::Tensor& x_tile,
                              const at::Tensor& coef) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dx_tile.scalar_type(), "condnet::subtract_scaled_x", [&] {
        using Acc = at::opmath_type<scalar_t>;
        subtract_scaled_columns<scalar_t, Acc>(dx_tile.mutable_data_ptr<scalar_t>(),
                                               dx_tile.stride(0), x_tile.const_data_ptr<scalar_t>(),
                                               x_tile.stride(0), dx_tile.size(0), dx_tile.size(1),
                                               coef.const_data_ptr<Acc>());
      });
}

struct CosineTileGrad {
  at::Tensor scaled;  // (K, T) in the accumulation dtype: dy / r
  at::Tensor x_coef;  // (T) in the accumulation dtype, or undefined where not asked for
};

// dy and y (K, T) as stored; x_norm (T) in the accumulation dtype acc.
inline CosineTileGrad cosine_tile_grad(const at::Tensor& dy, const at::Tensor& y,
                                       const at::Tensor& x_norm, double eps, bool with_coef,
                                       at::ScalarType acc) {
  const at::Tensor r = x_norm.clamp_min(eps);
  const at::Tensor dya = dy.to(acc);
  CosineTileGrad out;
  out.scaled = dya.div(r);
  if (with_coef) {
    // The clamp's gradient mask: where it is active the norm is a constant.
    const at::Tensor q = at::mul(dya, y).sum(0);
    out.x_coef = at::where(x_norm >= eps, q.div_(r * x_norm), 0.0);
  }
  return out;
}

}  // namespace condnet::cpu
