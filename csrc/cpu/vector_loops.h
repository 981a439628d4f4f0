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

namespace condnet::cpu {

// out[r * B + b] = sum_c rows[r * ld + c] * f[b * C + c] for r < R, b < B:
// R rows of a weight matrix against B feature vectors. Rows go four at a
// time, so that each feature value loaded serves four products; a block of
// four rows (4 * C values) stays in L1 while every image passes over it.
template <class Acc, class TW>
CONDNET_MULTIVERSION void rows_dot_images(const TW* rows, int64_t R, int64_t ld, int64_t C,
                                          const Acc* f, int64_t B, Acc* out) {
  int64_t r = 0;
  for (; r + 4 <= R; r += 4) {
    const TW* a0 = rows + r * ld;
    const TW* a1 = a0 + ld;
    const TW* a2 = a1 + ld;
    const TW* a3 = a2 + ld;
    for (int64_t b = 0; b < B; ++b) {
      const Acc* fb = f + b * C;
      Acc s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t c = 0; c < C; ++c) {
        const Acc v = fb[c];
        s0 += static_cast<Acc>(a0[c]) * v;
        s1 += static_cast<Acc>(a1[c]) * v;
        s2 += static_cast<Acc>(a2[c]) * v;
        s3 += static_cast<Acc>(a3[c]) * v;
      }
      out[r * B + b] = s0;
      out[(r + 1) * B + b] = s1;
      out[(r + 2) * B + b] = s2;
      out[(r + 3) * B + b] = s3;
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
