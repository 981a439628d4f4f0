// project on CUDA: theta[b, k] = A[k] f[b, k] + a[k] and its backward, as
// weight streams (project_kernel.cuh). A may be float32 while f is
// float16/bfloat16; it is read as it is, never copied.
#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"
#include "launch.cuh"
#include "project_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

at::Tensor project_forward(const at::Tensor& class_feats, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  check_project_inputs(class_feats, weight, bias);
  const DeviceGuard device_guard(class_feats);
  const KernelScope scope;
  const int64_t B = class_feats.size(0), K = class_feats.size(1), C = class_feats.size(2);
  at::Tensor theta = at::empty({B, K, C + 1}, class_feats.options());
  if (B == 0) return theta;
  const at::Tensor f = class_feats.contiguous();
  const at::Tensor A = weight.contiguous();
  const at::Tensor a = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch_project_types(f, A, [&](auto t, auto tw) {
    launch_project_forward<decltype(t), decltype(tw)>(f, A, a, theta);
  });
  return theta;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> project_backward(
    const at::Tensor& grad_theta, const at::Tensor& class_feats, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_project_inputs(class_feats, weight, std::nullopt);
  const int64_t B = class_feats.size(0), K = class_feats.size(1), C = class_feats.size(2);
  check_grad(grad_theta, class_feats, {B, K, C + 1}, "grad_theta");
  const DeviceGuard device_guard(class_feats);
  const KernelScope scope;
  const auto [need_df, need_dA, need_da] = output_mask;
  at::Tensor df, dA, da;
  if (need_df) df = at::empty({B, K, C}, class_feats.options());
  if (need_dA) dA = at::empty({K, C + 1, C}, weight.options());
  if (need_da) da = at::empty({K, C + 1}, weight.options());
  if (B == 0) {
    // No image: the reductions over images are zero.
    if (need_dA) dA.zero_();
    if (need_da) da.zero_();
    return {df, dA, da};
  }
  if (!need_df && !need_dA && !need_da) return {df, dA, da};
  const at::Tensor f = class_feats.contiguous();
  const at::Tensor A = weight.contiguous();
  const at::Tensor dtheta = grad_theta.contiguous();
  dispatch_project_types(f, A, [&](auto t, auto tw) {
    launch_project_backward<decltype(t), decltype(tw)>(dtheta, f, A, df, dA, da);
  });
  return {df, dA, da};
}

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("project", &condnet::cuda::project_forward);
  m.impl("project_backward", &condnet::cuda::project_backward);
}
#endif
