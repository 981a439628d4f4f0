// project on the CPU: theta[b, k] = A[k] f[b, k] + a[k], for class features
// f (B, K, C), A (K, C+1, C) and a (K, C+1), and its backward
//
//     df[b, k]  = A[k]^T dtheta[b, k]
//     dA[k]     = sum_b dtheta[b, k] f[b, k]^T
//     da[k]     = sum_b dtheta[b, k]
//
// A is the largest tensor of the whole classifier (158 MB in float32 at
// C=512, K=150) and the products are only B columns wide, so both directions
// are weight streams: the forward reads A once, the backward reads each row
// of A once for df while it writes that row's gradient. A may be float32
// while f is float16/bfloat16 (autocast with float32 master weights): it is
// read as it is, never copied to f's dtype, and every sum runs in float32.
//
// Work items are (class, row block) in the forward and (class, column block)
// in the backward, so each output is computed by one item in a fixed order:
// results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../host/project_host.h"
#include "device.h"
#include "vector_loops.h"

namespace condnet::cpu {
namespace {

template <class T>
using acc_of = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Per-thread scratch that keeps its memory from call to call, so that the
// kernels allocate nothing but their outputs.
template <class Acc>
Acc* scratch(int64_t count) {
  thread_local std::vector<Acc> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.resize(count);
  return buffer.data();
}

// How many blocks to cut each class into so that there are some four items
// per thread (a few classes on many threads), at most `most`.
int64_t blocks_per_class(int64_t K, int64_t most) {
  const int64_t want = (4 * at::get_num_threads() + K - 1) / K;
  return std::clamp<int64_t>(want, 1, std::max<int64_t>(most, 1));
}

template <class T, class TW>
void forward_kernel(const at::Tensor& f, const at::Tensor& A, const at::Tensor& a,
                    const at::Tensor& theta) {
  using Acc = acc_of<T>;
  const int64_t B = f.size(0), K = f.size(1), C = f.size(2), J = C + 1;
  const T* fp = f.const_data_ptr<T>();
  const TW* Ap = A.const_data_ptr<TW>();
  const TW* ap = a.defined() ? a.const_data_ptr<TW>() : nullptr;
  T* out = theta.mutable_data_ptr<T>();
  const int64_t blocks = blocks_per_class(K, (J + 15) / 16);
  const int64_t rows = (J + blocks - 1) / blocks;
  at::parallel_for(0, K * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / blocks;
      const int64_t j0 = (item % blocks) * rows;
      const int64_t R = std::min(J, j0 + rows) - j0;
      if (R <= 0) continue;
      Acc* fs = scratch<Acc>(B * C + R * B);  // f[:, k, :] in Acc, then R x B sums
      Acc* sums = fs + B * C;
      for (int64_t b = 0; b < B; ++b) {
        const T* src = fp + (b * K + k) * C;
        for (int64_t c = 0; c < C; ++c) fs[b * C + c] = static_cast<Acc>(src[c]);
      }
      rows_dot_images<Acc, TW>(Ap + (k * J + j0) * C, R, C, C, fs, B, sums);
      for (int64_t r = 0; r < R; ++r) {
        const Acc bias = ap != nullptr ? static_cast<Acc>(ap[k * J + j0 + r]) : Acc(0);
        for (int64_t b = 0; b < B; ++b) {
          out[(b * K + k) * J + j0 + r] = static_cast<T>(sums[r * B + b] + bias);
        }
      }
    }
  });
}

template <class T, class TW>
void backward_kernel(const at::Tensor& dtheta, const at::Tensor& f, const at::Tensor& A,
                     const at::Tensor& df, const at::Tensor& dA, const at::Tensor& da) {
  using Acc = acc_of<T>;
  const int64_t B = f.size(0), K = f.size(1), C = f.size(2), J = C + 1;
  const T* dp = dtheta.const_data_ptr<T>();
  const T* fp = f.const_data_ptr<T>();
  const TW* Ap = A.const_data_ptr<TW>();
  T* dfp = df.defined() ? df.mutable_data_ptr<T>() : nullptr;
  TW* dAp = dA.defined() ? dA.mutable_data_ptr<TW>() : nullptr;
  TW* dap = da.defined() ? da.mutable_data_ptr<TW>() : nullptr;
  // Column blocks of a multiple of 16 values; whole rows when there are
  // classes enough for every thread.
  const int64_t blocks = blocks_per_class(K, (C + 15) / 16);
  const int64_t width = ((C + blocks - 1) / blocks + 15) / 16 * 16;
  const int64_t col_blocks = (C + width - 1) / width;
  at::parallel_for(0, K * col_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / col_blocks;
      const int64_t c0 = (item % col_blocks) * width;
      const int64_t Cb = std::min(C, c0 + width) - c0;
      // d: dtheta[:, k, :] as J x B; fs, dfs: B x Cb; row_sum: Cb.
      Acc* d = scratch<Acc>(J * B + 3 * B * Cb + Cb);
      Acc* fs = d + J * B;
      Acc* dfs = fs + B * Cb;
      Acc* row_sum = dfs + B * Cb;
      for (int64_t b = 0; b < B; ++b) {
        const T* src = dp + (b * K + k) * J;
        for (int64_t j = 0; j < J; ++j) d[j * B + b] = static_cast<Acc>(src[j]);
        const T* fsrc = fp + (b * K + k) * C + c0;
        for (int64_t c = 0; c < Cb; ++c) fs[b * Cb + c] = static_cast<Acc>(fsrc[c]);
      }
      if (dfp != nullptr) std::fill(dfs, dfs + B * Cb, Acc(0));
      const int64_t offset = k * J * C + c0;
      rows_backward<Acc, TW>(Ap + offset, dAp != nullptr ? dAp + offset : nullptr, J, C, Cb, d, fs,
                             B, dfp != nullptr ? dfs : nullptr, row_sum);
      if (dfp != nullptr) {
        for (int64_t b = 0; b < B; ++b) {
          T* dst = dfp + (b * K + k) * C + c0;
          for (int64_t c = 0; c < Cb; ++c) dst[c] = static_cast<T>(dfs[b * Cb + c]);
        }
      }
      if (dap != nullptr && c0 == 0) {
        for (int64_t j = 0; j < J; ++j) {
          Acc s = 0;
          for (int64_t b = 0; b < B; ++b) s += d[j * B + b];
          dap[k * J + j] = static_cast<TW>(s);
        }
      }
    }
  });
}

// project's CPU kernels, as host/project_host.h calls them.
struct ProjectKernels : Device {
  template <class T, class TW>
  static constexpr auto forward = &forward_kernel<T, TW>;
  template <class T, class TW>
  static constexpr auto backward = &backward_kernel<T, TW>;
};

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("project", &host::project_forward<ProjectKernels>);
  m.impl("project_backward", &host::project_backward<ProjectKernels>);
}

}  // namespace condnet::cpu
