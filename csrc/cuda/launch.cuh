// Host side of the kernel launches: device guard, stream, what the GPU offers
// (multiprocessors, compute capability, concurrent clusters), grid size
// checks, plain and cluster launches with their error checks, and the Device
// the shared host code (host/*_host.h) is given. Under
// CONDNET_EMULATE launches run on the host through emulate/host_shim.h
// (tests only).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../kernel_host.h"
#include "device_api.cuh"

#ifdef CONDNET_EMULATE

namespace condnet::cuda {
struct DeviceGuard {
  explicit DeviceGuard(const at::Tensor&) {}
};
using Stream = int;
inline Stream current_stream() { return 0; }
// A small, fixed "GPU" so that the emulated grids split work as a real one does.
inline int multiprocessor_count(const at::Tensor&) { return 4; }
inline int compute_capability_major(const at::Tensor&) { return 9; }

// How many clusters of `cluster` blocks the emulated GPU runs at once.
template <class... Params>
int max_active_clusters(void (*)(Params...), int, size_t) {
  return 2;
}

// Runs `kernel` as clusters of `cluster` blocks with `smem` bytes of dynamic
// shared memory each.
template <class... Params, class... Args>
void launch_cluster(void (*kernel)(Params...), int64_t blocks, int cluster, size_t smem, Stream,
                    Args... args) {
  ::emu::launch_cluster(blocks, cluster, kThreads, smem, [&] { kernel(args...); });
}
}  // namespace condnet::cuda

#define CONDNET_LAUNCH(kernel, blocks, stream, ...) \
  ::emu::launch(blocks, ::condnet::cuda::kThreads, [&] { kernel(__VA_ARGS__); })

#else

// c10's stream and guard headers only: ATen/cuda/CUDAContext.h would pull in
// cuBLAS/cuSPARSE headers that a bare nvcc install does not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <map>
#include <mutex>
#include <tuple>

namespace condnet::cuda {
struct DeviceGuard {
  c10::cuda::CUDAGuard guard;
  explicit DeviceGuard(const at::Tensor& t) : guard(t.device()) {}
};
using Stream = cudaStream_t;
inline Stream current_stream() { return c10::cuda::getCurrentCUDAStream(); }
inline int multiprocessor_count(const at::Tensor& t) {
  int count = 0;
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, t.device().index()));
  return count;
}
inline int compute_capability_major(const at::Tensor& t) {
  int major = 0;
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, t.device().index()));
  return major;
}

inline cudaLaunchConfig_t cluster_config(int64_t blocks, int cluster, size_t smem, Stream stream,
                                         cudaLaunchAttribute* attribute) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  attribute->id = cudaLaunchAttributeClusterDimension;
  attribute->val.clusterDim.x = static_cast<unsigned>(cluster);
  attribute->val.clusterDim.y = 1;
  attribute->val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  return config;
}

template <class... Params>
int query_active_clusters(void (*kernel)(Params...), int cluster, size_t smem) {
  // Cluster kernels are empty below sm_90; a build for older archs that the
  // driver JIT-compiles for a newer GPU must not run them.
  cudaFuncAttributes attributes;
  if (cudaFuncGetAttributes(&attributes, kernel) != cudaSuccess || attributes.ptxVersion < 90) {
    (void)cudaGetLastError();
    return 0;
  }
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(smem)) != cudaSuccess) {
    (void)cudaGetLastError();  // too much shared memory for this GPU: not an error here
    return 0;
  }
  cudaLaunchAttribute attribute;
  const cudaLaunchConfig_t config = cluster_config(cluster, cluster, smem, nullptr, &attribute);
  int active = 0;
  if (cudaOccupancyMaxActiveClusters(&active, kernel, &config) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return active;
}

// How many clusters of `cluster` blocks with `smem` bytes of dynamic shared
// memory each (the same for every launch of `kernel`) the current GPU runs at
// once; 0 if it cannot run one. The driver queries take longer than a launch,
// so each (kernel, GPU, cluster size) is asked once per process.
template <class... Params>
int max_active_clusters(void (*kernel)(Params...), int cluster, size_t smem) {
  static std::mutex mutex;
  static std::map<std::tuple<const void*, int, int>, int> known;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  const auto [entry, inserted] =
      known.try_emplace({reinterpret_cast<const void*>(kernel), device, cluster}, 0);
  if (inserted) entry->second = query_active_clusters(kernel, cluster, smem);
  return entry->second;
}

// Runs `kernel` as clusters of `cluster` blocks with `smem` bytes of dynamic
// shared memory each (after max_active_clusters said it can).
template <class... Params, class... Args>
void launch_cluster(void (*kernel)(Params...), int64_t blocks, int cluster, size_t smem,
                    Stream stream, Args... args) {
  cudaLaunchAttribute attribute;
  const cudaLaunchConfig_t config = cluster_config(blocks, cluster, smem, stream, &attribute);
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args...));
}
}  // namespace condnet::cuda

#define CONDNET_LAUNCH(kernel, blocks, stream, ...)                                               \
  do {                                                                                            \
    kernel<<<static_cast<unsigned>(blocks), ::condnet::cuda::kThreads, 0, stream>>>(__VA_ARGS__); \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                               \
  } while (0)

#endif

namespace condnet::cuda {

// The GPU as the shared host code (host/*_host.h) sees it: the guard that
// makes an input's device current for the launches, and plain outputs. The
// CUDA kernels derive their Kernels types from it.
struct Device {
  using Guard = DeviceGuard;

  static at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int checked_int(int64_t v, const char* what) {
  TORCH_CHECK_VALUE(v <= std::numeric_limits<int32_t>::max(), "condnet CUDA kernels: ", v, " ",
                    what, " exceed 2^31 - 1");
  return static_cast<int>(v);
}

// Grids are one-dimensional (x allows 2^31 - 1 blocks); a shape that needs
// more gets an error naming it rather than a failed launch.
inline int64_t checked_blocks(int64_t blocks, const at::Tensor& x) {
  TORCH_CHECK_VALUE(blocks <= std::numeric_limits<int32_t>::max(),
                    "condnet CUDA kernels: x of shape ", x.sizes(),
                    " needs more than 2^31 - 1 thread blocks; split the batch");
  return blocks;
}

// How many pixel splits a reduction over pixels gets: enough blocks for two
// waves on every multiprocessor, each split at least 4 reduction steps long.
// Depends only on the shape and the GPU, so runs stay bitwise repeatable.
inline int pixel_splits(int64_t blocks_per_split, int64_t N, int step, int multiprocessors) {
  const int64_t want = ceil_div(2 * static_cast<int64_t>(multiprocessors), blocks_per_split);
  const int64_t most = std::max<int64_t>(1, N / (4 * static_cast<int64_t>(step)));
  return static_cast<int>(std::clamp<int64_t>(want, 1, std::min<int64_t>(most, 64)));
}

}  // namespace condnet::cuda
