// The inner loops of the CPU projection kernels, written as plain loops that
// the compiler vectorises (`omp simd`), each compiled for AVX-512, AVX2+FMA
// and baseline x86-64 and chosen at load time by the CPU (GCC target_clones):
// the extension is built without -march, so without this it would run SSE2.
//
// Acc is float or double, the accumulation type; TW the weight dtype
// (float, double, Half or BFloat16), converted to Acc as it is loaded.
#pragma once

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CONDNET_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CONDNET_MULTIVERSION
#endif
// Helpers of a multiversioned function must be inlined into each clone, so
// that they are compiled for its instruction set too.
#if defined(__GNUC__)
#define CONDNET_INLINE inline __attribute__((always_inline))
#else
#define CONDNET_INLINE inline
#endif

namespace condnet::cpu {

// s[i][j] = sum_c a_i[c] * f_j[c] for 4 rows a_i and NB <= 4 images f_j
// (rows `ld` apart, images C apart): a 4 x NB block of sums in registers, so
// that each weight value loaded serves NB products and each feature value 4.
template <int NB, class Acc, class TW>
CONDNET_INLINE void dot_block(const TW* a0, int64_t ld, const Acc* f0, int64_t C, Acc* out,
                              int64_t out_ld) {
  const TW* a1 = a0 + ld;
  const TW* a2 = a1 + ld;
  const TW* a3 = a2 + ld;
  const Acc* f1 = f0 + (NB > 1 ? C : 0);
  const Acc* f2 = f0 + (NB > 2 ? 2 * C : 0);
  const Acc* f3 = f0 + (NB > 3 ? 3 * C : 0);
  Acc s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  Acc s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, \
                               s31, s32, s33)
  for (int64_t c = 0; c < C; ++c) {
    const Acc w0 = static_cast<Acc>(a0[c]), w1 = static_cast<Acc>(a1[c]);
    const Acc w2 = static_cast<Acc>(a2[c]), w3 = static_cast<Acc>(a3[c]);
    const Acc v0 = f0[c];
    s00 += w0 * v0, s10 += w1 * v0, s20 += w2 * v0, s30 += w3 * v0;
    if constexpr (NB > 1) {
      const Acc v1 = f1[c];
      s01 += w0 * v1, s11 += w1 * v1, s21 += w2 * v1, s31 += w3 * v1;
    }
    if constexpr (NB > 2) {
      const Acc v2 = f2[c];
      s02 += w0 * v2, s12 += w1 * v2, s22 += w2 * v2, s32 += w3 * v2;
    }
    if constexpr (NB > 3) {
      const Acc v3 = f3[c];
      s03 += w0 * v3, s13 += w1 * v3, s23 += w2 * v3, s33 += w3 * v3;
    }
  }
  const Acc sums[4][4] = {
      {s00, s01, s02, s03}, {s10, s11, s12, s13}, {s20, s21, s22, s23}, {s30, s31, s32, s33}};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < NB; ++j) out[i * out_ld + j] = sums[i][j];
}

// out[r * B + b] = sum_c rows[r * ld + c] * f[b * C + c] for r < R, b < B:
// R rows of a weight matrix against B feature vectors, in blocks of 4 rows x
// 4 images (see dot_block); a block of rows stays in L1 while every image
// group passes over it.
template <class Acc, class TW>
CONDNET_MULTIVERSION void rows_dot_images(const TW* rows, int64_t R, int64_t ld, int64_t C,
                                          const Acc* f, int64_t B, Acc* out) {
  // Prefetching the rows two blocks ahead keeps more of A in flight than
  // the hardware prefetcher alone (measured: 10-15% faster at B <= 8).
  constexpr int64_t kLine = 64 / sizeof(TW);
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const TW* a = rows + r * ld;
    if (r + 12 <= R) {
      for (int64_t e = 0; e < 4 * ld; e += kLine) __builtin_prefetch(a + 8 * ld + e, 0, 3);
    }
    int64_t b = 0;
    for (; b + 4 <= B; b += 4) dot_block<4>(a, ld, f + b * C, C, out + r * B + b, B);
    switch (B - b) {
      case 3: dot_block<3>(a, ld, f + b * C, C, out + r * B + b, B); break;
      case 2: dot_block<2>(a, ld, f + b * C, C, out + r * B + b, B); break;
      case 1: dot_block<1>(a, ld, f + b * C, C, out + r * B + b, B); break;
      default: break;
    }
  }
  for (; r < R; ++r) {
    const TW* a = rows + r * ld;
    for (int64_t b = 0; b < B; ++b) {
      const Acc* fb = f + b * C;
      Acc s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t c = 0; c < C; ++c) s += static_cast<Acc>(a[c]) * fb[c];
      out[r * B + b] = s;
    }
  }
}

// One pass over R weight rows of `width` columns (rows `ld` apart), for the
// projection's backward:
//
//   grad_rows[r][c] = sum_b d[r * B + b] * f[b * width + c]      (if grad_rows)
//   df[b * width + c] += sum_r d[r * B + b] * rows[r][c]          (if df)
//
// `row_sum` is scratch of `width` values. Each row is read once, while its
// gradient row is written.
template <class Acc, class TW>
CONDNET_MULTIVERSION void rows_backward(const TW* rows, TW* grad_rows, int64_t R, int64_t ld,
                                        int64_t width, const Acc* d, const Acc* f, int64_t B,
                                        Acc* df, Acc* row_sum) {
  for (int64_t r = 0; r < R; ++r) {
    const Acc* dr = d + r * B;
    if (grad_rows != nullptr) {
      const Acc d0 = dr[0];
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) row_sum[c] = d0 * f[c];
      for (int64_t b = 1; b < B; ++b) {
        const Acc s = dr[b];
        const Acc* fb = f + b * width;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) row_sum[c] += s * fb[c];
      }
      TW* out = grad_rows + r * ld;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) out[c] = static_cast<TW>(row_sum[c]);
    }
    if (df != nullptr) {
      const TW* a = rows + r * ld;
      for (int64_t b = 0; b < B; ++b) {
        const Acc s = dr[b];
        Acc* out = df + b * width;
#pragma omp simd
        for (int64_t c = 0; c < width; ++c) out[c] += s * static_cast<Acc>(a[c]);
      }
    }
  }
}

}  // namespace condnet::cpu
