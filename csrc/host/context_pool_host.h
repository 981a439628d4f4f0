// The host side of context_pool (CAC's pooling) that the CPU and CUDA kernels
// share: input checks, outputs, the empty batch, the gradient mask and the
// gradients that are zero because nothing flows into them. Each device file
// defines a Kernels type and registers context_pool_forward<Kernels> and
// context_pool_backward<Kernels>. Kernels derives from its device's Device
// (cpu/device.h, cuda/launch.cuh: the guard and the output allocation) and adds
//
//   forward(x, guide_weight, guide_bias, g, centres, mass)
//       fills g (B, K, N), centres (B, K, C) and mass (B, K):
//       g = Wg x + b, P = softmax_K(g), mass = sum_n P,
//       centres = P x^T / (mass + kMassEps)
//   backward(const ContextPoolGradients&)   fills its dx, dw, db
//
// The kernels only see a non-empty batch. Tensors with pixels come with the
// pixels flattened, (B, ., N), contiguous; the others as the caller gave them.
// guide_weight is (K, C), shared by the images, or (B, K, C), one per image.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

#include "../checks.h"
#include "../kernel_host.h"
#include "context_checks.h"
#include "pool_backward_outputs.h"

namespace condnet::host {

// Added to each class's mass before the centres are divided by it (the
// released value; condnet/ops/cac.py's MASS_EPS).
constexpr double kMassEps = 1e-12;

// What context_pool's backward kernels read and write. Something flows: the
// pooling's gradients (grad_guide_logits, grad_centres, grad_mass) or the
// cosine classifier's dx term, or both. With r_n = max(x_norm_n, eps):
//
//   dM = grad_centres / (mass + kMassEps)                        (B, K, C)
//   h = grad_mass - sum_c grad_centres * centres / (mass + kMassEps)   (B, K)
//   ds = P * (dP - sum_k P dP) + grad_guide_logits,  dP[k, n] = dM[k] . x_n + h[k]
//   dx_n = Wg^T ds_n + sum_k dM[k] P[k, n]
//          + sum_k v[k] grad_logits[k, n] / r_n
//          - [x_norm_n >= eps] x_n (sum_k grad_logits[k, n] y[k, n]) / (r_n x_norm_n)
//   dw = sum_n ds_n x_n^T (summed over the images for a (K, C) guide weight),
//   db = sum_n ds_n (summed over the images)
struct ContextPoolGradients {
  at::Tensor x;             // (B, C, N)
  at::Tensor guide_weight;  // (K, C) or (B, K, C)
  at::Tensor guide_logits;  // (B, K, N)
  at::Tensor centres;       // (B, K, C)
  at::Tensor mass;          // (B, K)
  // The pooling's upstream gradients; any may be undefined.
  at::Tensor grad_guide_logits;  // (B, K, N)
  at::Tensor grad_centres;       // (B, K, C)
  at::Tensor grad_mass;          // (B, K)
  // The cosine classifier's dx term: all four defined or none, and only where
  // dx is wanted. v = classifier, y = logits.
  at::Tensor grad_logits;  // (B, K2, N)
  at::Tensor classifier;   // (B, K2, C)
  at::Tensor logits;       // (B, K2, N)
  at::Tensor x_norm;       // (B, N), float32 for 16-bit x
  double eps = 0.0;
  // The outputs, each undefined where it is not wanted; dw and db also where
  // no gradient flows through the pooling (they are zero then).
  at::Tensor dx;  // (B, C, N)
  at::Tensor dw;  // guide_weight's shape
  at::Tensor db;  // (K)

  bool pooled() const {
    return grad_guide_logits.defined() || grad_centres.defined() || grad_mass.defined();
  }
};

template <class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> context_pool_forward(
    const at::Tensor& x, const at::Tensor& guide_weight,
    const std::optional<at::Tensor>& guide_bias) {
  const int64_t K = check_context_pool_inputs(x, guide_weight, guide_bias);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor g = Kernels::empty_output({B, K, H, W}, x.options());
  at::Tensor centres = at::empty({B, K, C}, x.options());
  at::Tensor mass = at::empty({B, K}, x.options());
  if (B == 0) return {g, centres, mass};
  Kernels::forward(x.contiguous().view({B, C, H * W}), guide_weight,
                   guide_bias.has_value() ? *guide_bias : at::Tensor(), g.view({B, K, H * W}),
                   centres, mass);
  return {g, centres, mass};
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> context_pool_backward(
    const std::optional<at::Tensor>& grad_guide_logits,
    const std::optional<at::Tensor>& grad_centres, const std::optional<at::Tensor>& grad_mass,
    const at::Tensor& x, const at::Tensor& guide_weight, const at::Tensor& guide_logits,
    const at::Tensor& centres, const at::Tensor& mass, std::array<bool, 3> output_mask,
    const std::optional<at::Tensor>& grad_logits, const std::optional<at::Tensor>& classifier,
    const std::optional<at::Tensor>& logits, const std::optional<at::Tensor>& x_norm, double eps) {
  const int64_t K = check_context_pool_inputs(x, guide_weight, std::nullopt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), N = H * W;
  check_grad(guide_logits, x, {B, K, H, W}, "guide_logits");
  check_grad(centres, x, {B, K, C}, "centres");
  check_grad(mass, x, {B, K}, "mass");
  check_grad(grad_guide_logits, x, {B, K, H, W}, "grad_guide_logits");
  check_grad(grad_centres, x, {B, K, C}, "grad_centres");
  check_grad(grad_mass, x, {B, K}, "grad_mass");
  const bool cosine_given = check_cosine_term(grad_logits, classifier, logits, x_norm, x);
  check_eps(eps);
  const typename Kernels::Guard device_guard(x);
  const KernelScope scope;
  const bool pooled =
      grad_guide_logits.has_value() || grad_centres.has_value() || grad_mass.has_value();
  const bool cosine_term = output_mask[0] && cosine_given;
  const PoolBackwardOutputs outputs =
      pool_backward_outputs<Kernels>(x, guide_weight, output_mask, pooled, cosine_term);
  if (!outputs.run) return {outputs.dx, outputs.dw, outputs.db};

  ContextPoolGradients grads;
  grads.x = x.contiguous().view({B, C, N});
  grads.guide_weight = guide_weight;
  grads.guide_logits = guide_logits.contiguous().view({B, K, N});
  grads.centres = centres;
  grads.mass = mass;
  if (grad_guide_logits.has_value()) {
    grads.grad_guide_logits = grad_guide_logits->contiguous().view({B, K, N});
  }
  if (grad_centres.has_value()) grads.grad_centres = *grad_centres;
  if (grad_mass.has_value()) grads.grad_mass = *grad_mass;
  if (cosine_term) {
    const int64_t K2 = classifier->size(1);
    grads.grad_logits = grad_logits->contiguous().view({B, K2, N});
    grads.classifier = *classifier;
    grads.logits = logits->contiguous().view({B, K2, N});
    grads.x_norm = x_norm->contiguous().view({B, N});
    grads.eps = eps;
  }
  return run_pool_backward<Kernels>(grads, outputs, pooled);
}

}  // namespace condnet::host
