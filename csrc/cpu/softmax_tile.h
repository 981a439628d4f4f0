// The softmax over the classes of one (K, T) tile of logits, forward and
// backward, fused with the conversions around it, for the softmax pooling
// when its products run in a 16-bit dtype (products.h). Each column (pixel)
// is one softmax; the loops run along the pixels, which are contiguous, so
// they vectorise. ATen would take a pass per step (widen, add the bias,
// write g, softmax, round p for the product; in the backward widen g,
// softmax, widen dP, softmax backward, add the logits' gradient, round ds
// and p for the products), each with a temporary; here the forward takes
// three passes over the tile and the backward four, in float32.
//
// exp is computed by a polynomial (exp_nonpositive), since the standard one
// does not vectorise without -ffast-math; its arguments are x - max <= 0.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

#include "convert16.h"
#include "vector_loops.h"

namespace condnet::cpu {

// exp(x) for x <= 0; below -87.3 (where exp leaves float32's normal range)
// it returns exp(-87.3), about 1.2e-38, so exp(-inf) is that, not 0; NaN
// stays NaN. Written with integer selects only: a floating-point compare in
// the loop keeps GCC from vectorising it. Measured against std::exp on
// [-100, 0]: relative error below 1.2e-7.
CONDNET_INLINE float exp_nonpositive(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  constexpr uint32_t kLow = std::bit_cast<uint32_t>(-87.3f);
  // Below -87.3 as unsigned bits (a negative NaN too, restored below).
  const float clamped = std::bit_cast<float>(std::min(u, kLow));
  // x = n ln2 + r, |r| <= ln2 / 2, with ln2 in two parts (Cody and Waite).
  const int n = static_cast<int>(clamped * 1.44269504088896341f - 0.5f);
  const float fn = static_cast<float>(n);
  float r = clamped - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float expr = poly * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<uint32_t>(n + 127) << 23);
  const uint32_t nan = 0u - static_cast<uint32_t>((u & 0x7FFFFFFFu) > 0x7F800000u);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(expr * scale) | (nan & 0x7FC00000u));
}

// Forward. logits: the product W x (K, T), contiguous; bias (K) or null.
// Writes g = logits + bias rounded to T (rows g_ld apart), the softmax p
// rounded to T (contiguous, for the pooling product), and adds each class's
// mass sum_t p into mass (if not null). e is K * len scratch, m and s len.
template <class T>
CONDNET_MULTIVERSION void softmax_forward_rows(const T* logits, const float* bias, T* g,
                                               int64_t g_ld, T* p, float* mass, float* e, float* m,
                                               float* s, int64_t K, int64_t len) {
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) m[t] = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    const T* in = logits + k * len;
    T* gk = g + k * g_ld;
    float* ek = e + k * len;
    const float b = bias != nullptr ? bias[k] : 0.0f;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const float l = load_as<float>(in, t) + b;
      store_as(gk, t, l);
      ek[t] = l;
      m[t] = l > m[t] ? l : m[t];
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) s[t] = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    float* ek = e + k * len;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const float v = exp_nonpositive(ek[t] - m[t]);
      ek[t] = v;
      s[t] += v;
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) s[t] = 1.0f / s[t];
  for (int64_t k = 0; k < K; ++k) {
    const float* ek = e + k * len;
    T* pk = p + k * len;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < len; ++t) {
      const float v = ek[t] * s[t];
      store_as(pk, t, v);
      sum += v;
    }
    if (mass != nullptr) mass[k] += sum;
  }
}

// Backward. With p = softmax(g) recomputed from the stored logits g (rows
// g_ld apart) and dP = dp + dmass (dp (K, T) contiguous or null, dmass (K)
// or null):
//
//   ds = p * (dP - sum_k p dP) + grad_logits (rows gl_ld apart, or null)
//
// written rounded to T into ds_out, p rounded into p_out (if not null; both
// rows out_ld apart), and sum_t ds added into db (if not null).
template <class T>
CONDNET_MULTIVERSION void softmax_backward_rows(const T* g, int64_t g_ld, const T* dp,
                                                const float* dmass, const T* gl, int64_t gl_ld,
                                                T* ds_out, T* p_out, int64_t out_ld, float* db,
                                                float* e, float* m, float* s, float* dot, int64_t K,
                                                int64_t len) {
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) m[t] = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < K; ++k) {
    const T* gk = g + k * g_ld;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const float l = load_as<float>(gk, t);
      m[t] = l > m[t] ? l : m[t];
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) s[t] = 0.0f;
  for (int64_t k = 0; k < K; ++k) {
    const T* gk = g + k * g_ld;
    float* ek = e + k * len;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const float v = exp_nonpositive(load_as<float>(gk, t) - m[t]);
      ek[t] = v;
      s[t] += v;
    }
  }
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) {
    s[t] = 1.0f / s[t];
    dot[t] = 0.0f;
  }
  for (int64_t k = 0; k < K; ++k) {
    float* ek = e + k * len;
    const T* dpk = dp != nullptr ? dp + k * len : nullptr;
    const float dm = dmass != nullptr ? dmass[k] : 0.0f;
    T* pk = p_out != nullptr ? p_out + k * out_ld : nullptr;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) {
      const float pv = ek[t] * s[t];
      const float dpv = (dpk != nullptr ? load_as<float>(dpk, t) : 0.0f) + dm;
      ek[t] = pv;
      dot[t] += pv * dpv;
    }
    if (pk != nullptr) {
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) store_as(pk, t, ek[t]);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* ek = e + k * len;
    const T* dpk = dp != nullptr ? dp + k * len : nullptr;
    const float dm = dmass != nullptr ? dmass[k] : 0.0f;
    const T* glk = gl != nullptr ? gl + k * gl_ld : nullptr;
    T* dk = ds_out + k * out_ld;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t t = 0; t < len; ++t) {
      const float dpv = (dpk != nullptr ? load_as<float>(dpk, t) : 0.0f) + dm;
      const float v = ek[t] * (dpv - dot[t]) + (glk != nullptr ? load_as<float>(glk, t) : 0.0f);
      store_as(dk, t, v);
      sum += v;
    }
    if (db != nullptr) db[k] += sum;
  }
}

// The scratch one tile's fused softmax needs: (K + 4) x T floats.
struct SoftmaxScratch {
  at::Tensor buffer;  // (K + 4, width)

  SoftmaxScratch(int64_t K, int64_t T, const at::TensorOptions& options)
      : buffer(at::empty({K + 4, T}, options.dtype(at::kFloat))) {}
  int64_t width() const { return buffer.size(1); }
  float* e() const { return buffer.data_ptr<float>(); }
  float* row(int64_t i) const { return e() + (buffer.size(0) - 4 + i) * width(); }
};

namespace detail {

inline const float* float_ptr(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous(),
              "condnet: internal error: a fused softmax operand must be contiguous float32");
  return t.const_data_ptr<float>();
}

}  // namespace detail

// softmax_forward_rows on tensors: logits (K, T) contiguous, 16-bit; bias (K)
// or (K, 1) float32 or undefined; g (K, T) with contiguous rows; p (K, T)
// contiguous, logits' dtype; mass (K) float32 or undefined.
inline void softmax_forward_tile(const at::Tensor& logits, const at::Tensor& bias,
                                 const at::Tensor& g, const at::Tensor& p, const at::Tensor& mass,
                                 const SoftmaxScratch& scratch) {
  const int64_t K = logits.size(0), T = logits.size(1);
  TORCH_CHECK(logits.is_contiguous() && p.is_contiguous() && g.stride(1) == 1 &&
                  T <= scratch.width() && (!mass.defined() || mass.is_contiguous()),
              "condnet: internal error: softmax_forward_tile's layouts");
  AT_DISPATCH_REDUCED_FLOATING_TYPES(logits.scalar_type(), "condnet::softmax_forward_tile", [&] {
    softmax_forward_rows<scalar_t>(logits.const_data_ptr<scalar_t>(), detail::float_ptr(bias),
                                   g.mutable_data_ptr<scalar_t>(), g.stride(0),
                                   p.mutable_data_ptr<scalar_t>(),
                                   mass.defined() ? mass.mutable_data_ptr<float>() : nullptr,
                                   scratch.e(), scratch.row(0), scratch.row(1), K, T);
  });
}

// softmax_backward_rows on tensors: g (K, T) with contiguous rows, 16-bit;
// dp (K, T) contiguous in g's dtype or undefined; dmass (K) or (K, 1)
// float32 or undefined; grad_logits (K, T) with contiguous rows or
// undefined; ds_out and p_out (K, T) in g's dtype, with one row stride
// (p_out may be undefined); db (K) float32 or undefined.
inline void softmax_backward_tile(const at::Tensor& g, const at::Tensor& dp,
                                  const at::Tensor& dmass, const at::Tensor& grad_logits,
                                  const at::Tensor& ds_out, const at::Tensor& p_out,
                                  const at::Tensor& db, const SoftmaxScratch& scratch) {
  const int64_t K = g.size(0), T = g.size(1);
  const auto dtype = g.scalar_type();
  const auto same = [&](const at::Tensor& t) { return !t.defined() || t.scalar_type() == dtype; };
  TORCH_CHECK(g.stride(1) == 1 && ds_out.stride(1) == 1 && T <= scratch.width() &&
                  (!dp.defined() || dp.is_contiguous()) &&
                  (!grad_logits.defined() || grad_logits.stride(1) == 1) &&
                  (!p_out.defined() || p_out.strides() == ds_out.strides()) &&
                  (!db.defined() || db.is_contiguous()) && same(dp) && same(grad_logits) &&
                  same(ds_out) && same(p_out),
              "condnet: internal error: softmax_backward_tile's layouts");
  AT_DISPATCH_REDUCED_FLOATING_TYPES(dtype, "condnet::softmax_backward_tile", [&] {
    softmax_backward_rows<scalar_t>(
        g.const_data_ptr<scalar_t>(), g.stride(0),
        dp.defined() ? dp.const_data_ptr<scalar_t>() : nullptr, detail::float_ptr(dmass),
        grad_logits.defined() ? grad_logits.const_data_ptr<scalar_t>() : nullptr,
        grad_logits.defined() ? grad_logits.stride(0) : 0, ds_out.mutable_data_ptr<scalar_t>(),
        p_out.defined() ? p_out.mutable_data_ptr<scalar_t>() : nullptr, ds_out.stride(0),
        db.defined() ? db.mutable_data_ptr<float>() : nullptr, scratch.e(), scratch.row(0),
        scratch.row(1), scratch.row(2), K, T);
  });
}

}  // namespace condnet::cpu
