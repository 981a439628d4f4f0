// Input checks shared by every kernel. The Python wrapper checks the same
// things first with friendlier messages; these guard direct torch.ops calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

namespace condnet {

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name,
                   " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_same(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " must have x's dtype ",
                   x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == x.device(), name, " must be on x's device ", x.device(), ", got ",
                    t.device());
}

inline void check_features(const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must be 4-D (B, C, H, W), got shape ", x.sizes());
  check_floating(x, "x");
  TORCH_CHECK_VALUE(x.size(1) > 0, "x must have at least one channel, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(2) * x.size(3) > 0,
                    "x must have at least one pixel (H*W > 0), got shape ", x.sizes());
}

inline void check_vector(const std::optional<at::Tensor>& t, const at::Tensor& x, int64_t len,
                         const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == len, name, " must have shape (", len, "), got ",
                    t->sizes());
  check_same(*t, x, name);
}

inline void check_class_pool_inputs(const at::Tensor& x, const at::Tensor& guide_weight,
                                    const std::optional<at::Tensor>& guide_bias) {
  check_features(x);
  TORCH_CHECK_VALUE(
      guide_weight.dim() == 2 && guide_weight.size(1) == x.size(1) && guide_weight.size(0) > 0,
      "guide_weight must have shape (K, ", x.size(1), ") with K >= 1, got ", guide_weight.sizes());
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
    TORCH_CHECK_VALUE(
        bias->dim() == 2 && bias->size(0) == x.size(0) && bias->size(1) == weight.size(1),
        "bias must have shape (", x.size(0), ", ", weight.size(1), "), got ", bias->sizes());
    check_same(*bias, x, "bias");
  }
}

// class_feats (B, K, C); weight (K, C+1, C) and bias (K, C+1) in class_feats'
// dtype, or float32 master weights for float16/bfloat16 class features.
inline void check_project_inputs(const at::Tensor& f, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(f.dim() == 3 && f.size(1) > 0 && f.size(2) > 0,
                    "class_feats must have shape (B, K, C) with K, C >= 1, got ", f.sizes());
  check_floating(f, "class_feats");
  const int64_t K = f.size(1), C = f.size(2);
  TORCH_CHECK_VALUE(
      weight.dim() == 3 && weight.size(0) == K && weight.size(1) == C + 1 && weight.size(2) == C,
      "proj_weight must have shape (K, C+1, C) = (", K, ", ", C + 1, ", ", C,
      ") from class_feats, got ", weight.sizes());
  check_floating(weight, "proj_weight");
  const bool master = weight.scalar_type() == at::kFloat &&
                      (f.scalar_type() == at::kHalf || f.scalar_type() == at::kBFloat16);
  TORCH_CHECK_TYPE(weight.scalar_type() == f.scalar_type() || master,
                   "proj_weight must have class_feats' dtype ", f.scalar_type(),
                   " (or float32 for float16/bfloat16 class_feats), got ", weight.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == f.device(), "proj_weight must be on class_feats' device ",
                    f.device(), ", got ", weight.device());
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 2 && bias->size(0) == K && bias->size(1) == C + 1,
                      "proj_bias must have shape (K, C+1) = (", K, ", ", C + 1, "), got ",
                      bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == weight.scalar_type(),
                     "proj_bias must have proj_weight's dtype ", weight.scalar_type(), ", got ",
                     bias->scalar_type());
    TORCH_CHECK_VALUE(bias->device() == f.device(), "proj_bias must be on class_feats' device ",
                      f.device(), ", got ", bias->device());
  }
}

inline void check_grad(const std::optional<at::Tensor>& grad, const at::Tensor& x,
                       at::IntArrayRef shape, const char* name) {
  if (!grad.has_value()) return;
  TORCH_CHECK_VALUE(grad->sizes() == shape, name, " must have shape ", shape, ", got ",
                    grad->sizes());
  check_same(*grad, x, name);
}

// class_pool_backward's optional dynamic-classifier term: grad_logits
// (B, K', H, W) and classifier_weight (B, K', C), both or neither.
inline void check_classifier_term(const std::optional<at::Tensor>& grad_logits,
                                  const std::optional<at::Tensor>& classifier_weight,
                                  const at::Tensor& x) {
  TORCH_CHECK_VALUE(grad_logits.has_value() == classifier_weight.has_value(),
                    "grad_logits and classifier_weight must be given together");
  if (!grad_logits.has_value()) return;
  TORCH_CHECK_VALUE(classifier_weight->dim() == 3 && classifier_weight->size(0) == x.size(0) &&
                        classifier_weight->size(2) == x.size(1),
                    "classifier_weight must have shape (", x.size(0), ", K, ", x.size(1), "), got ",
                    classifier_weight->sizes());
  check_same(*classifier_weight, x, "classifier_weight");
  check_grad(grad_logits, x, {x.size(0), classifier_weight->size(1), x.size(2), x.size(3)},
             "grad_logits");
}

}  // namespace condnet
