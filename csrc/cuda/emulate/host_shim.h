// Host emulation of the CUDA features the condnet kernels use, so that the
// kernel sources run on machines without a GPU (tests/test_ops_cuda_emulated.py):
//
//   - every CUDA thread of a block is a host thread; __syncthreads() is a
//     barrier over the block's threads;
//   - blocks run one after another, so __shared__ variables can be function
//     statics;
//   - a WMMA fragment holds its whole 16x16 tile in every lane, and the
//     products are exact float32 sums of the 16-bit inputs;
//   - cluster launches run the blocks of a cluster at the same time, each
//     with its own dynamic shared memory, which cluster_group's
//     map_shared_rank reaches and whose sync() is a barrier over the cluster.
//
// This checks the kernels' indexing, masking, tiling, reduction order and
// barrier placement. It says nothing about speed, the GPU memory model,
// fragment layouts or anything else only hardware shows.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() ::emu::sync_block()

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  explicit dim3(uint64_t x_) : x(static_cast<unsigned>(x_)) {}
};
inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using __half = c10::Half;
using __nv_bfloat16 = c10::BFloat16;

namespace emu {

// A reusable barrier for the threads of one block. A thread that returns
// from the kernel leaves it, so the others do not wait for it forever.
class Barrier {
 public:
  explicit Barrier(int threads) : threads_(threads) {}

  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == threads_) {
      release();
      return;
    }
    cv_.wait(lock, [&] { return generation != generation_; });
  }

  void leave() {
    std::unique_lock<std::mutex> lock(mutex_);
    --threads_;
    if (arrived_ > 0 && arrived_ == threads_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  int threads_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

inline thread_local Barrier* block_barrier = nullptr;

inline void sync_block() { block_barrier->wait(); }

// The block's dynamic shared memory (CONDNET_DYNAMIC_SMEM in a kernel).
inline thread_local unsigned char* block_smem = nullptr;

// What a thread of a cluster launch knows of its cluster.
struct ClusterState {
  Barrier* barrier;
  std::vector<unsigned char*> smem;  // each block's dynamic shared memory
  int blocks;
};
inline thread_local ClusterState* cluster_state = nullptr;
inline thread_local int cluster_rank = 0;

// Runs body() as `blocks` blocks of `threads` threads, one block at a time.
template <class Body>
void launch(int64_t blocks, int threads, Body&& body) {
  for (int64_t block = 0; block < blocks; ++block) {
    Barrier barrier(threads);
    std::vector<std::thread> workers;
    workers.reserve(threads);
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        threadIdx = dim3(t);
        blockIdx = dim3(block);
        blockDim = dim3(threads);
        gridDim = dim3(blocks);
        block_barrier = &barrier;
        body();
        barrier.leave();
      });
    }
    for (auto& worker : workers) worker.join();
  }
}

// Runs body() as blocks of `threads` threads in clusters of `cluster`
// consecutive blocks: the blocks of one cluster run at the same time, each
// with `smem_bytes` of dynamic shared memory filled with 0xFF bytes (NaN as
// floats), so a read of shared memory nobody wrote shows up in the results.
template <class Body>
void launch_cluster(int64_t blocks, int cluster, int threads, size_t smem_bytes, Body&& body) {
  for (int64_t first = 0; first < blocks; first += cluster) {
    std::vector<std::vector<unsigned char>> memory(cluster,
                                                   std::vector<unsigned char>(smem_bytes, 0xFF));
    std::vector<std::unique_ptr<Barrier>> block_barriers;
    Barrier cluster_barrier(cluster * threads);
    ClusterState state{&cluster_barrier, {}, cluster};
    for (int q = 0; q < cluster; ++q) {
      state.smem.push_back(memory[q].data());
      block_barriers.push_back(std::make_unique<Barrier>(threads));
    }
    std::vector<std::thread> workers;
    workers.reserve(static_cast<size_t>(cluster) * threads);
    for (int q = 0; q < cluster; ++q) {
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, q, t] {
          threadIdx = dim3(t);
          blockIdx = dim3(first + q);
          blockDim = dim3(threads);
          gridDim = dim3(blocks);
          block_barrier = block_barriers[q].get();
          block_smem = state.smem[q];
          cluster_state = &state;
          cluster_rank = q;
          body();
          block_barriers[q]->leave();
          cluster_barrier.leave();
        });
      }
    }
    for (auto& worker : workers) worker.join();
  }
}

}  // namespace emu

namespace cooperative_groups {

struct cluster_group {
  void sync() const { emu::cluster_state->barrier->wait(); }
  unsigned num_blocks() const { return static_cast<unsigned>(emu::cluster_state->blocks); }
  unsigned block_rank() const { return static_cast<unsigned>(emu::cluster_rank); }
  // The address of *p in the shared memory of block `rank` of the cluster.
  template <class T>
  T* map_shared_rank(T* p, unsigned rank) const {
    const auto offset = reinterpret_cast<unsigned char*>(p) - emu::block_smem;
    return reinterpret_cast<T*>(emu::cluster_state->smem[rank] + offset);
  }
};

inline cluster_group this_cluster() { return {}; }

}  // namespace cooperative_groups

namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

// Element (r, c) of the 16x16 tile is x[r * 16 + c], in every lane.
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the kernels use 16x16x16 tiles only");
  static constexpr int num_elements = 256;
  T x[256];
};

template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = std::is_same_v<Layout, col_major> ? p[c * ldm + r] : p[r * ldm + c];
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

// Lane 0 writes for the warp (the values are the same in every lane).
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * 16 + c];
}

template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      float sum = c.x[r * 16 + col];
      for (int k = 0; k < 16; ++k)
        sum += static_cast<float>(a.x[r * 16 + k]) * static_cast<float>(b.x[k * 16 + col]);
      out[r * 16 + col] = sum;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

template <class Use, class T, class Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, T value) {
  for (auto& v : f.x) v = value;
}

}  // namespace nvcuda::wmma
