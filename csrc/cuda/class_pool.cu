// class_pool on CUDA: guide logits, softmax over classes and class-wise
// pooling, without ever storing the (B, K, N) softmax map.
//
// Forward: on sm_90, float16/bfloat16, C <= 512 and K <= 256, one pass over x
// on thread-block clusters (class_pool_cluster_kernel.cuh). Otherwise two:
// logits_kernel writes g and the per-pixel log-sum-exp, and the pooling
// kernel forms p / N tile by tile from them. Backward: softmax_backward_kernel
// gives dgt (the gradient of g, in x's dtype), then dx = Wg^T dgt + df^T p / N
// (+ w^T dy, the dynamic classifier's term, when the whole classifier's
// backward passes grad_logits and classifier_weight) and dWg = sum dgt x^T. No atomics: the pixel-split partial sums are added
// by ATen's reduction, whose order is fixed for a given shape and GPU.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"
#include "channel_product_kernel.cuh"
#include "class_pool_cluster_kernel.cuh"
#include "launch.cuh"
#include "logits_kernel.cuh"
#include "pixel_reduce_kernel.cuh"
#include "softmax_backward_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

std::tuple<at::Tensor, at::Tensor> class_pool_forward(
    const at::Tensor& x_in, const at::Tensor& guide_weight,
    const std::optional<at::Tensor>& guide_bias) {
  check_class_pool_inputs(x_in, guide_weight, guide_bias);
  const DeviceGuard device_guard(x_in);
  const KernelScope scope;
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  at::Tensor g = at::empty({B, K, H, W}, x_in.options());
  at::Tensor f = at::empty({B, K, C}, x_in.options());
  if (B == 0) return {g, f};

  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor wg = guide_weight.contiguous();
  const at::Tensor bg = guide_bias.has_value() ? guide_bias->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::class_pool", [&] {
        using T = scalar_t;
        const at::Tensor g3 = g.view({B, K, N});
        at::Tensor partial = launch_class_pool_cluster<T>(x, wg, bg, g3);
        if (!partial.defined()) {
          const at::Tensor lse = at::empty({B, N}, x.options().dtype(acc_type(x.scalar_type())));
          launch_logits<T, true>(x, wg, 0, bg, 0, g3, lse);
          partial =
              launch_pixel_reduce<T, true>(x, g3, lse, acc_t<T>(1.0 / static_cast<double>(N)));
        }
        f.copy_(partial.sum(1));
      });
  return {g, f};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> class_pool_backward(
    const std::optional<at::Tensor>& grad_g, const std::optional<at::Tensor>& grad_f,
    const at::Tensor& x_in, const at::Tensor& guide_weight, const at::Tensor& guide_logits,
    std::array<bool, 3> output_mask, const std::optional<at::Tensor>& grad_logits,
    const std::optional<at::Tensor>& classifier_weight) {
  check_class_pool_inputs(x_in, guide_weight, std::nullopt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  check_grad(guide_logits, x_in, {B, K, H, W}, "guide_logits");
  check_grad(grad_g, x_in, {B, K, H, W}, "grad_guide_logits");
  check_grad(grad_f, x_in, {B, K, C}, "grad_class_feats");
  check_classifier_term(grad_logits, classifier_weight, x_in);
  const DeviceGuard device_guard(x_in);
  const KernelScope scope;
  const auto [need_dx, need_dw, need_db] = output_mask;
  const bool pooled = grad_g.has_value() || grad_f.has_value();
  const bool classifier_term = need_dx && grad_logits.has_value();

  at::Tensor dx, dw, db;
  if (need_dx) {
    dx = classifier_term ? at::empty({B, C, H, W}, x_in.options())
                         : at::zeros({B, C, H, W}, x_in.options());
  }
  if (need_dw) dw = at::zeros({K, C}, guide_weight.options());
  if (need_db) db = at::zeros({K}, guide_weight.options());
  if (B == 0 || (!pooled && !classifier_term)) return {dx, dw, db};

  // The classifier term's operands: w (B, K2, C) and dy (B, K2, N).
  const at::Tensor cw = classifier_term ? classifier_weight->contiguous() : at::Tensor();
  const at::Tensor dy =
      classifier_term ? grad_logits->contiguous().view({B, cw.size(1), N}) : at::Tensor();
  const at::Tensor x = x_in.contiguous().view({B, C, N});
  const at::Tensor wg = guide_weight.contiguous();
  const at::Tensor g = guide_logits.contiguous().view({B, K, N});
  const at::Tensor dg = grad_g.has_value() ? grad_g->contiguous().view({B, K, N}) : at::Tensor();
  const at::Tensor df = grad_f.has_value() ? grad_f->contiguous() : at::Tensor();
  const auto acc = acc_type(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::class_pool_backward", [&] {
        using T = scalar_t;
        const at::Tensor dx3 = need_dx ? dx.view({B, C, N}) : at::Tensor();
        if (!pooled) {  // dx = w^T dy alone
          launch_channel_product<T, false, false>(cw, cw.size(1) * C, dy, df, g, at::Tensor(),
                                                  cw, dy, dx3);
          return;
        }
        // Without df the softmax is not involved: dgt is dg itself.
        at::Tensor dgt = dg, lse;
        if (df.defined()) {
          dgt = at::empty({B, K, N}, x.options());
          lse = at::empty({B, N}, x.options().dtype(acc));
          launch_softmax_backward<T>(x, df, g, dg, dgt, lse);
        }
        if (need_dx) {
          if (df.defined() && classifier_term) {
            launch_channel_product<T, true, true>(wg, 0, dgt, df, g, lse, cw, dy, dx3);
          } else if (df.defined()) {
            launch_channel_product<T, true, false>(wg, 0, dgt, df, g, lse, cw, dy, dx3);
          } else if (classifier_term) {
            launch_channel_product<T, false, true>(wg, 0, dgt, df, g, lse, cw, dy, dx3);
          } else {
            launch_channel_product<T, false, false>(wg, 0, dgt, df, g, lse, cw, dy, dx3);
          }
        }
        if (need_dw) {
          const at::Tensor partial = launch_pixel_reduce<T, false>(x, dgt, lse, acc_t<T>(1));
          dw.copy_(partial.flatten(0, 1).sum(0));
        }
        if (need_db) db.copy_(dgt.sum({0, 2}, false, acc));
      });
  return {dx, dw, db};
}

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("class_pool", &condnet::cuda::class_pool_forward);
  m.impl("class_pool_backward", &condnet::cuda::class_pool_backward);
}
#endif
