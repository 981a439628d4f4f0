// The host side of dynamic_classify that the CPU and CUDA kernels share: input
// checks, outputs, the empty batch and the gradient mask. Each device file
// defines a Kernels type and registers dynamic_classify_forward<Kernels> and
// dynamic_classify_backward<Kernels>. Kernels derives from its device's Device
// (cpu/device.h, cuda/launch.cuh: the guard and the output allocation) and adds
//
//   forward(x, weight, bias, y)                 y = w x + beta
//   backward(dy, x, weight, dx, dw, db)
//
// with x (B, C, N), y and dy (B, K, N) contiguous, weight (B, K, C) and bias
// (B, K) as the caller gave them (bias undefined without one), and each of dx
// (B, C, N), dw (B, K, C), db (B, K) undefined where the mask does not ask for
// it. The kernels only see a non-empty batch.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"

namespace condnet::host {

template <class Kernels>
at::Tensor dynamic_classify_forward(const at::Tensor& x, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  check_dynamic_classify_inputs(x, weight, bias);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = H * W, K = weight.size(1);
  at::Tensor y = Kernels::empty_output({B, K, H, W}, x.options());
  if (B == 0) return y;
  Kernels::forward(x.contiguous().view({B, C, N}), weight, bias.has_value() ? *bias : at::Tensor(),
                   y.view({B, K, N}));
  return y;
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_classify_backward(
    const at::Tensor& grad_logits, const at::Tensor& x, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_dynamic_classify_inputs(x, weight, std::nullopt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = H * W, K = weight.size(1);
  check_grad(grad_logits, x, {B, K, H, W}, "grad_logits");
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const auto [need_dx, need_dw, need_db] = output_mask;
  at::Tensor dx, dw, db;
  if (need_dx) dx = Kernels::empty_output({B, C, H, W}, x.options());
  if (need_dw) dw = at::empty({B, K, C}, weight.options());
  if (need_db) db = at::empty({B, K}, weight.options());
  if (B == 0 || (!need_dx && !need_dw && !need_db)) return {dx, dw, db};
  Kernels::backward(grad_logits.contiguous().view({B, K, N}), x.contiguous().view({B, C, N}),
                    weight, need_dx ? dx.view({B, C, N}) : at::Tensor(), dw, db);
  return {dx, dw, db};
}

}  // namespace condnet::host
