// The outputs of a softmax pooling's backward (class_pool's, context_pool's),
// shared by their host code: dx (x's shape), dw (the guide weight's shape) and
// db (K), each allocated where output_mask asks for it. What no gradient
// reaches is zero: dx without any term, the guide conv's gradients without the
// pooling's, everything without an image.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

namespace condnet::host {

struct PoolBackwardOutputs {
  at::Tensor dx, dw, db;
  bool run = false;  // whether the kernels have anything left to compute
};

// pooled: a gradient flows through the pooling; classifier_term: a
// classifier's dx term is added (only where dx is wanted).
template <class Kernels>
PoolBackwardOutputs pool_backward_outputs(const at::Tensor& x, const at::Tensor& guide_weight,
                                          std::array<bool, 3> output_mask, bool pooled,
                                          bool classifier_term) {
  const auto [need_dx, need_dw, need_db] = output_mask;
  PoolBackwardOutputs out;
  if (need_dx) out.dx = Kernels::empty_output(x.sizes(), x.options());
  if (need_dw) out.dw = at::empty(guide_weight.sizes(), guide_weight.options());
  if (need_db) out.db = at::empty({guide_weight.size(-2)}, guide_weight.options());
  const bool flows = x.size(0) > 0 && (pooled || classifier_term);
  if (need_dx && !flows) out.dx.zero_();
  if (!flows || !pooled) {
    if (need_dw) out.dw.zero_();
    if (need_db) out.db.zero_();
  }
  out.run = flows && (need_dx || need_dw || need_db);
  return out;
}

// Hands the outputs to the kernels' gradients (dx as (B, C, N); dw and db
// only where a gradient flows through the pooling: they are zero otherwise),
// runs the kernels and returns (dx, dw, db).
template <class Kernels, class Gradients>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_pool_backward(Gradients& grads,
                                                                 const PoolBackwardOutputs& out,
                                                                 bool pooled) {
  if (out.dx.defined()) grads.dx = out.dx.flatten(2);
  if (pooled) {
    grads.dw = out.dw;
    grads.db = out.db;
  }
  Kernels::backward(grads);
  return {out.dx, out.dw, out.db};
}

}  // namespace condnet::host
