// The host side of class_pool that the CPU and CUDA kernels share: input
// checks, outputs, the empty batch, the gradient mask and the gradients that
// are zero because nothing flows into them. Each device file defines a
// Kernels type and registers class_pool_forward<Kernels> and
// class_pool_backward<Kernels>. Kernels derives from its device's Device
// (cpu/device.h, cuda/launch.cuh: the guard and the output allocation) and adds
//
//   forward(x, guide_weight, guide_bias, g, f)   fills g (B, K, N), f (B, K, C)
//   backward(const ClassPoolGradients&)          fills its dx, dw, db
//
// The kernels only see a non-empty batch. Tensors with pixels come with the
// pixels flattened, (B, ., N), contiguous; the others as the caller gave them.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"
#include "pool_backward_outputs.h"

namespace condnet::host {

// What class_pool's backward kernels read and write. Something flows: the
// pooling's gradients (grad_guide_logits, grad_class_feats) or the dynamic
// classifier's dx term, or both.
struct ClassPoolGradients {
  at::Tensor x;             // (B, C, N)
  at::Tensor guide_weight;  // (K, C)
  at::Tensor guide_logits;  // (B, K, N)
  // The pooling's upstream gradients; either may be undefined.
  at::Tensor grad_guide_logits;  // (B, K, N)
  at::Tensor grad_class_feats;   // (B, K, C)
  // The dynamic classifier's term w^T dy, added into dx: both defined or
  // neither, and only where dx is wanted.
  at::Tensor grad_logits;        // (B, K2, N)
  at::Tensor classifier_weight;  // (B, K2, C)
  // The outputs, each undefined where it is not wanted; dw and db also where
  // no gradient flows through the pooling (they are zero then).
  at::Tensor dx;  // (B, C, N)
  at::Tensor dw;  // (K, C)
  at::Tensor db;  // (K)

  bool pooled() const { return grad_guide_logits.defined() || grad_class_feats.defined(); }
};

template <class Kernels>
std::tuple<at::Tensor, at::Tensor> class_pool_forward(const at::Tensor& x,
                                                      const at::Tensor& guide_weight,
                                                      const std::optional<at::Tensor>& guide_bias) {
  check_class_pool_inputs(x, guide_weight, guide_bias);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  at::Tensor g = Kernels::empty_output({B, K, H, W}, x.options());
  at::Tensor f = at::empty({B, K, C}, x.options());
  if (B == 0) return {g, f};
  Kernels::forward(x.contiguous().view({B, C, N}), guide_weight,
                   guide_bias.has_value() ? *guide_bias : at::Tensor(), g.view({B, K, N}), f);
  return {g, f};
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> class_pool_backward(
    const std::optional<at::Tensor>& grad_guide_logits,
    const std::optional<at::Tensor>& grad_class_feats, const at::Tensor& x,
    const at::Tensor& guide_weight, const at::Tensor& guide_logits, std::array<bool, 3> output_mask,
    const std::optional<at::Tensor>& grad_logits,
    const std::optional<at::Tensor>& classifier_weight) {
  check_class_pool_inputs(x, guide_weight, std::nullopt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t N = H * W, K = guide_weight.size(0);
  check_grad(guide_logits, x, {B, K, H, W}, "guide_logits");
  check_grad(grad_guide_logits, x, {B, K, H, W}, "grad_guide_logits");
  check_grad(grad_class_feats, x, {B, K, C}, "grad_class_feats");
  check_classifier_term(grad_logits, classifier_weight, x);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const bool pooled = grad_guide_logits.has_value() || grad_class_feats.has_value();
  const bool classifier_term = output_mask[0] && grad_logits.has_value();
  const PoolBackwardOutputs outputs =
      pool_backward_outputs<Kernels>(x, guide_weight, output_mask, pooled, classifier_term);
  if (!outputs.run) return {outputs.dx, outputs.dw, outputs.db};

  ClassPoolGradients grads;
  grads.x = x.contiguous().view({B, C, N});
  grads.guide_weight = guide_weight;
  grads.guide_logits = guide_logits.contiguous().view({B, K, N});
  if (grad_guide_logits.has_value()) {
    grads.grad_guide_logits = grad_guide_logits->contiguous().view({B, K, N});
  }
  if (grad_class_feats.has_value()) grads.grad_class_feats = *grad_class_feats;
  if (classifier_term) {
    grads.classifier_weight = *classifier_weight;
    grads.grad_logits = grad_logits->contiguous().view({B, classifier_weight->size(1), N});
  }
  return run_pool_backward<Kernels>(grads, outputs, pooled);
}

}  // namespace condnet::host
