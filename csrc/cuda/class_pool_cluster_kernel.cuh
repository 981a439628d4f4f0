// class_pool's and context_pool's forward in one pass over x, on Hopper
// (sm_90) thread-block clusters. A cluster of R = ceil(C / 64) blocks shares
// each pixel tile: block r holds channels [64 r, 64 r + 64) of x, of the
// guide weight and of the class features f. Per tile of 64 pixels:
//
//   1. each block: partial guide logits over its channels (K x 64, tensor
//      cores), into its shared memory;
//   2. cluster sync; block r sums the R partials of its share of the classes
//      through distributed shared memory, adds the bias, writes those rows of
//      g and the per-pixel max and sum of exp over them;
//   3. cluster sync; each block combines the R (max, sum) pairs into the
//      per-pixel log-sum-exp and forms p * scale for its rows (scale = 1/N
//      for class_pool, 1 for context_pool);
//   4. cluster sync; each block gathers the other blocks' rows of p * scale
//      (and, for context_pool, adds its own rows to the class masses);
//   5. f[:, its channels] += (p * scale) x^T, accumulated in registers.
//
// x is read from device memory once, g written once, and p never leaves the
// cluster (the two-pass path reads x twice and g once more). A cluster owns a
// contiguous range of pixels of one image and writes its f to its own slot of
// `partial` (B * splits, K, C), summed by the host as for the two-pass path,
// and with mass_partial the sums of its rows of p * scale (as rounded for the
// product) to mass_partial (B * splits, K). The guide weight is one (K, C)
// matrix or one per image, wg_batch_stride apart.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include "launch.cuh"
#include "softmax_tile.cuh"
#include "tile_mma.cuh"

namespace condnet::cuda {

constexpr int kClusterChannels = 64;  // channels per block
constexpr int kClusterPixels = 64;    // pixels per tile
constexpr int kMaxClusterBlocks = 8;  // the portable cluster size: C <= 512

// Shared-memory layout of class_pool_cluster_kernel<T, KP> (KP: K rounded up
// to the kernel's class capacity, a multiple of 32), in bytes from the
// dynamic allocation.
template <class T, int KP>
struct ClusterLayout {
  static_assert(KP % 32 == 0, "the guide logits are computed 32 classes at a time");
  static constexpr int CS = kClusterChannels, TN = kClusterPixels;
  static constexpr int ld_w = CS + pad_of<T>(), ld_x = TN + pad_of<T>();
  static constexpr int ld_p = TN + pad_of<T>(), ld_g = TN + 4;  // ld_g also holds f (KP x CS)
  static constexpr size_t w = 0;
  static constexpr size_t x = w + sizeof(T) * KP * ld_w;
  static constexpr size_t g = x + sizeof(T) * CS * ld_x;
  static constexpr size_t p = g + sizeof(float) * KP * ld_g;
  static constexpr size_t stats = p + sizeof(T) * KP * ld_p;  // max, sum, lse per pixel
  static constexpr size_t bytes = stats + sizeof(float) * 3 * TN;
  static_assert(w % 128 == 0 && x % 128 == 0 && g % 128 == 0 && p % 128 == 0 && stats % 128 == 0,
                "every region starts 128-byte aligned");
};

// Grid: B * splits clusters of R blocks, launched with cluster size R.
template <class T, int KP>
__global__ void __launch_bounds__(kThreads, 1)
    class_pool_cluster_kernel(const T* __restrict__ x, const T* __restrict__ wg,
                              int64_t wg_batch_stride, const T* __restrict__ bg, T* __restrict__ g,
                              float* __restrict__ partial, float* __restrict__ mass_partial,
                              float scale, int C, int K, int64_t N, int64_t split_len, int splits) {
#if CONDNET_CLUSTERS
  namespace cg = cooperative_groups;
  using L = ClusterLayout<T, KP>;
  constexpr int CS = L::CS, TN = L::TN;
  const cg::cluster_group cluster = cg::this_cluster();
  const int R = static_cast<int>(cluster.num_blocks());
  const int r = static_cast<int>(cluster.block_rank());
  CONDNET_DYNAMIC_SMEM(smem);
  T* w_s = reinterpret_cast<T*>(smem + L::w);
  T* x_s = reinterpret_cast<T*>(smem + L::x);
  float* g_s = reinterpret_cast<float*>(smem + L::g);
  T* p_s = reinterpret_cast<T*>(smem + L::p);
  float* row_max = reinterpret_cast<float*>(smem + L::stats);
  float* row_sum = row_max + TN;
  float* lse = row_sum + TN;

  const int64_t z = blockIdx.x / R;  // the cluster: (image, pixel split)
  const int64_t b = z / splits;
  const int64_t start = (z % splits) * split_len;
  const int64_t stop = std::min(N, start + split_len);
  const int c0 = r * CS, cv = std::min(CS, C - c0);
  const int rows_per_block = (K + R - 1) / R;  // block q owns classes [q rpb, (q + 1) rpb)
  const int k_begin = std::min(K, r * rows_per_block);
  const int k_end = std::min(K, k_begin + rows_per_block);
  const int own_rows = k_end - k_begin;

  load_tile<KP, CS>(w_s, L::ld_w, wg + b * wg_batch_stride + c0, C, K, cv);
  // Rows K..KP-1 of p stay zero, so padded classes add nothing to f.
  for (int e = threadIdx.x; e < (KP - K) * TN; e += kThreads) {
    p_s[(K + e / TN) * L::ld_p + e % TN] = T(0);
  }
  TileAccumulator<T, KP, CS> f_acc;
  f_acc.zero();
  // Thread t < own_rows sums class k_begin + t's p * scale.
  const bool mass_row = mass_partial != nullptr && static_cast<int>(threadIdx.x) < own_rows;
  float mass = 0.0f;

  for (int64_t n0 = start; n0 < stop; n0 += TN) {
    const int nv = static_cast<int>(std::min<int64_t>(TN, stop - n0));
    load_tile<CS, TN>(x_s, L::ld_x, x + (b * C + c0) * N + n0, N, cv, nv);
    __syncthreads();
    // 1. this block's channels' share of the guide logits, 32 classes at a
    // time so that only f's accumulators stay in registers throughout.
    for (int k0 = 0; k0 < KP; k0 += 32) {
      TileAccumulator<T, 32, TN> g_acc;
      g_acc.zero();
      g_acc.template mma<CS, false, false>(w_s + k0 * L::ld_w, L::ld_w, x_s, L::ld_x);
      g_acc.store(g_s + k0 * L::ld_g, L::ld_g);
    }
    cluster.sync();

    // 2. the full logits of this block's classes; its rows of g.
    for (int e = threadIdx.x; e < own_rows * TN; e += kThreads) {
      const int k = k_begin + e / TN, j = e % TN;
      if (j >= nv) continue;
      float v = bg == nullptr ? 0.0f : to_acc(bg[k]);
      for (int q = 0; q < R; ++q) v += cluster.map_shared_rank(g_s, q)[k * L::ld_g + j];
      const T rounded = static_cast<T>(v);
      g[(b * K + k) * N + n0 + j] = rounded;
      g_s[k * L::ld_g + j] = to_acc(rounded);  // only this block reads its own rows from here on
    }
    __syncthreads();
    if (threadIdx.x < TN) {
      const int j = threadIdx.x;
      float m = -std::numeric_limits<float>::infinity(), s = 0.0f;
      if (j < nv) fold_logsumexp(m, s, g_s + k_begin * L::ld_g + j, L::ld_g, own_rows);
      row_max[j] = m;
      row_sum[j] = s;
    }
    cluster.sync();

    // 3. per-pixel log-sum-exp over all classes, then this block's rows of p * scale.
    if (threadIdx.x < TN) {
      const int j = threadIdx.x;
      float m = -std::numeric_limits<float>::infinity();
      for (int q = 0; q < R; ++q) m = fmaxf(m, cluster.map_shared_rank(row_max, q)[j]);
      float s = 0.0f;
      for (int q = 0; q < R; ++q) {
        const float mq = cluster.map_shared_rank(row_max, q)[j];
        if (mq > -std::numeric_limits<float>::infinity()) {
          s += cluster.map_shared_rank(row_sum, q)[j] * expf(mq - m);
        }
      }
      lse[j] = m + logf(s);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < own_rows * TN; e += kThreads) {
      const int k = k_begin + e / TN, j = e % TN;
      p_s[k * L::ld_p + j] =
          j < nv ? static_cast<T>(expf(g_s[k * L::ld_g + j] - lse[j]) * scale) : T(0);
    }
    cluster.sync();
    if (mass_row) {  // this block's rows stay as they are until the next tile's step 3
      const T* row = p_s + (k_begin + threadIdx.x) * L::ld_p;
      for (int j = 0; j < nv; ++j) mass += to_acc(row[j]);
    }

    // 4. the other blocks' rows of p * scale.
    for (int q = 0; q < R; ++q) {
      const int q_begin = std::min(K, q * rows_per_block);
      const int q_rows = std::min(K, q_begin + rows_per_block) - q_begin;
      if (q == r || q_rows <= 0) continue;
      const T* remote = cluster.map_shared_rank(p_s, q);
      for (int e = threadIdx.x; e < q_rows * TN; e += kThreads) {
        const int k = q_begin + e / TN, j = e % TN;
        p_s[k * L::ld_p + j] = remote[k * L::ld_p + j];
      }
    }
    __syncthreads();

    // 5. f[:, this block's channels] += (p * scale) x^T.
    f_acc.template mma<TN, false, true>(p_s, L::ld_p, x_s, L::ld_x);
    __syncthreads();  // x_s and g_s are rewritten by the next tile
  }

  f_acc.store(g_s, L::ld_g);
  __syncthreads();
  if (mass_row) mass_partial[z * K + k_begin + threadIdx.x] = mass;
  float* out = partial + z * K * C + c0;
  for (int e = threadIdx.x; e < K * CS; e += kThreads) {
    const int k = e / CS, j = e % CS;
    if (j < cv) out[static_cast<int64_t>(k) * C + j] = g_s[k * L::ld_g + j];
  }
  cluster.sync();  // no block leaves while another may still read its shared memory
#else
  __trap();  // compiled below sm_90: never launched (max_active_clusters says 0)
#endif
}

// The one-pass forward applies to float16/bfloat16 on sm_90 and newer with
// C <= 512 and K <= 256; CONDNET_CUDA_ONE_PASS=0 turns it off (to compare
// with the two-pass path).
inline bool one_pass_enabled() {
  const char* flag = std::getenv("CONDNET_CUDA_ONE_PASS");
  return flag == nullptr || std::string(flag) != "0";
}

// The launch of one class capacity KP; see launch_class_pool_cluster.
template <class T, int KP>
at::Tensor launch_class_pool_cluster_kp(const at::Tensor& x, const at::Tensor& wg,
                                        const at::Tensor& bg, const at::Tensor& g, double scale,
                                        at::Tensor* mass_partial) {
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2), K = wg.size(-2);
  const int R = static_cast<int>(ceil_div(C, kClusterChannels));
  auto* kernel = &class_pool_cluster_kernel<T, KP>;
  const size_t smem = ClusterLayout<T, KP>::bytes;
  const int active = max_active_clusters(kernel, R, smem);
  if (active == 0) return at::Tensor();
  // As many pixel splits as fill the GPU's concurrent clusters once.
  const int64_t tiles = ceil_div(N, kClusterPixels);
  const int splits =
      static_cast<int>(std::clamp<int64_t>(active / B, 1, std::min<int64_t>(tiles, 64)));
  const int64_t split_len = ceil_div(tiles, splits) * kClusterPixels;
  at::Tensor partial = at::empty({B, splits, K, C}, x.options().dtype(at::kFloat));
  if (mass_partial != nullptr) *mass_partial = at::empty({B, splits, K}, partial.options());
  launch_cluster(kernel, checked_blocks(B * splits * R, x), R, smem, current_stream(),
                 x.const_data_ptr<T>(), wg.const_data_ptr<T>(), wg.dim() == 3 ? K * C : 0,
                 bg.defined() ? bg.const_data_ptr<T>() : nullptr, g.mutable_data_ptr<T>(),
                 partial.mutable_data_ptr<float>(),
                 mass_partial != nullptr ? mass_partial->mutable_data_ptr<float>() : nullptr,
                 static_cast<float>(scale), static_cast<int>(C), static_cast<int>(K), N, split_len,
                 splits);
  return partial;
}

// g (B, K, N) and the partial sums (B, splits, K, C) of (p * scale) x^T in
// one pass over x (and with mass_partial, *mass_partial (B, splits, K) the
// partial sums of p * scale), or an undefined tensor (nothing launched) where
// the one-pass path does not apply; x (B, C, N), wg (K, C) or (B, K, C), bg
// (K) or undefined, contiguous.
template <class T>
at::Tensor launch_class_pool_cluster(const at::Tensor& x, const at::Tensor& wg,
                                     const at::Tensor& bg, const at::Tensor& g, double scale,
                                     at::Tensor* mass_partial = nullptr) {
  if constexpr (!Tiles<T>::kTensorCores) {
    return at::Tensor();
  } else {
    const int64_t C = x.size(1), K = wg.size(-2);
    if (!one_pass_enabled() || compute_capability_major(x) < 9 ||
        C > kClusterChannels * kMaxClusterBlocks) {
      return at::Tensor();
    }
    // Class capacities: Cityscapes and Pascal Context, 128, ADE20K, 256.
    if (K <= 64) return launch_class_pool_cluster_kp<T, 64>(x, wg, bg, g, scale, mass_partial);
    if (K <= 128) return launch_class_pool_cluster_kp<T, 128>(x, wg, bg, g, scale, mass_partial);
    if (K <= 160) return launch_class_pool_cluster_kp<T, 160>(x, wg, bg, g, scale, mass_partial);
    if (K <= 256) return launch_class_pool_cluster_kp<T, 256>(x, wg, bg, g, scale, mass_partial);
    return at::Tensor();
  }
}

}  // namespace condnet::cuda
