// The host side of cosine_classify (CAC's per-image cosine classifier) that
// the CPU and CUDA kernels share: input checks, outputs, the empty batch and
// the gradient mask. Each device file defines a Kernels type and registers
// cosine_classify_forward<Kernels> and cosine_classify_backward<Kernels>.
// Kernels derives from its device's Device (cpu/device.h, cuda/launch.cuh: the
// guard and the output allocation) and adds
//
//   forward(x, weight, eps, y, x_norm)
//       x_norm[b, n] = |x[b, :, n]| (unclamped), y[b, k, n] = <w[b, k], x_n> / max(x_norm, eps)
//   backward(dy, x, weight, y, x_norm, eps, dx, dw)
//       with r_n = max(x_norm_n, eps):
//       dw[b, k] = sum_n dy[b, k, n] / r_n x_n
//       dx_n = sum_k w[k] dy[k, n] / r_n
//              - [x_norm_n >= eps] x_n (sum_k dy[k, n] y[k, n]) / (r_n x_norm_n)
//
// with x (B, C, N), y and dy (B, K, N) and x_norm (B, N) contiguous (x_norm
// float32 for 16-bit x, else x's dtype), weight (B, K, C) as the caller gave
// it, and each of dx (B, C, N), dw (B, K, C) undefined where the mask does not
// ask for it. With eps = 0 a zero pixel divides by zero, as the released CAC
// code does. The kernels only see a non-empty batch.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"
#include "context_checks.h"

namespace condnet::host {

template <class Kernels>
std::tuple<at::Tensor, at::Tensor> cosine_classify_forward(const at::Tensor& x,
                                                           const at::Tensor& weight, double eps) {
  check_features(x);
  check_cosine_weight(x, weight, "weight");
  check_eps(eps);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = H * W, K = weight.size(1);
  at::Tensor y = Kernels::empty_output({B, K, H, W}, x.options());
  at::Tensor x_norm = at::empty({B, H, W}, x.options().dtype(acc_type(x.scalar_type())));
  if (B == 0) return {y, x_norm};
  Kernels::forward(x.contiguous().view({B, C, N}), weight, eps, y.view({B, K, N}),
                   x_norm.view({B, N}));
  return {y, x_norm};
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor> cosine_classify_backward(const at::Tensor& grad_logits,
                                                            const at::Tensor& x,
                                                            const at::Tensor& weight,
                                                            const at::Tensor& logits,
                                                            const at::Tensor& x_norm, double eps,
                                                            std::array<bool, 2> output_mask) {
  check_features(x);
  check_cosine_weight(x, weight, "weight");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = H * W, K = weight.size(1);
  check_grad(grad_logits, x, {B, K, H, W}, "grad_logits");
  check_grad(logits, x, {B, K, H, W}, "logits");
  check_x_norm(x_norm, x);
  check_eps(eps);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const auto [need_dx, need_dw] = output_mask;
  at::Tensor dx, dw;
  if (need_dx) dx = Kernels::empty_output({B, C, H, W}, x.options());
  if (need_dw) dw = at::empty({B, K, C}, weight.options());
  if (B == 0 || (!need_dx && !need_dw)) return {dx, dw};
  Kernels::backward(grad_logits.contiguous().view({B, K, N}), x.contiguous().view({B, C, N}),
                    weight, logits.contiguous().view({B, K, N}), x_norm.contiguous().view({B, N}),
                    eps, need_dx ? dx.view({B, C, N}) : at::Tensor(), dw);
  return {dx, dw};
}

}  // namespace condnet::host
