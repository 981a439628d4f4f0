// The part of CUDA the condnet kernels use, in one place. Under
// CONDNET_EMULATE the same kernel sources compile as host C++ against
// emulate/host_shim.h, which runs each CUDA thread as a host thread; the
// tests use that to check the kernels' logic on machines without a GPU.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#ifdef CONDNET_EMULATE
#include "emulate/host_shim.h"
#define CONDNET_TENSOR_CORES 1
#define CONDNET_CLUSTERS 1
#define CONDNET_DYNAMIC_SMEM(name) unsigned char* name = ::emu::block_smem
#else
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>
// WMMA on bfloat16 needs sm_80; the host pass (no __CUDA_ARCH__) takes the
// FMA path, which is never run.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define CONDNET_TENSOR_CORES 1
#else
#define CONDNET_TENSOR_CORES 0
#endif
// Thread-block clusters and distributed shared memory need sm_90.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define CONDNET_CLUSTERS 1
#else
#define CONDNET_CLUSTERS 0
#endif
#define CONDNET_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace condnet::cuda {

// Every kernel runs 256 threads (8 warps) per block.
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Accumulation type: float for half, bfloat16 and float; double for double.
template <class T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <class T>
using acc_t = typename Acc<T>::type;

template <class T>
__device__ __forceinline__ acc_t<T> to_acc(T v) {
  return static_cast<acc_t<T>>(v);
}

// Rounds an accumulated value to T and back: what the reference sees when an
// intermediate it computes in T is read again in float.
template <class T>
__device__ __forceinline__ acc_t<T> round_to(acc_t<T> v) {
  return static_cast<acc_t<T>>(static_cast<T>(v));
}

__device__ __forceinline__ float exp_acc(float v) { return expf(v); }
__device__ __forceinline__ double exp_acc(double v) { return exp(v); }
__device__ __forceinline__ float log_acc(float v) { return logf(v); }
__device__ __forceinline__ double log_acc(double v) { return log(v); }
__device__ __forceinline__ float sqrt_acc(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_acc(double v) { return sqrt(v); }

}  // namespace condnet::cuda
