// The projection as weight streams: theta[b, k] = A[k] f[b, k] + a[k] and its
// backward, for A (K, C+1, C), f (B, K, C). The products are only B columns
// wide, so both kernels are batched GEMVs bound by reading A (158 MB in
// float32 at C=512, K=150): the forward reads every element of A once, the
// backward reads it once for df while it writes dA. They run on FMA units
// (there is nothing for tensor cores to do at B columns) with float32
// accumulation (float64 for float64), whatever A's dtype; A may be float32
// while f is float16/bfloat16 (autocast with float32 master weights).
//
// Images go G at a time (G in 4..32, the smallest that covers B); a batch
// larger than G takes several passes, the backward's adding into dA.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "launch.cuh"

namespace condnet::cuda {

constexpr int kProjectRows = 64;              // forward: rows of A per block
constexpr int kProjectCols = 64;              // channels per step (forward) or per block (backward)
constexpr int kProjectSlots = kThreads / 64;  // 4 threads share each row / column

// Forward. Block = (class k, 64 rows of A[k]); thread = (row r, slot q),
// which sums rows r's products with images q, q + 4, ... of the group.
template <class T, class TW, int G>
__global__ void __launch_bounds__(kThreads)
    project_forward_kernel(const T* __restrict__ f, const TW* __restrict__ A,
                           const TW* __restrict__ a, T* __restrict__ theta, int B, int K, int C,
                           int row_tiles) {
  using A_t = acc_t<T>;
  constexpr int RT = kProjectRows, CT = kProjectCols, PER = G / kProjectSlots;
  static_assert(RT == 64 && CT == 64 && kThreads == 256, "4 slots of 64 threads");
  __shared__ A_t As[RT][CT + 1];  // +1: the rows of one column hit different banks
  __shared__ A_t Fs[G][CT];
  const int J = C + 1;
  const int k = static_cast<int>(blockIdx.x / row_tiles);
  const int j0 = static_cast<int>(blockIdx.x % row_tiles) * RT;
  const int r = threadIdx.x % RT, q = threadIdx.x / RT;
  const TW* Ak = A + (static_cast<int64_t>(k) * J + j0) * C;
  const int rows = std::min(RT, J - j0);
  // Loads: thread (lr, lc) fetches column lc of rows lr, lr + 4, ... of a tile.
  const int lc = threadIdx.x % CT, lr = threadIdx.x / CT;
  for (int b0 = 0; b0 < B; b0 += G) {
    A_t acc[PER];
#pragma unroll
    for (int i = 0; i < PER; ++i) acc[i] = A_t(0);
    for (int c0 = 0; c0 < C; c0 += CT) {
      const bool col_ok = c0 + lc < C;
#pragma unroll
      for (int i = 0; i < RT / kProjectSlots; ++i) {
        const int rr = lr + kProjectSlots * i;
        As[rr][lc] = (rr < rows && col_ok)
                         ? static_cast<A_t>(Ak[static_cast<int64_t>(rr) * C + c0 + lc])
                         : A_t(0);
      }
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int b = b0 + lr + kProjectSlots * i;
        Fs[lr + kProjectSlots * i][lc] =
            (b < B && col_ok) ? static_cast<A_t>(f[(static_cast<int64_t>(b) * K + k) * C + c0 + lc])
                              : A_t(0);
      }
      __syncthreads();
#pragma unroll 4
      for (int cc = 0; cc < CT; ++cc) {
        const A_t av = As[r][cc];
#pragma unroll
        for (int i = 0; i < PER; ++i) acc[i] += av * Fs[q + kProjectSlots * i][cc];
      }
      __syncthreads();
    }
    if (r < rows) {
      const int j = j0 + r;
      const A_t bias = a != nullptr ? static_cast<A_t>(a[static_cast<int64_t>(k) * J + j]) : A_t(0);
#pragma unroll
      for (int i = 0; i < PER; ++i) {
        const int b = b0 + q + kProjectSlots * i;
        if (b < B) theta[(static_cast<int64_t>(b) * K + k) * J + j] = static_cast<T>(acc[i] + bias);
      }
    }
  }
}

// Backward. Block = (class k, 64 columns of A[k]); thread = (column c, slot
// q), which walks rows q, q + 4, ... of every 32-row step: it reads A[k, j, c]
// once, writes dA[k, j, c] = sum_b dtheta[b, k, j] f[b, k, c], and adds
// A[k, j, c] dtheta[b, k, j] into its share of df[b, k, c]; the four shares
// are summed through shared memory at the end. The blocks of the first column
// tile also write da[k, j] = sum_b dtheta[b, k, j].
template <class T, class TW, int G>
__global__ void __launch_bounds__(kThreads)
    project_backward_kernel(const T* __restrict__ dtheta, const T* __restrict__ f,
                            const TW* __restrict__ A, T* __restrict__ df, TW* __restrict__ dA,
                            TW* __restrict__ da, int B, int K, int C, int col_tiles) {
  using A_t = acc_t<T>;
  constexpr int RT = 32, CT = kProjectCols, S = kProjectSlots;
  __shared__ A_t Ds[G][RT];          // dtheta[b0 + bb, k, j0 + jj]
  __shared__ A_t Red[S - 1][G][CT];  // df shares of slots 1..3
  const int J = C + 1;
  const int k = static_cast<int>(blockIdx.x / col_tiles);
  const int c0 = static_cast<int>(blockIdx.x % col_tiles) * CT;
  const int c = threadIdx.x % CT, q = threadIdx.x / CT;
  const bool col_ok = c0 + c < C;
  const int64_t Ak = static_cast<int64_t>(k) * J * C + c0 + c;
  for (int b0 = 0; b0 < B; b0 += G) {
    A_t fv[G], dfv[G];
#pragma unroll
    for (int bb = 0; bb < G; ++bb) {
      const int b = b0 + bb;
      fv[bb] = (b < B && col_ok)
                   ? static_cast<A_t>(f[(static_cast<int64_t>(b) * K + k) * C + c0 + c])
                   : A_t(0);
      dfv[bb] = A_t(0);
    }
    for (int j0 = 0; j0 < J; j0 += RT) {
      for (int e = threadIdx.x; e < G * RT; e += kThreads) {
        const int bb = e / RT, jj = e % RT;
        const int b = b0 + bb, j = j0 + jj;
        Ds[bb][jj] = (b < B && j < J)
                         ? static_cast<A_t>(dtheta[(static_cast<int64_t>(b) * K + k) * J + j])
                         : A_t(0);
      }
      __syncthreads();
      if (col_ok) {
#pragma unroll 2
        for (int jj = q; jj < RT; jj += S) {
          const int j = j0 + jj;
          if (j >= J) break;
          const int64_t at = Ak + static_cast<int64_t>(j) * C;
          const A_t av = df != nullptr ? static_cast<A_t>(A[at]) : A_t(0);
          A_t grad = A_t(0);
#pragma unroll
          for (int bb = 0; bb < G; ++bb) {
            const A_t d = Ds[bb][jj];
            grad += d * fv[bb];
            dfv[bb] += d * av;
          }
          if (dA != nullptr) {
            dA[at] = static_cast<TW>(b0 == 0 ? grad : grad + static_cast<A_t>(dA[at]));
          }
        }
      }
      if (da != nullptr && c0 == 0 && threadIdx.x < RT && j0 + threadIdx.x < J) {
        A_t s = A_t(0);
        for (int bb = 0; bb < G; ++bb) s += Ds[bb][threadIdx.x];
        const int64_t at = static_cast<int64_t>(k) * J + j0 + threadIdx.x;
        da[at] = static_cast<TW>(b0 == 0 ? s : s + static_cast<A_t>(da[at]));
      }
      __syncthreads();
    }
    if (df != nullptr) {
      if (q > 0) {
#pragma unroll
        for (int bb = 0; bb < G; ++bb) Red[q - 1][bb][c] = dfv[bb];
      }
      __syncthreads();
      if (q == 0 && col_ok) {
#pragma unroll
        for (int bb = 0; bb < G; ++bb) {
          const int b = b0 + bb;
          if (b >= B) break;
          A_t s = dfv[bb];
#pragma unroll
          for (int o = 0; o < S - 1; ++o) s += Red[o][bb][c];
          df[(static_cast<int64_t>(b) * K + k) * C + c0 + c] = static_cast<T>(s);
        }
      }
      __syncthreads();
    }
  }
}

// Images per pass: the smallest of 4, 8, 16, 32 that covers B (16 for
// float64, whose shared tiles are twice as large).
template <class T>
int project_group(int64_t B) {
  const int most = std::is_same_v<T, double> ? 16 : 32;
  int g = 4;
  while (g < B && g < most) g *= 2;
  return g;
}

template <class T, class TW, int G>
void launch_project_forward_g(const at::Tensor& f, const at::Tensor& A, const at::Tensor& a,
                              const at::Tensor& theta) {
  const int64_t B = f.size(0), K = f.size(1), C = f.size(2);
  const int row_tiles = static_cast<int>(ceil_div(C + 1, kProjectRows));
  const int64_t blocks = checked_blocks(K * row_tiles, f);
  auto* kernel = &project_forward_kernel<T, TW, G>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), f.const_data_ptr<T>(), A.const_data_ptr<TW>(),
                 a.defined() ? a.const_data_ptr<TW>() : nullptr, theta.mutable_data_ptr<T>(),
                 checked_int(B, "images"), checked_int(K, "classes"), checked_int(C, "channels"),
                 row_tiles);
}

template <class T, class TW, int G>
void launch_project_backward_g(const at::Tensor& dtheta, const at::Tensor& f, const at::Tensor& A,
                               const at::Tensor& df, const at::Tensor& dA, const at::Tensor& da) {
  const int64_t B = f.size(0), K = f.size(1), C = f.size(2);
  const int col_tiles = static_cast<int>(ceil_div(C, kProjectCols));
  const int64_t blocks = checked_blocks(K * col_tiles, f);
  auto* kernel = &project_backward_kernel<T, TW, G>;
  CONDNET_LAUNCH(kernel, blocks, current_stream(), dtheta.const_data_ptr<T>(),
                 f.const_data_ptr<T>(), A.const_data_ptr<TW>(),
                 df.defined() ? df.mutable_data_ptr<T>() : nullptr,
                 dA.defined() ? dA.mutable_data_ptr<TW>() : nullptr,
                 da.defined() ? da.mutable_data_ptr<TW>() : nullptr, checked_int(B, "images"),
                 checked_int(K, "classes"), checked_int(C, "channels"), col_tiles);
}

// theta (B, K, C+1) from f (B, K, C), A (K, C+1, C), a (K, C+1) or undefined;
// all contiguous.
template <class T, class TW>
void launch_project_forward(const at::Tensor& f, const at::Tensor& A, const at::Tensor& a,
                            const at::Tensor& theta) {
  switch (project_group<T>(f.size(0))) {
    case 4: return launch_project_forward_g<T, TW, 4>(f, A, a, theta);
    case 8: return launch_project_forward_g<T, TW, 8>(f, A, a, theta);
    case 16: return launch_project_forward_g<T, TW, 16>(f, A, a, theta);
    default:
      if constexpr (!std::is_same_v<T, double>) {
        return launch_project_forward_g<T, TW, 32>(f, A, a, theta);
      }
  }
}

// df (B, K, C), dA (K, C+1, C), da (K, C+1), each undefined when not wanted.
template <class T, class TW>
void launch_project_backward(const at::Tensor& dtheta, const at::Tensor& f, const at::Tensor& A,
                             const at::Tensor& df, const at::Tensor& dA, const at::Tensor& da) {
  switch (project_group<T>(f.size(0))) {
    case 4: return launch_project_backward_g<T, TW, 4>(dtheta, f, A, df, dA, da);
    case 8: return launch_project_backward_g<T, TW, 8>(dtheta, f, A, df, dA, da);
    case 16: return launch_project_backward_g<T, TW, 16>(dtheta, f, A, df, dA, da);
    default:
      if constexpr (!std::is_same_v<T, double>) {
        return launch_project_backward_g<T, TW, 32>(dtheta, f, A, df, dA, da);
      }
  }
}

}  // namespace condnet::cuda
