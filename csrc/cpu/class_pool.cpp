// class_pool on the CPU: guide logits, softmax over classes and class-wise
// pooling divided by the pixel count, on the softmax pooling's tile loops
// (softmax_pool.h), which never materialise the (B, K, N) softmax map.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../host/class_pool_host.h"
#include "device.h"
#include "softmax_pool.h"

namespace condnet::cpu {
namespace {

// g3 (B, K, N) and f (B, K, C) from x (B, C, N).
void forward_kernel(const at::Tensor& x, const at::Tensor& guide_weight,
                    const at::Tensor& guide_bias, const at::Tensor& g3, const at::Tensor& f) {
  const PooledSums pooled = softmax_pool_forward(x, guide_weight, guide_bias, g3, false);
  f.copy_(pooled.sums.mul_(1.0 / static_cast<double>(x.size(2))));
}

void backward_kernel(const host::ClassPoolGradients& grads) {
  const at::Tensor& x = grads.x;
  PoolGradients pool;
  pool.x = x;
  pool.weight = grads.guide_weight;
  pool.logits = grads.guide_logits;
  pool.grad_logits = grads.grad_guide_logits;
  // The 1/N of the pooling is folded into grad_f once, up front.
  if (grads.grad_class_feats.defined()) {
    pool.grad_sums = grads.grad_class_feats.to(acc_type(x.scalar_type()))
                         .mul(1.0 / static_cast<double>(x.size(2)));
  }
  // The dynamic classifier's term w^T dy joins dx.
  pool.classifier.weight = grads.classifier_weight;
  pool.classifier.grad_logits = grads.grad_logits;
  pool.dx = grads.dx;
  pool.dw = grads.dw;
  pool.db = grads.db;
  pool_backward(pool);
}

// class_pool's CPU kernels, as host/class_pool_host.h calls them.
struct ClassPoolKernels : Device {
  static constexpr auto forward = &forward_kernel;
  static constexpr auto backward = &backward_kernel;
};

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("class_pool", &host::class_pool_forward<ClassPoolKernels>);
  m.impl("class_pool_backward", &host::class_pool_backward<ClassPoolKernels>);
}

}  // namespace condnet::cpu
