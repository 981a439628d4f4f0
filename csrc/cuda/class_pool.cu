// class_pool on CUDA: guide logits, softmax over classes and class-wise
// pooling, without ever storing the (B, K, N) softmax map.
//
// Forward: on sm_90, float16/bfloat16, C <= 512 and K <= 256, one pass over x
// on thread-block clusters (class_pool_cluster_kernel.cuh). Otherwise two:
// logits_kernel writes g and the per-pixel log-sum-exp, and the pooling
// kernel forms p / N tile by tile from them. Backward: softmax_backward_kernel
// gives dgt (the gradient of g, in x's dtype), then dx = Wg^T dgt + df^T p / N
// (+ w^T dy, the dynamic classifier's term, when the whole classifier's
// backward passes grad_logits and classifier_weight) and dWg = sum dgt x^T.
// No atomics: the pixel-split partial sums are added by ATen's reduction,
// whose order is fixed for a given shape and GPU. Checks, outputs, the empty
// batch and the gradient mask: host/class_pool_host.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../host/class_pool_host.h"
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

// g3 (B, K, N) and f (B, K, C) from x (B, C, N): one pass on clusters where
// the GPU and the shape allow, else two.
void launch_class_pool_forward(const at::Tensor& x, const at::Tensor& guide_weight,
                               const at::Tensor& guide_bias, const at::Tensor& g3,
                               const at::Tensor& f) {
  const int64_t B = x.size(0), N = x.size(2);
  const at::Tensor wg = guide_weight.contiguous();
  const at::Tensor bg = guide_bias.defined() ? guide_bias.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::class_pool", [&] {
        using T = scalar_t;
        at::Tensor partial =
            launch_class_pool_cluster<T>(x, wg, bg, g3, 1.0 / static_cast<double>(N));
        if (!partial.defined()) {
          const at::Tensor lse = at::empty({B, N}, x.options().dtype(acc_type(x.scalar_type())));
          launch_logits<T, true>(x, wg, 0, bg, 0, g3, lse);
          partial = launch_pixel_reduce<T, PixelWeights::kSoftmax>(
              x, g3, lse, acc_t<T>(1.0 / static_cast<double>(N)));
        }
        f.copy_(partial.sum(1));
      });
}

// dx, dWg and dbg as grads asks for them.
void launch_class_pool_backward(const host::ClassPoolGradients& grads) {
  const at::Tensor& x = grads.x;
  const int64_t B = x.size(0), K = grads.guide_weight.size(0), N = x.size(2);
  const bool classifier_term = grads.grad_logits.defined();
  // The classifier term's operands: w (B, K2, C) and dy (B, K2, N).
  const at::Tensor cw = classifier_term ? grads.classifier_weight.contiguous() : at::Tensor();
  const at::Tensor& dy = grads.grad_logits;
  const at::Tensor wg = grads.guide_weight.contiguous();
  const at::Tensor& g = grads.guide_logits;
  const at::Tensor& dg = grads.grad_guide_logits;
  const at::Tensor df =
      grads.grad_class_feats.defined() ? grads.grad_class_feats.contiguous() : at::Tensor();
  const at::Tensor& dx3 = grads.dx;
  const auto acc = acc_type(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::class_pool_backward", [&] {
        using T = scalar_t;
        // Without df the softmax is not involved: dgt is dg itself (undefined
        // where nothing flows through the pooling: dx = w^T dy alone).
        at::Tensor dgt = dg, lse;
        if (df.defined()) {
          dgt = at::empty({B, K, N}, x.options());
          lse = at::empty({B, N}, x.options().dtype(acc));
          launch_softmax_backward<T>(x, df, g, dg, 1.0 / static_cast<double>(N), at::Tensor(), dgt,
                                     lse);
        }
        if (dx3.defined()) {
          ChannelTerms terms;
          if (dgt.defined()) {
            terms.a = wg;
            terms.bp = dgt;
          }
          if (df.defined()) {
            terms.s = df;
            terms.g = g;
            terms.lse = lse;
            terms.p_scale = 1.0 / static_cast<double>(N);
          }
          if (classifier_term) {
            terms.w = cw;
            terms.dy = dy;
          }
          launch_channel_product_of<T, false>(terms, dx3);
        }
        if (grads.dw.defined()) {
          const at::Tensor partial =
              launch_pixel_reduce<T, PixelWeights::kAsIs>(x, dgt, lse, acc_t<T>(1));
          grads.dw.copy_(partial.flatten(0, 1).sum(0));
        }
        if (grads.db.defined()) grads.db.copy_(dgt.sum({0, 2}, false, acc));
      });
}

// class_pool's CUDA kernels, as host/class_pool_host.h calls them.
struct ClassPoolKernels : Device {
  static constexpr auto forward = &launch_class_pool_forward;
  static constexpr auto backward = &launch_class_pool_backward;
};

constexpr auto class_pool_forward = &host::class_pool_forward<ClassPoolKernels>;
constexpr auto class_pool_backward = &host::class_pool_backward<ClassPoolKernels>;

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("class_pool", condnet::cuda::class_pool_forward);
  m.impl("class_pool_backward", condnet::cuda::class_pool_backward);
}
#endif
