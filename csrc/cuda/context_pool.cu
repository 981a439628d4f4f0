// context_pool (CAC's pooling) on CUDA: static logits, softmax over classes,
// class centres and class masses, without ever storing the (B, K, N)
// softmax map; the building blocks are class_pool's.
//
// Forward: on sm_90, float16/bfloat16, C <= 512 and K <= 256, one pass over x
// on thread-block clusters (class_pool_cluster_kernel.cuh). Otherwise two:
// logits_kernel writes g and the per-pixel log-sum-exp; the pooling kernel
// forms P tile by tile from them and sums P x^T (pixel_reduce_kernel.cuh).
// Either way the masses sum_n P are summed in the same pass as P x^T, from
// the same P as rounded for the product, so a centre is a weighted mean of x
// with weights summing to one. Backward: softmax_backward_kernel gives ds (the
// gradient of g, in x's dtype) from dM = d centres / (mass + eps) and the
// mass gradient h; then one channel product writes dx = Wg^T ds + dM^T P
// (+ the cosine classifier's term when the whole classifier's backward passes
// grad_logits) and dWg = sum ds x^T. No atomics: the pixel-split partial sums
// are added by ATen's reduction, whose order is fixed for a given shape and
// GPU. Checks, outputs, the empty batch and the gradient mask:
// host/context_pool_host.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../host/context_pool_host.h"
#include "channel_product_kernel.cuh"
#include "class_pool_cluster_kernel.cuh"
#include "cosine_pixel_kernel.cuh"
#include "launch.cuh"
#include "logits_kernel.cuh"
#include "pixel_reduce_kernel.cuh"
#include "softmax_backward_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

// Batch stride of a (K, C) guide weight shared by the images (0) or a
// (B, K, C) one per image.
inline int64_t guide_batch_stride(const at::Tensor& guide_weight) {
  return guide_weight.dim() == 3 ? guide_weight.size(1) * guide_weight.size(2) : 0;
}

// g3 (B, K, N), centres (B, K, C) and mass (B, K) from x (B, C, N).
void launch_context_pool_forward(const at::Tensor& x, const at::Tensor& guide_weight,
                                 const at::Tensor& guide_bias, const at::Tensor& g3,
                                 const at::Tensor& centres, const at::Tensor& mass) {
  const int64_t B = x.size(0), N = x.size(2);
  const at::Tensor wg = guide_weight.contiguous();
  const at::Tensor bg = guide_bias.defined() ? guide_bias.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::context_pool", [&] {
        using T = scalar_t;
        at::Tensor mass_partial;
        at::Tensor partial = launch_class_pool_cluster<T>(x, wg, bg, g3, 1.0, &mass_partial);
        if (!partial.defined()) {
          const at::Tensor lse = at::empty({B, N}, x.options().dtype(acc_type(x.scalar_type())));
          launch_logits<T, true>(x, wg, guide_batch_stride(wg), bg, 0, g3, lse);
          partial = launch_pixel_reduce<T, PixelWeights::kSoftmax>(x, g3, lse, acc_t<T>(1),
                                                                   &mass_partial);
        }
        const at::Tensor total = mass_partial.sum(1);
        centres.copy_(partial.sum(1) / (total + host::kMassEps).unsqueeze(-1));
        mass.copy_(total);
      });
}

// dM (B, K, C) in x's dtype and h (B, K) in the accumulation type, the
// gradients of the pooling's P x^T and sum_n P (see ContextPoolGradients).
std::tuple<at::Tensor, at::Tensor> centre_gradients(const host::ContextPoolGradients& grads) {
  const at::Tensor& x = grads.x;
  const auto acc = acc_type(x.scalar_type());
  const at::Tensor denominator = grads.mass.to(acc) + host::kMassEps;
  at::Tensor h = grads.grad_mass.defined() ? grads.grad_mass.to(acc)
                                           : at::zeros(grads.mass.sizes(), denominator.options());
  if (!grads.grad_centres.defined()) {
    return {at::zeros(grads.centres.sizes(), x.options()), h.contiguous()};
  }
  const at::Tensor dc = grads.grad_centres.to(acc);
  const at::Tensor dM = (dc / denominator.unsqueeze(-1)).to(x.scalar_type());
  h = h - (dc * grads.centres.to(acc)).sum(-1) / denominator;
  return {dM.contiguous(), h.contiguous()};
}

// dx, dWg and dbg as grads asks for them.
void launch_context_pool_backward(const host::ContextPoolGradients& grads) {
  const at::Tensor& x = grads.x;
  const int64_t B = x.size(0), N = x.size(2), K = grads.guide_logits.size(1);
  const bool through_centres = grads.grad_centres.defined() || grads.grad_mass.defined();
  const bool cosine = grads.grad_logits.defined();
  const at::Tensor wg = grads.guide_weight.contiguous();
  const auto acc = acc_type(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::context_pool_backward", [&] {
        using T = scalar_t;
        ChannelTerms terms;
        // Without d centres and d mass the softmax is not involved: ds is dg itself.
        at::Tensor ds = grads.grad_guide_logits;
        if (through_centres) {
          const auto [dM, h] = centre_gradients(grads);
          ds = at::empty({B, K, N}, x.options());
          const at::Tensor lse = at::empty({B, N}, x.options().dtype(acc));
          launch_softmax_backward<T>(x, dM, grads.guide_logits, grads.grad_guide_logits, 1.0, h, ds,
                                     lse);
          if (grads.grad_centres.defined()) {  // dM = 0 adds nothing to dx
            terms.s = dM;
            terms.g = grads.guide_logits;
            terms.lse = lse;
          }
        }
        if (grads.dx.defined()) {
          if (ds.defined()) {
            terms.a = wg;
            terms.a_batch_stride = guide_batch_stride(wg);
            terms.bp = ds;
          }
          if (cosine) {
            terms.inv_norm = at::empty({B, N}, x.options().dtype(acc));
            terms.coef = at::empty({B, N}, x.options().dtype(acc));
            launch_cosine_pixel<T>(grads.grad_logits, grads.logits, grads.x_norm, grads.eps,
                                   terms.inv_norm, terms.coef);
            terms.w = grads.classifier.contiguous();
            terms.dy = grads.grad_logits;
            terms.x = x;
          }
          launch_channel_product_of<T, true>(terms, grads.dx);
        }
        if (grads.dw.defined()) {
          const at::Tensor partial =
              launch_pixel_reduce<T, PixelWeights::kAsIs>(x, ds, at::Tensor(), acc_t<T>(1));
          // (B, splits, K, C): per image for a (B, K, C) guide weight, else over everything.
          grads.dw.copy_(grads.dw.dim() == 3 ? partial.sum(1) : partial.flatten(0, 1).sum(0));
        }
        if (grads.db.defined()) grads.db.copy_(ds.sum({0, 2}, false, acc));
      });
}

// context_pool's CUDA kernels, as host/context_pool_host.h calls them.
struct ContextPoolKernels : Device {
  static constexpr auto forward = &launch_context_pool_forward;
  static constexpr auto backward = &launch_context_pool_backward;
};

constexpr auto context_pool_forward = &host::context_pool_forward<ContextPoolKernels>;
constexpr auto context_pool_backward = &host::context_pool_backward<ContextPoolKernels>;

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("context_pool", condnet::cuda::context_pool_forward);
  m.impl("context_pool_backward", condnet::cuda::context_pool_backward);
}
#endif
