// Block-level building blocks of every condnet CUDA kernel: tile sizes per
// dtype, loading a tile of a row-major matrix into shared memory, and the
// block's output tile, accumulated in registers from shared-memory operands.
//
// float16 and bfloat16 products run on tensor cores (WMMA 16x16x16, float32
// accumulators); float32 and float64 run as FMA micro-tiles, so the float32
// path keeps full float32 precision (no TF32) and float64 serves gradcheck.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "device_api.cuh"

namespace condnet::cuda {

// M: rows of an output tile, N: its columns, K: the reduction step.
// Shared memory per block stays under the 48 KiB of static allocation.
template <class T>
struct Tiles {
  static constexpr int M = 64, N = 64, K = 32;
  static constexpr bool kTensorCores = false;
};
template <>
struct Tiles<c10::Half> {
  static constexpr int M = 64, N = 64, K = 64;
  static constexpr bool kTensorCores = true;
};
template <>
struct Tiles<c10::BFloat16> {
  static constexpr int M = 64, N = 64, K = 64;
  static constexpr bool kTensorCores = true;
};
template <>
struct Tiles<double> {
  static constexpr int M = 32, N = 32, K = 32;
  static constexpr bool kTensorCores = false;
};

// Row padding of shared tiles: 16 bytes, which keeps WMMA's 32-byte pointer
// alignment for every 16x16 sub-tile and staggers rows across banks.
template <class T>
constexpr int pad_of() {
  return 16 / static_cast<int>(sizeof(T));
}

// A ROWS x COLS shared tile of T with padded rows.
template <class T, int ROWS, int COLS>
struct SharedTile {
  static constexpr int ld = COLS + pad_of<T>();
  alignas(32) T data[ROWS * ld];
};

template <class T>
struct WmmaType;
template <>
struct WmmaType<c10::Half> {
  using type = __half;
};
template <>
struct WmmaType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// dst[r][c] = src[r * lds + c] for r < rows, c < cols; zero in the rest of the
// ROWS x COLS tile, so padded rows and columns add nothing to a product.
template <int ROWS, int COLS, class T>
__device__ __forceinline__ void load_tile(T* dst, int ldd, const T* __restrict__ src, int64_t lds,
                                          int rows, int cols) {
  for (int e = threadIdx.x; e < ROWS * COLS; e += kThreads) {
    const int r = e / COLS, c = e % COLS;
    dst[r * ldd + c] = (r < rows && c < cols) ? src[r * lds + c] : T(0);
  }
}

// dst[r][c] = T(src[r * lds + c] * col[c]) for r < rows, c < cols, zero
// elsewhere: a tile whose columns (pixels) are scaled by a per-pixel factor
// in the accumulation type, rounded once to T (the cosine classifier's
// dy / max(|x_n|, eps)).
template <int ROWS, int COLS, class T>
__device__ __forceinline__ void load_column_scaled_tile(T* dst, int ldd, const T* __restrict__ src,
                                                        int64_t lds,
                                                        const acc_t<T>* __restrict__ col, int rows,
                                                        int cols) {
  for (int e = threadIdx.x; e < ROWS * COLS; e += kThreads) {
    const int r = e / COLS, c = e % COLS;
    dst[r * ldd + c] =
        (r < rows && c < cols) ? static_cast<T>(to_acc(src[r * lds + c]) * col[c]) : T(0);
  }
}

// The M x N output tile of a block, held in registers while products
// accumulate into it; store() writes it to shared memory for the epilogue.
//
// FMA path: each thread owns an (M/16) x (N/16) micro-tile whose rows and
// columns are 16 apart (threads as a 16 x 16 grid).
template <class T, int M, int N>
class FmaAccumulator {
  static_assert(kThreads == 256 && M % 16 == 0 && N % 16 == 0, "16 x 16 thread grid");
  using A_t = acc_t<T>;
  static constexpr int RM = M / 16, RN = N / 16;
  A_t acc_[RM][RN];

 public:
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < RN; ++j) acc_[i][j] = A_t(0);
  }

  // acc += A (M x K) * B (K x N), operands in shared memory. A_COL: A(m, k)
  // is A[k * lda + m], else A[m * lda + k]. B_COL: B(k, n) is B[n * ldb + k],
  // else B[k * ldb + n].
  template <int K, bool A_COL, bool B_COL>
  __device__ __forceinline__ void mma(const T* A, int lda, const T* B, int ldb) {
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll 4
    for (int k = 0; k < K; ++k) {
      A_t a[RM], b[RN];
#pragma unroll
      for (int i = 0; i < RM; ++i) {
        const int m = tm + 16 * i;
        a[i] = to_acc(A_COL ? A[k * lda + m] : A[m * lda + k]);
      }
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        const int n = tn + 16 * j;
        b[j] = to_acc(B_COL ? B[n * ldb + k] : B[k * ldb + n]);
      }
#pragma unroll
      for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RN; ++j) acc_[i][j] += a[i] * b[j];
    }
  }

  __device__ __forceinline__ void store(A_t* Cs, int ldc) const {
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
      for (int j = 0; j < RN; ++j) Cs[(tm + 16 * i) * ldc + tn + 16 * j] = acc_[i][j];
  }
};

#if CONDNET_TENSOR_CORES
// Tensor-core path: each warp owns (M/16)(N/16)/8 WMMA accumulator tiles,
// warp w the tiles w, w + 8, ... in row-major tile order.
template <class T, int M, int N>
class WmmaAccumulator {
  static constexpr int kTilesN = N / 16, kTiles = (M / 16) * kTilesN;
  static_assert(kTiles % kWarps == 0, "every warp owns the same number of tiles");
  static constexpr int kPerWarp = kTiles / kWarps;
  using E = typename WmmaType<T>::type;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc_[kPerWarp];

  __device__ __forceinline__ static int tile(int i) {
    return static_cast<int>(threadIdx.x / 32) + i * kWarps;
  }

 public:
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) nvcuda::wmma::fill_fragment(acc_[i], 0.0f);
  }

  // Same contract as FmaAccumulator::mma.
  template <int K, bool A_COL, bool B_COL>
  __device__ __forceinline__ void mma(const T* A, int lda, const T* B, int ldb) {
    namespace wmma = nvcuda::wmma;
    using LA = std::conditional_t<A_COL, wmma::col_major, wmma::row_major>;
    using LB = std::conditional_t<B_COL, wmma::col_major, wmma::row_major>;
    const E* a_base = reinterpret_cast<const E*>(A);
    const E* b_base = reinterpret_cast<const E*>(B);
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
      const int m0 = (tile(i) / kTilesN) * 16, n0 = (tile(i) % kTilesN) * 16;
#pragma unroll
      for (int k0 = 0; k0 < K; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, E, LA> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, E, LB> b;
        wmma::load_matrix_sync(a, a_base + (A_COL ? k0 * lda + m0 : m0 * lda + k0), lda);
        wmma::load_matrix_sync(b, b_base + (B_COL ? n0 * ldb + k0 : k0 * ldb + n0), ldb);
        wmma::mma_sync(acc_[i], a, b, acc_[i]);
      }
    }
  }

  __device__ __forceinline__ void store(float* Cs, int ldc) const {
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
      const int m0 = (tile(i) / kTilesN) * 16, n0 = (tile(i) % kTilesN) * 16;
      nvcuda::wmma::store_matrix_sync(Cs + m0 * ldc + n0, acc_[i], ldc,
                                      nvcuda::wmma::mem_row_major);
    }
  }
};

template <class T, int M, int N>
using TileAccumulator =
    std::conditional_t<Tiles<T>::kTensorCores, WmmaAccumulator<T, M, N>, FmaAccumulator<T, M, N>>;
#else
template <class T, int M, int N>
using TileAccumulator = FmaAccumulator<T, M, N>;
#endif

// Cs = A B for A (rows x depth, row-major with leading dimension depth) and
// B (depth x cols, row-major with leading dimension ldb), streamed through
// the shared tiles As and Bs; rows <= M, cols <= N. Cs is complete, and the
// block synchronised, on return. With col_sumsq (shared, N entries), thread
// j < cols also adds the squares of B's column j to col_sumsq[j] in the same
// pass over the depth (the cosine classifier's per-pixel |x|^2).
template <class T, int M, int N, int K>
__device__ __forceinline__ void product_to_shared(SharedTile<T, M, K>& As, SharedTile<T, K, N>& Bs,
                                                  SharedTile<acc_t<T>, M, N>& Cs,
                                                  const T* __restrict__ a, int depth, int rows,
                                                  const T* __restrict__ b, int64_t ldb, int cols,
                                                  acc_t<T>* col_sumsq = nullptr) {
  TileAccumulator<T, M, N> acc;
  acc.zero();
  for (int d0 = 0; d0 < depth; d0 += K) {
    const int dv = std::min(K, depth - d0);
    load_tile<M, K>(As.data, As.ld, a + d0, depth, rows, dv);
    load_tile<K, N>(Bs.data, Bs.ld, b + static_cast<int64_t>(d0) * ldb, ldb, dv, cols);
    __syncthreads();
    if (col_sumsq != nullptr && static_cast<int>(threadIdx.x) < cols) {
      const int j = threadIdx.x;
      acc_t<T> sum = col_sumsq[j];
      for (int d = 0; d < dv; ++d) {
        const acc_t<T> v = to_acc(Bs.data[d * Bs.ld + j]);
        sum += v * v;
      }
      col_sumsq[j] = sum;
    }
    acc.template mma<K, false, false>(As.data, As.ld, Bs.data, Bs.ld);
    __syncthreads();
  }
  acc.store(Cs.data, Cs.ld);
  __syncthreads();
}

}  // namespace condnet::cuda
