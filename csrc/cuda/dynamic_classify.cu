// dynamic_classify on CUDA: the per-image 1x1 classifier y[b] = w[b] x[b] +
// beta[b] and its backward, dx = w^T dy, dw = dy x^T, dbeta = sum_n dy.
// No atomics: the pixel-split partial sums of dw are added by ATen's
// reduction, whose order is fixed for a given shape and GPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"
#include "channel_product_kernel.cuh"
#include "launch.cuh"
#include "logits_kernel.cuh"
#include "pixel_reduce_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

at::Tensor dynamic_classify_forward(const at::Tensor& x_in, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias) {
  check_dynamic_classify_inputs(x_in, weight, bias);
  const DeviceGuard device_guard(x_in);
  const KernelScope scope;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = weight.size(1);
  at::Tensor y = at::empty({B, K, H, W}, x_in.options());
  if (B == 0) return y;

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor w = weight.contiguous();
  const at::Tensor beta = bias.has_value() ? bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "condnet::dynamic_classify", [&] {
                                    launch_logits<scalar_t, false>(x, w, K * C, beta, K,
                                                                   y.view({B, K, N}), at::Tensor());
                                  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dynamic_classify_backward(
    const at::Tensor& grad_y, const at::Tensor& x_in, const at::Tensor& weight,
    std::array<bool, 3> output_mask) {
  check_dynamic_classify_inputs(x_in, weight, std::nullopt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = weight.size(1);
  check_grad(grad_y, x_in, {B, K, H, W}, "grad_logits");
  const DeviceGuard device_guard(x_in);
  const KernelScope scope;
  const auto [need_dx, need_dw, need_db] = output_mask;

  at::Tensor dx, dw, db;
  if (need_dx) dx = at::empty({B, C, H, W}, x_in.options());
  if (need_dw) dw = at::empty({B, K, C}, weight.options());
  if (need_db) db = at::empty({B, K}, weight.options());
  if (B == 0) return {dx, dw, db};

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor dy = grad_y.contiguous().view({B, K, N});
  const at::Tensor w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::dynamic_classify_backward", [&] {
        using T = scalar_t;
        const at::Tensor none;
        if (need_dx) {
          launch_channel_product<T, false, false>(w, K * C, dy, none, none, none, none, none,
                                                  dx.view({B, C, N}));
        }
        if (need_dw) {
          const at::Tensor partial = launch_pixel_reduce<T, false>(x, dy, none, acc_t<T>(1));
          dw.copy_(partial.sum(1));
        }
        if (need_db) db.copy_(dy.sum(2, false, acc_type(x.scalar_type())));
      });
  return {dx, dw, db};
}

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("dynamic_classify", &condnet::cuda::dynamic_classify_forward);
  m.impl("dynamic_classify_backward", &condnet::cuda::dynamic_classify_backward);
}
#endif
