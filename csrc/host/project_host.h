// The host side of project that the CPU and CUDA kernels share: input checks,
// outputs, the empty batch and the gradient mask. Each device file defines a
// Kernels type and registers project_forward<Kernels> and
// project_backward<Kernels>. Kernels derives from its device's Device
// (cpu/device.h, cuda/launch.cuh: the guard and the output allocation) and adds
//
//   forward<T, TW>(f, A, a, theta)             theta = A f + a
//   backward<T, TW>(dtheta, f, A, df, dA, da)
//
// for class_feats' dtype T and proj_weight's TW (dispatch_project_types).
// Every input is contiguous; a is undefined without a bias, and each of df,
// dA, da is undefined where the mask does not ask for it. The kernels only
// see a non-empty batch.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"

namespace condnet::host {

template <class Kernels>
at::Tensor project_forward(const at::Tensor& class_feats, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias) {
  check_project_inputs(class_feats, weight, bias);
  const typename Kernels::Guard device_guard(class_feats);
  const KernelScope scope;
  const int64_t B = class_feats.size(0), K = class_feats.size(1), C = class_feats.size(2);
  at::Tensor theta = at::empty({B, K, C + 1}, class_feats.options());
  if (B == 0) return theta;
  const at::Tensor f = class_feats.contiguous();
  const at::Tensor A = weight.contiguous();
  const at::Tensor a = bias.has_value() ? bias->contiguous() : at::Tensor();
  dispatch_project_types(f, A, [&](auto t, auto tw) {
    Kernels::template forward<decltype(t), decltype(tw)>(f, A, a, theta);
  });
  return theta;
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> project_backward(const at::Tensor& grad_theta,
                                                                const at::Tensor& class_feats,
                                                                const at::Tensor& weight,
                                                                std::array<bool, 3> output_mask) {
  check_project_inputs(class_feats, weight, std::nullopt);
  const int64_t B = class_feats.size(0), K = class_feats.size(1), C = class_feats.size(2);
  check_grad(grad_theta, class_feats, {B, K, C + 1}, "grad_theta");
  const typename Kernels::Guard device_guard(class_feats);
  const KernelScope scope;
  const auto [need_df, need_dA, need_da] = output_mask;
  at::Tensor df, dA, da;
  if (need_df) df = at::empty({B, K, C}, class_feats.options());
  if (need_dA) dA = Kernels::empty_output({K, C + 1, C}, weight.options());
  if (need_da) da = at::empty({K, C + 1}, weight.options());
  if (B == 0) {
    // No image: no gradient flows, and the reductions over images are zero.
    if (need_dA) dA.zero_();
    if (need_da) da.zero_();
    return {df, dA, da};
  }
  if (!need_df && !need_dA && !need_da) return {df, dA, da};
  const at::Tensor f = class_feats.contiguous();
  const at::Tensor A = weight.contiguous();
  const at::Tensor dtheta = grad_theta.contiguous();
  dispatch_project_types(f, A, [&](auto t, auto tw) {
    Kernels::template backward<decltype(t), decltype(tw)>(dtheta, f, A, df, dA, da);
  });
  return {df, dA, da};
}

}  // namespace condnet::host
