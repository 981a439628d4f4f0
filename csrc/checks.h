// Input checks shared by every kernel. The Python wrapper checks the same
// things first with friendlier messages; these guard direct torch.ops calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace condnet {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()),
                   name, " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_same(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(),
                   name, " must have x's dtype ", x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(),
                    name, " must be on x's device ", x.device(), ", got ", t.device());
}

inline void check_features(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be 4-D (B, C, H, W), got shape ", x.sizes());
  check_floating(x, "x");
  TORCH_CHECK_VALUE(x.size(1) > 0, "x must have at least one channel, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(2) * x.size(3) > 0,
                    "x must have at least one pixel (H*W > 0), got shape ", x.sizes());
}

inline void check_vector(const std::optional<at::Tensor>& t, const at::Tensor& x,
                         int64_t len, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == len,
                    name, " must have shape (", len, "), got ", t->sizes());
  check_same(*t, x, name);
}

inline void check_class_pool_inputs(const at::Tensor& x, const at::Tensor& guide_weight,
                                    const std::optional<at::Tensor>& guide_bias) {
  check_features(x);
  TORCH_CHECK_VALUE(guide_weight.dim() == 2 && guide_weight.size(1) == x.size(1) &&
                        guide_weight.size(0) > 0,
                    "guide_weight must have shape (K, ", x.size(1), ") with K >= 1, got ",
                    guide_weight.sizes());
  check_same(guide_weight, x, "guide_weight");
  check_vector(guide_bias, x, guide_weight.size(0), "guide_bias");
}

inline void check_dynamic_classify_inputs(const at::Tensor& x, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias) {
  check_features(x);
  TORCH_CHECK_VALUE(weight.dim() == 3 && weight.size(0) == x.size(0) &&
                        weight.size(2) == x.size(1) && weight.size(1) > 0,
                    "weight must have shape (", x.size(0), ", K, ", x.size(1),
                    ") with K >= 1, got ", weight.sizes());
  check_same(weight, x, "weight");
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 2 && bias->size(0) == x.size(0) &&
                          bias->size(1) == weight.size(1),
                      "bias must have shape (", x.size(0), ", ", weight.size(1), "), got ",
                      bias->sizes());
    check_same(*bias, x, "bias");
  }
}

inline void check_grad(const std::optional<at::Tensor>& grad, const at::Tensor& x,
                       at::IntArrayRef shape, const char* name) {
  if (!grad.has_value()) return;
  TORCH_CHECK_VALUE(grad->sizes() == shape, name, " must have shape ", shape, ", got ",
                    grad->sizes());
  check_same(*grad, x, name);
}

}  // namespace condnet
