// project on CUDA: theta[b, k] = A[k] f[b, k] + a[k] and its backward, as
// weight streams (project_kernel.cuh). A may be float32 while f is
// float16/bfloat16; it is read as it is, never copied. Checks, outputs, the
// empty batch and the gradient mask: host/project_host.h.
#include <ATen/ATen.h>

#include "../host/project_host.h"
#include "launch.cuh"
#include "project_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

// project's CUDA kernels, as host/project_host.h calls them.
struct ProjectKernels : Device {
  template <class T, class TW>
  static constexpr auto forward = &launch_project_forward<T, TW>;
  template <class T, class TW>
  static constexpr auto backward = &launch_project_backward<T, TW>;
};

constexpr auto project_forward = &host::project_forward<ProjectKernels>;
constexpr auto project_backward = &host::project_backward<ProjectKernels>;

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("project", condnet::cuda::project_forward);
  m.impl("project_backward", condnet::cuda::project_backward);
}
#endif
