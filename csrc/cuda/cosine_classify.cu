// cosine_classify (CAC's per-image cosine classifier) on CUDA:
// y[b, k, n] = <v[b, k], x_n> / max(|x_n|, eps) and x_norm = |x_n|, with the
// norm summed in the same pass over the channels as the product
// (logits_kernel.cuh). Backward: dv = sum_n (dy / r_n) x_n^T as a pixel
// reduction whose class operand is scaled per pixel, and dx = v^T (dy / r) -
// x * coef as one channel product, coef and 1 / r from one pass over dy and
// y (cosine_pixel_kernel.cuh). No atomics: the pixel-split partial sums are
// added by ATen's reduction, whose order is fixed for a given shape and GPU.
// Checks, outputs, the empty batch and the gradient mask:
// host/cosine_classify_host.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../host/cosine_classify_host.h"
#include "channel_product_kernel.cuh"
#include "cosine_pixel_kernel.cuh"
#include "launch.cuh"
#include "logits_kernel.cuh"
#include "pixel_reduce_kernel.cuh"

#ifndef CONDNET_EMULATE
#include <torch/library.h>
#endif

namespace condnet::cuda {

void launch_cosine_classify_forward(const at::Tensor& x, const at::Tensor& weight, double eps,
                                    const at::Tensor& y, const at::Tensor& x_norm) {
  const at::Tensor v = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "condnet::cosine_classify",
                                  [&] { launch_cosine_logits<scalar_t>(x, v, eps, y, x_norm); });
}

void launch_cosine_classify_backward(const at::Tensor& dy, const at::Tensor& x,
                                     const at::Tensor& weight, const at::Tensor& y,
                                     const at::Tensor& x_norm, double eps, const at::Tensor& dx,
                                     const at::Tensor& dw) {
  const int64_t B = x.size(0), N = x.size(2);
  const auto acc = acc_type(x.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "condnet::cosine_classify_backward", [&] {
        using T = scalar_t;
        at::Tensor inv_norm;
        if (dx.defined()) {
          ChannelTerms terms;
          terms.inv_norm = at::empty({B, N}, x.options().dtype(acc));
          terms.coef = at::empty({B, N}, x.options().dtype(acc));
          launch_cosine_pixel<T>(dy, y, x_norm, eps, terms.inv_norm, terms.coef);
          terms.w = weight.contiguous();
          terms.dy = dy;
          terms.x = x;
          launch_channel_product<T, false, true, true>(terms, dx);
          inv_norm = terms.inv_norm;
        }
        if (dw.defined()) {
          // The whole classifier's backward asks for dw alone: 1 / r without reading dy and y.
          if (!inv_norm.defined()) inv_norm = at::clamp_min(x_norm, eps).reciprocal_();
          const at::Tensor partial =
              launch_pixel_reduce<T, PixelWeights::kColumnScaled>(x, dy, inv_norm, acc_t<T>(1));
          dw.copy_(partial.sum(1));
        }
      });
}

// cosine_classify's CUDA kernels, as host/cosine_classify_host.h calls them.
struct CosineClassifyKernels : Device {
  static constexpr auto forward = &launch_cosine_classify_forward;
  static constexpr auto backward = &launch_cosine_classify_backward;
};

constexpr auto cosine_classify_forward = &host::cosine_classify_forward<CosineClassifyKernels>;
constexpr auto cosine_classify_backward = &host::cosine_classify_backward<CosineClassifyKernels>;

}  // namespace condnet::cuda

#ifndef CONDNET_EMULATE
TORCH_LIBRARY_IMPL(condnet, CUDA, m) {
  m.impl("cosine_classify", condnet::cuda::cosine_classify_forward);
  m.impl("cosine_classify_backward", condnet::cuda::cosine_classify_backward);
}
#endif
