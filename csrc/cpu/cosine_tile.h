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
#include <type_traits>

#include "convert16.h"
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

// One pass over the gradient's rows: out[k] = dy[k] / r, and, where q is not
// null, q = sum_k dy[k] y[k] turned into the coefficient of x.
template <class Acc, class T, class O>
CONDNET_MULTIVERSION void cosine_grad_rows(const T* dy, int64_t dy_ld, const T* y, int64_t y_ld,
                                           const Acc* x_norm, Acc eps, int64_t K, int64_t len,
                                           O* out, int64_t out_ld, Acc* r, Acc* q) {
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) r[t] = x_norm[t] < eps ? eps : x_norm[t];  // NaN stays NaN
  if (q != nullptr) {
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) q[t] = 0;
  }
  for (int64_t k = 0; k < K; ++k) {
    const T* d = dy + k * dy_ld;
    O* o = out + k * out_ld;
    if (q != nullptr) {
      const T* yk = y + k * y_ld;
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) {
        const Acc v = load_as<Acc>(d, t);
        store_as(o, t, v / r[t]);
        q[t] += v * load_as<Acc>(yk, t);
      }
    } else {
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) store_as(o, t, load_as<Acc>(d, t) / r[t]);
    }
  }
  if (q != nullptr) {
    // The clamp's gradient mask: where it is active the norm is a constant.
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      q[t] = x_norm[t] >= eps ? q[t] / (r[t] * x_norm[t]) : Acc(0);
    }
  }
}

// dy and y (K, T) as stored (one dtype); x_norm (T) in the accumulation
// dtype; out (K, T) receives dy / r in its own dtype: the accumulation dtype,
// or the 16-bit products' dtype (dy's), written once, straight from dy.
// Returns the coefficient of x in dx, (T) in the accumulation dtype, or an
// undefined tensor where with_coef is false.
inline at::Tensor cosine_tile_grad(const at::Tensor& dy, const at::Tensor& y,
                                   const at::Tensor& x_norm, double eps, bool with_coef,
                                   const at::Tensor& out) {
  TORCH_CHECK(dy.scalar_type() == y.scalar_type() && dy.stride(1) == 1 && y.stride(1) == 1 &&
                  out.stride(1) == 1 && x_norm.is_contiguous(),
              "condnet: internal error: cosine_tile_grad takes tiles with contiguous rows and "
              "dy, y of one dtype");
  const int64_t K = dy.size(0), T = dy.size(1);
  const auto acc = x_norm.scalar_type();
  at::Tensor r = at::empty({T}, x_norm.options());
  const at::Tensor x_coef = with_coef ? at::empty({T}, x_norm.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dy.scalar_type(), "condnet::cosine_tile_grad", [&] {
        using Acc = at::opmath_type<scalar_t>;
        TORCH_CHECK(acc == c10::CppTypeToScalarType<Acc>::value,
                    "condnet: internal error: x_norm must be in ", c10::toString(acc));
        Acc* q = with_coef ? x_coef.mutable_data_ptr<Acc>() : nullptr;
        const auto run = [&](auto* o) {
          using O = std::remove_pointer_t<decltype(o)>;
          cosine_grad_rows<Acc, scalar_t, O>(dy.const_data_ptr<scalar_t>(), dy.stride(0),
                                             y.const_data_ptr<scalar_t>(), y.stride(0),
                                             x_norm.const_data_ptr<Acc>(), static_cast<Acc>(eps), K,
                                             T, o, out.stride(0), r.mutable_data_ptr<Acc>(), q);
        };
        if (out.scalar_type() == acc) {
          run(out.mutable_data_ptr<Acc>());
        } else {
          TORCH_CHECK(out.scalar_type() == dy.scalar_type(),
                      "condnet: internal error: cosine_tile_grad writes in ", c10::toString(acc),
                      " or in dy's dtype");
          run(out.mutable_data_ptr<scalar_t>());
        }
      });
  return x_coef;
}

}  // namespace condnet::cpu
