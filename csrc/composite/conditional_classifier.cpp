// The whole conditional classifier as one op, for every device that has the
// three kernels it is made of (registered as CompositeExplicitAutograd: it
// calls condnet::class_pool, condnet::project and condnet::dynamic_classify
// through the dispatcher, so each runs on its device's kernel).
//
// Forward: g, f = class_pool(x, Wg, bg); theta = project(f, A, a); w and beta
// are views of theta, read as `layout` says (theta_layout.h); y =
// dynamic_classify(x, w, beta). The op returns f and theta too: they are what
// the backward needs.
//
// Backward, as ONE op, so that x's gradient is written once:
//   dw, dbeta      = dynamic_classify_backward(dy, x, w)    one pass over x, dy
//   df, dA, da     = project_backward(dtheta, f, A)          one pass over A
//   dx, dWg, dbg   = class_pool_backward(dg, df, x, Wg, g, dy, w)
//                                                            one pass over x, g, dy
// where class_pool's backward adds the dynamic classifier's w^T dy into its
// dx. Autograd over the three ops separately would write two dx tensors and
// add them (at ADE on a GPU, ~100 MB of extra traffic).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <array>
#include <optional>
#include <string_view>
#include <tuple>

#include "../kernel_host.h"
#include "theta_layout.h"

namespace condnet {
namespace {

using OptTensor = std::optional<at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

template <class Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

std::tuple<at::Tensor, at::Tensor> class_pool(const at::Tensor& x, const at::Tensor& wg,
                                              const OptTensor& bg) {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const OptTensor&)>("condnet::class_pool");
  return op.call(x, wg, bg);
}

at::Tensor project(const at::Tensor& f, const at::Tensor& A, const OptTensor& a) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&)>(
          "condnet::project");
  return op.call(f, A, a);
}

at::Tensor dynamic_classify(const at::Tensor& x, const at::Tensor& w, const OptTensor& beta) {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&)>(
          "condnet::dynamic_classify");
  return op.call(x, w, beta);
}

Tensor3 class_pool_backward(const OptTensor& dg, const OptTensor& df, const at::Tensor& x,
                            const at::Tensor& wg, const at::Tensor& g, std::array<bool, 3> mask,
                            const OptTensor& dy, const OptTensor& w) {
  static const auto op =
      find_op<Tensor3(const OptTensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, std::array<bool, 3>, const OptTensor&, const OptTensor&)>(
          "condnet::class_pool_backward");
  return op.call(dg, df, x, wg, g, mask, dy, w);
}

Tensor3 project_backward(const at::Tensor& dtheta, const at::Tensor& f, const at::Tensor& A,
                         std::array<bool, 3> mask) {
  static const auto op = find_op<Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         std::array<bool, 3>)>("condnet::project_backward");
  return op.call(dtheta, f, A, mask);
}

Tensor3 dynamic_classify_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                  std::array<bool, 3> mask) {
  static const auto op =
      find_op<Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      std::array<bool, 3>)>("condnet::dynamic_classify_backward");
  return op.call(dy, x, w, mask);
}

void check_rank(const at::Tensor& t, int64_t dim, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> conditional_classifier(
    const at::Tensor& x, const at::Tensor& guide_weight, const OptTensor& guide_bias,
    const at::Tensor& proj_weight, const OptTensor& proj_bias, std::string_view layout) {
  const ThetaLayout theta_layout = parse_theta_layout(layout);
  const KernelScope scope;
  auto [g, f] = class_pool(x, guide_weight, guide_bias);
  at::Tensor theta = project(f, proj_weight, proj_bias);
  const auto [w, beta] = split_theta(theta, theta_layout);
  at::Tensor y = dynamic_classify(x, w, beta);
  return {y, g, f, theta};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
conditional_classifier_backward(const OptTensor& grad_logits, const OptTensor& grad_guide_logits,
                                const OptTensor& grad_class_feats, const OptTensor& grad_theta,
                                const at::Tensor& x, const at::Tensor& guide_weight,
                                const at::Tensor& guide_logits, const at::Tensor& class_feats,
                                const at::Tensor& proj_weight, const at::Tensor& theta,
                                std::string_view layout, std::array<bool, 5> output_mask) {
  const ThetaLayout theta_layout = parse_theta_layout(layout);
  check_rank(theta, 3, "theta");
  check_rank(class_feats, 3, "class_feats");
  const KernelScope scope;
  const auto [need_dx, need_dwg, need_dbg, need_dA, need_da] = output_mask;
  const bool need_pool = need_dx || need_dwg || need_dbg;
  const auto [w, beta] = split_theta(theta, theta_layout);

  // The gradient of theta: from the logits through w and beta, plus theta's own.
  at::Tensor dtheta;
  if (grad_logits.has_value() && (need_pool || need_dA || need_da)) {
    const auto [unused_dx, dw, dbeta] =
        dynamic_classify_backward(*grad_logits, x, w, {false, true, true});
    dtheta = join_theta(dw, dbeta, theta, theta_layout);
  }
  if (grad_theta.has_value()) dtheta = dtheta.defined() ? dtheta.add(*grad_theta) : *grad_theta;

  at::Tensor df, dA, da;
  if (dtheta.defined()) {
    std::tie(df, dA, da) =
        project_backward(dtheta, class_feats, proj_weight, {need_pool, need_dA, need_da});
  }
  if (grad_class_feats.has_value())
    df = df.defined() ? df.add(*grad_class_feats) : *grad_class_feats;
  // Nothing reached theta: the projection's gradients are zero.
  if (need_dA && !dA.defined()) dA = at::zeros_like(proj_weight);
  if (need_da && !da.defined()) {
    da = at::zeros({proj_weight.size(0), proj_weight.size(1)}, proj_weight.options());
  }

  at::Tensor dx, dwg, dbg;
  if (need_pool) {
    std::tie(dx, dwg, dbg) =
        class_pool_backward(grad_guide_logits, df.defined() ? OptTensor(df) : std::nullopt, x,
                            guide_weight, guide_logits, {need_dx, need_dwg, need_dbg}, grad_logits,
                            grad_logits.has_value() ? OptTensor(w) : std::nullopt);
  }
  return {dx, dwg, dbg, dA, da};
}

}  // namespace
}  // namespace condnet

TORCH_LIBRARY_IMPL(condnet, CompositeExplicitAutograd, m) {
  m.impl("conditional_classifier", &condnet::conditional_classifier);
  m.impl("conditional_classifier_backward", &condnet::conditional_classifier_backward);
}
