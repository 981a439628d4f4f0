// context_pool (CAC's pooling) on the CPU: static logits, softmax over
// classes, and class centres divided by each class's mass, on the softmax
// pooling's tile loops (softmax_pool.h): the masses are summed in the same
// pass over x as the pooled products. Its backward adds the cosine
// classifier's part of dx in the same pass, so CAC's fused backward writes
// dx once.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../host/context_pool_host.h"
#include "device.h"
#include "softmax_pool.h"

namespace condnet::cpu {
namespace {

void forward_kernel(const at::Tensor& x, const at::Tensor& guide_weight,
                    const at::Tensor& guide_bias, const at::Tensor& g3, const at::Tensor& centres,
                    const at::Tensor& mass) {
  const PooledSums pooled = softmax_pool_forward(x, guide_weight, guide_bias, g3, true);
  // Divided in float32 (double for double) and rounded once.
  centres.copy_(pooled.sums.div_(pooled.mass.add(host::kMassEps).unsqueeze(-1)));
  mass.copy_(pooled.mass);
}

void backward_kernel(const host::ContextPoolGradients& grads) {
  const at::Tensor& x = grads.x;
  const auto acc = acc_type(x.scalar_type());
  PoolGradients pool;
  pool.x = x;
  pool.weight = grads.guide_weight;
  pool.logits = grads.guide_logits;
  pool.grad_logits = grads.grad_guide_logits;
  // centres = sums / (mass + eps), and mass itself, in terms of the pooled
  // sums' and masses' gradients (softmax_pool.h's grad_sums, grad_mass).
  const at::Tensor denom = grads.mass.to(acc).add(host::kMassEps);  // (B, K)
  if (grads.grad_centres.defined()) {
    const at::Tensor dc = grads.grad_centres.to(acc);
    pool.grad_sums = dc.div(denom.unsqueeze(-1));
    at::Tensor dmass = at::mul(pool.grad_sums, grads.centres).sum(-1).neg_();
    if (grads.grad_mass.defined()) dmass.add_(grads.grad_mass);
    pool.grad_mass = dmass;
  } else if (grads.grad_mass.defined()) {
    pool.grad_mass = grads.grad_mass.to(acc);
  }
  if (grads.grad_logits.defined()) {
    ClassifierGradients& cls = pool.classifier;
    cls.weight = grads.classifier;
    cls.grad_logits = grads.grad_logits;
    cls.logits = grads.logits;
    cls.x_norm = grads.x_norm;
    cls.eps = grads.eps;
  }
  pool.dx = grads.dx;
  pool.dw = grads.dw;
  pool.db = grads.db;
  pool_backward(pool);
}

// context_pool's CPU kernels, as host/context_pool_host.h calls them.
struct ContextPoolKernels : Device {
  static constexpr auto forward = &forward_kernel;
  static constexpr auto backward = &backward_kernel;
};

}  // namespace

TORCH_LIBRARY_IMPL(condnet, CPU, m) {
  m.impl("context_pool", &host::context_pool_forward<ContextPoolKernels>);
  m.impl("context_pool_backward", &host::context_pool_backward<ContextPoolKernels>);
}

}  // namespace condnet::cpu
