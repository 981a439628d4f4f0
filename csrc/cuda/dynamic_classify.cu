// dynamic_classify on CUDA: the per-image 1x1 classifier y[b] = w[b] x[b] +
// beta[b] and its backward, dx = w^T dy, dw = dy x^T, dbeta = sum_n dy.
// No atomics: the pixel-split partial sums of dw are added by ATen's
// reduction, whose order is fixed for a given shape and GPU. Checks, outputs,
// the empty batch and the gradient mask: host/dynamic_classify_host.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../host/dynamic_classify_host.h"
#include "channel_product_kernel.cuh"
#include "launch.cuh"
#include "logits_kernel.cuh"
#include "pixel_reduce_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

void launch_dynamic_classify_forward(const at::Tensor& x, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& y) {
  const int64_t C = x.size(1), K = weight.size(1);
  const at::Tensor w = weight.contiguous();
  const at::Tensor beta = bias.defined() ? bias.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::dynamic_classify",
      [&] { launch_logits<scalar_t, false>(x, w, K * C, beta, K, y, at::Tensor()); });
}

void launch_dynamic_classify_backward(const at::Tensor& dy, const at::Tensor& x,
                                      const at::Tensor& weight, const at::Tensor& dx,
                                      const at::Tensor& dw, const at::Tensor& db) {
  const int64_t C = x.size(1), K = weight.size(1);
  const at::Tensor w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::dynamic_classify_backward", [&] {
        using T = scalar_t;
        const at::Tensor none;
        if (dx.defined()) {
          ChannelTerms terms;
          terms.a = w;
          terms.a_batch_stride = K * C;
          terms.bp = dy;
          launch_channel_product<T, false, false, false>(terms, dx);
        }
        if (dw.defined()) {
          const at::Tensor partial =
              launch_pixel_reduce<T, PixelWeights::kAsIs>(x, dy, none, acc_t<T>(1));
          dw.copy_(partial.sum(1));
        }
        if (db.defined()) db.copy_(dy.sum(2, false, acc_type(x.scalar_type())));
      });
}

// dynamic_classify's CUDA kernels, as host/dynamic_classify_host.h calls them.
struct DynamicClassifyKernels : Device {
  static constexpr auto forward = &launch_dynamic_classify_forward;
  static constexpr auto backward = &launch_dynamic_classify_backward;
};

constexpr auto dynamic_classify_forward = &host::dynamic_classify_forward<DynamicClassifyKernels>;
constexpr auto dynamic_classify_backward = &host::dynamic_classify_backward<DynamicClassifyKernels>;

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("dynamic_classify", condnet::cuda::dynamic_classify_forward);
  m.impl("dynamic_classify_backward", condnet::cuda::dynamic_classify_backward);
}
#endif
